"""Slurm hostlist expressions: expand and fold with Slurm's semantics.

The reference is Slurm 22.05 (Debian 12), checked name for name against ``scontrol``:

* :func:`expand` is ``scontrol show hostnames EXPR``: names come out in the order written,
  duplicates are kept, zero padding comes from the range's lower bound (``n[01-3]`` ->
  ``n01 n02 n03``; ``n[8-10]`` -> ``n8 n9 n10``). Several bracket groups give a cartesian
  product in Slurm's own order: the last group varies fastest, then the first, second, ...
  group (``a[1-2]b[1-2]c[1-2]`` -> ``a1b1c1 a1b1c2 a2b1c1 a2b1c2 a1b2c1 ...``).
* :func:`fold` is ``scontrol show hostlistsorted A,B,C`` (``sort=False``: ``scontrol show
  hostlist``): names sorted the way Slurm sorts them, runs folded into ``prefix[lo-hi,...]``
  by the prefix before the *last* run of digits, widths kept; duplicates are kept (Slurm
  does not remove them; pass ``unique=True`` to drop them first).

Where Slurm accepts nonsense (``n[1-2`` gives ``n]``, ``n[ 1-2]`` gives ``n01``, numbers past
2**31 get lost when sorting), :class:`~clusterkit.errors.HostlistError` is raised instead;
docs/commands/hosts.md lists every such case. Names are plain strings, never evaluated.
Parsing is one linear scan (no regular expressions, no recursion on input size).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cmp_to_key
from itertools import product

from clusterkit.errors import HostlistError

__all__ = ["MAX_NAMES", "expand", "fold", "natural_key"]

#: An expression that would give more names than this is refused.
MAX_NAMES = 1_000_000
#: Slurm's limits (``MAX_RANGE``, ``MAX_RANGES``, ``MAX_PREFIX_CNT`` in hostlist.c, 22.05):
#: names in one ``lo-hi`` range, ranges in one bracket group, and names made by a bracket
#: group that is not the last one of its hostname.
MAX_RANGE = 65536
MAX_RANGES = 65536
MAX_PREFIX_COUNT = 65536
#: Longest hostname accepted (DNS names are at most 253 characters).
MAX_NAME_LEN = 255
#: Largest number in a hostname or range. Slurm compares numbers through a C ``int``:
#: ``scontrol show hostlistsorted x1,x3000000000,x2`` prints ``x[3000000000]``.
MAX_NUMBER = 2**31 - 1

_SEPARATORS = frozenset(", \t")  # Slurm: hostlist_create(str) splits on "\t, "
_DIGITS = frozenset("0123456789")
_ULONG_MAX = 2**64 - 1
#: Steps allowed to Slurm's duplicate-splitting step of fold() (a second or two).
_COALESCE_BUDGET = 2_000_000


# --------------------------------------------------------------------------- errors
def _show(text: str, limit: int = 80) -> str:
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def _bad(expr: str, why: str) -> HostlistError:
    return HostlistError(f"invalid hostlist {_show(expr)}: {why}")


def _is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


# --------------------------------------------------------------------------- expand
def expand(expr: str, *, unique: bool = False) -> list[str]:
    """Expand a hostlist expression into hostnames, as ``scontrol show hostnames`` does.

    ``expand("gpu-[001-003,007],login1")`` -> ``["gpu-001", "gpu-002", "gpu-003",
    "gpu-007", "login1"]``. Items are separated by commas, spaces or tabs; order and
    duplicates are kept unless ``unique=True`` (first occurrence wins).

    Raises HostlistError for anything malformed, and for more than :data:`MAX_NAMES` names.
    """
    if not isinstance(expr, str):
        raise HostlistError(f"hostlist expression must be a string, not {type(expr).__name__}")
    if not expr.strip(" \t,"):
        if expr == "":
            raise HostlistError("empty hostlist expression")
        raise _bad(expr, "no hostnames in it")
    tokens = [_parse_token(expr, tok) for tok in _split(expr)]
    total = 0
    for t in tokens:
        total += t.count
        if total > MAX_NAMES:
            raise _bad(expr, f"expands to more than {MAX_NAMES:,} names")
    names: list[str] = []
    for t in tokens:
        names.extend(t.names())
    if unique:
        names = list(dict.fromkeys(names))
    return names


def _split(expr: str) -> Iterator[str]:
    """Split on separators outside brackets; brackets must pair up and not nest."""
    start = -1
    open_at = -1
    for i, ch in enumerate(expr):
        if ch == "[":
            if open_at >= 0:
                raise _bad(expr, f"nested '[' at position {i + 1}")
            open_at = i
            if start < 0:
                start = i
        elif ch == "]":
            if open_at < 0:
                raise _bad(expr, f"']' without '[' at position {i + 1}")
            open_at = -1
        elif ch in _SEPARATORS and open_at < 0:
            if start >= 0:
                yield expr[start:i]
                start = -1
        elif _is_control(ch):
            raise _bad(expr, f"control character {ch!r} at position {i + 1}")
        elif start < 0:
            start = i
    if open_at >= 0:
        raise _bad(expr, f"'[' at position {open_at + 1} is never closed")
    if start >= 0:
        yield expr[start:]


class _Token:
    """One item of an expression: literal texts around bracket groups."""

    __slots__ = ("texts", "groups", "count")

    def __init__(self, texts: list[str], groups: list[list[tuple[int, int, int]]]) -> None:
        self.texts = texts  # len(groups) + 1 pieces, the last one always ""
        self.groups = groups  # each: [(lo, hi, width), ...]
        n = 1
        for g in groups:
            n *= sum(hi - lo + 1 for lo, hi, _ in g)
        self.count = n

    def names(self) -> Iterator[str]:
        if not self.groups:
            yield self.texts[0]
            return
        values = [[f"{v:0{w}d}" for lo, hi, w in g for v in range(lo, hi + 1)] for g in self.groups]
        texts = self.texts
        if len(values) == 1:
            head = texts[0]
            for v in values[0]:
                yield head + v
            return
        # Slurm peels bracket groups off the prefix from the right and recurses: the
        # second-to-last group is the outermost loop, then the one before it, ..., then
        # the first; the last group is the innermost loop.
        k = len(values) - 1
        outer = [values[i] for i in range(k - 1, -1, -1)]
        last = values[k]
        for combo in product(*outer):
            parts = [texts[0]]
            for i in range(k):
                parts.append(combo[k - 1 - i])
                parts.append(texts[i + 1])
            head = "".join(parts)
            for v in last:
                yield head + v


def _parse_token(expr: str, tok: str) -> _Token:
    if "[" not in tok:
        _check_name(tok, where=expr)
        return _Token([tok], [])
    texts: list[str] = []
    groups: list[list[tuple[int, int, int]]] = []
    pos = 0
    while True:
        lb = tok.find("[", pos)
        if lb < 0:
            break
        rb = tok.find("]", lb)  # _split guarantees it exists and nothing nests
        texts.append(tok[pos:lb])
        groups.append(_parse_ranges(expr, tok, tok[lb + 1 : rb]))
        pos = rb + 1
    tail = tok[pos:]
    if tail:
        raise _bad(expr, f"{tail!r} follows the last ']' in {_show(tok)}; Slurm allows nothing there")
    texts.append("")
    for g in groups[:-1]:
        if sum(hi - lo + 1 for lo, hi, _ in g) > MAX_PREFIX_COUNT:
            raise _bad(
                expr,
                f"a bracket group before the last one in {_show(tok)} has more than "
                f"{MAX_PREFIX_COUNT} values (Slurm's limit)",
            )
    lead = _split_number(texts[-2])[1]  # digits written just before the last group
    if lead and max(int(f"{lead}{hi:0{w}d}") for _, hi, w in groups[-1]) > MAX_NUMBER:
        raise _bad(expr, f"names from {_show(tok)} end in a number above {MAX_NUMBER}")
    longest = sum(len(t) for t in texts) + sum(
        max(max(w, len(str(hi))) for _, hi, w in g) for g in groups
    )
    if longest > MAX_NAME_LEN:
        raise _bad(expr, f"names from {_show(tok)} are longer than {MAX_NAME_LEN} characters")
    return _Token(texts, groups)


def _parse_ranges(expr: str, tok: str, body: str) -> list[tuple[int, int, int]]:
    if body == "":
        raise _bad(expr, f"empty brackets in {_show(tok)}")
    out: list[tuple[int, int, int]] = []
    for piece in body.split(","):
        if len(out) >= MAX_RANGES:
            raise _bad(expr, f"more than {MAX_RANGES} ranges in one bracket group (Slurm's limit)")
        lo_s, dash, hi_s = piece.partition("-")
        if not dash:
            hi_s = lo_s
        if piece == "":
            raise _bad(expr, f"empty range in {_show(tok)}")
        if not _all_digits(lo_s) or not _all_digits(hi_s):
            raise _bad(expr, f"{piece!r} in {_show(tok)} is not NUMBER or NUMBER-NUMBER")
        lo, hi = int(lo_s), int(hi_s)
        if max(lo, hi) > MAX_NUMBER:
            raise _bad(expr, f"number {max(lo, hi)} in {_show(tok)} is above {MAX_NUMBER}")
        if lo > hi:
            raise _bad(expr, f"range {piece!r} in {_show(tok)} runs backwards")
        if hi - lo + 1 > MAX_RANGE:
            raise _bad(
                expr, f"range {piece!r} has {hi - lo + 1:,} names; Slurm allows {MAX_RANGE} per range"
            )
        out.append((lo, hi, len(lo_s)))  # Slurm: the width is the lower bound's length
    return out


def _all_digits(s: str) -> bool:
    return s != "" and all(c in _DIGITS for c in s)


def _split_number(name: str) -> tuple[str, str]:
    """``gpu-010`` -> (``gpu-``, ``010``); no trailing digits -> (name, "")."""
    i = len(name)
    while i > 0 and name[i - 1] in _DIGITS:
        i -= 1
    return name[:i], name[i:]


def _check_name(name: str, *, where: str | None = None) -> None:
    def bad(why: str) -> HostlistError:
        if where is None:
            return HostlistError(f"invalid hostname {_show(name)}: {why}")
        return _bad(where, why)

    if name == "":
        raise bad("empty hostname")
    if len(name) > MAX_NAME_LEN:
        raise bad(f"hostname longer than {MAX_NAME_LEN} characters")
    for ch in name:
        if ch in _SEPARATORS or ch in "[]" or _is_control(ch):
            raise bad(f"hostname contains {ch!r}")
    digits = _split_number(name)[1]
    if digits and int(digits) > MAX_NUMBER:
        raise bad(f"number {int(digits)} in {_show(name)} is above {MAX_NUMBER}")


# --------------------------------------------------------------------------- fold
class _Range:
    """Slurm's hostrange: ``prefix`` + numbers lo..hi printed with ``width`` digits."""

    __slots__ = ("prefix", "key", "lo", "hi", "width", "single")

    def __init__(self, prefix: str, key: bytes, lo: int, hi: int, width: int, single: bool) -> None:
        self.prefix = prefix
        self.key = key  # prefix as UTF-8, what Slurm's C code compares
        self.lo = lo
        self.hi = hi
        self.width = width
        self.single = single

    def copy(self) -> _Range:
        return _Range(self.prefix, self.key, self.lo, self.hi, self.width, self.single)


def fold(names: Iterable[str], *, sort: bool = True, unique: bool = False) -> str:
    """Fold hostnames into one hostlist expression, as Slurm does.

    ``sort=True`` (default) gives ``scontrol show hostlistsorted``: ``["gpu-010",
    "gpu-001", "gpu-002"]`` -> ``"gpu-[001-002,010]"``. ``sort=False`` gives ``scontrol
    show hostlist``: only neighbours are folded (``"gpu-[010,001-002]"``). Duplicates stay
    (``n[1,1]``) unless ``unique=True``. ``expand(fold(names))`` gives the names back,
    sorted (when ``sort``) with the same multiplicity. An empty input folds to ``""``.

    Raises HostlistError for a name that is not a plain hostname (brackets, separators,
    control characters, too long, a number above :data:`MAX_NUMBER`).
    """
    if isinstance(names, str):
        raise HostlistError("fold() takes a list of hostnames, not one string")
    items = list(names)
    if len(items) > MAX_NAMES:
        raise HostlistError(f"more than {MAX_NAMES:,} names to fold")
    if unique:
        items = list(dict.fromkeys(items))
    cmp = _Comparator()
    ranges: list[_Range] = []
    for name in items:
        if not isinstance(name, str):
            raise HostlistError(f"hostnames must be strings, not {type(name).__name__}")
        _check_name(name)
        prefix, digits = _split_number(name)
        if digits:
            n = int(digits)
            hr = _Range(prefix, cmp.encode(prefix), n, n, len(digits), False)
        else:
            hr = _Range(name, cmp.encode(name), 0, 0, 0, True)
        _push(ranges, hr, cmp)
    if sort and len(ranges) > 1:
        key = cmp.sort_key(ranges)
        ranges = _msort(ranges, cmp.range_cmp) if key is None else sorted(ranges, key=key)
        ranges = _collapse(_coalesce(ranges, cmp), cmp)
    return _ranged_string(ranges, cmp)


def _push(ranges: list[_Range], hr: _Range, cmp: _Comparator) -> None:
    """hostlist_push_range: extend the last range when hr continues it."""
    if ranges:
        tail = ranges[-1]
        if tail.hi == hr.lo - 1 and cmp.prefix_cmp(tail, hr) == 0 and _width_combine(tail, hr):
            tail.hi = hr.hi
            return
    ranges.append(hr)


def _zero_padded(num: int, width: int) -> int:
    n = len(str(num))
    return width - n if width > n else 0


def _width_combine(h0: _Range, h1: _Range) -> bool:
    """_width_equiv: can both be printed with one width? Adjusts a width when they can."""
    if h0.width == h1.width:
        return True
    npad = _zero_padded(h0.lo, h0.width)
    nmpad = _zero_padded(h0.lo, h1.width)
    mpad = _zero_padded(h1.lo, h1.width)
    mnpad = _zero_padded(h1.lo, h0.width)
    if npad != nmpad and mpad != mnpad:
        return False
    if npad != nmpad:
        h1.width = h0.width
    else:
        h0.width = h1.width
    return True


def _c_int(x: int) -> int:
    """An integer converted to a 32-bit C int, as Slurm's comparator returns it."""
    return ((x + 2**31) % 2**32) - 2**31


class _Comparator:
    """Slurm's hostrange ordering: strnatcmp on prefixes, then number and width."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._memo: dict[tuple[bytes, bytes], int] = {}

    def encode(self, prefix: str) -> bytes:
        key = self._keys.get(prefix)
        if key is None:
            try:  # names from argv carry undecodable bytes as surrogate escapes
                key = prefix.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                key = prefix.encode("utf-8", "surrogatepass")
            self._keys[prefix] = key
        return key

    def strnatcmp(self, a: bytes, b: bytes) -> int:
        if a == b:
            return 0
        r = self._memo.get((a, b))
        if r is None:
            r = self._memo[(a, b)] = _strnatcmp(a, b)
        return r

    def prefix_cmp(self, h1: _Range, h2: _Range) -> int:
        r = self.strnatcmp(h1.key, h2.key)
        return r if r else int(h2.single) - int(h1.single)

    def range_cmp(self, h1: _Range, h2: _Range) -> int:
        r = self.prefix_cmp(h1, h2)
        if r == 0:
            r = _c_int(h1.lo - h2.lo) if _width_combine(h1, h2) else h1.width - h2.width
        return r

    def sort_key(self, ranges: list[_Range]):  # noqa: ANN201 - a key function or None
        """A key that sorts exactly as :meth:`range_cmp` does, when one provably exists.

        Within one prefix the order is a plain key (names without a number first, then by
        printed width, then by number; numbers stay below 2**31 so Slurm's int subtraction
        cannot wrap). Prefixes are ranked by strnatcmp: as signed bytes when at most one
        prefix has a digit (no digit runs are ever compared then), else by sorting the few
        distinct prefixes and checking every pair. Otherwise None: replay glibc's merge
        sort with the comparator itself.
        """
        keys = {hr.key for hr in ranges}
        # All values are bytes or all are ints (one branch), so ranks always compare.
        rank: dict[bytes, bytes | int]
        with_digits = [k for k in keys if any(0x30 <= c <= 0x39 for c in k)]
        if len(with_digits) <= 1:
            rank = {k: bytes(c ^ 0x80 for c in k) + b"\x80" for k in keys}
        elif len(keys) <= 64:
            order = sorted(keys, key=cmp_to_key(self.strnatcmp))
            for i, a in enumerate(order):
                for b in order[i + 1 :]:
                    if self.strnatcmp(a, b) != -1 or self.strnatcmp(b, a) != 1:
                        return None
            rank = {k: i for i, k in enumerate(order)}
        else:
            return None

        def key(hr: _Range) -> tuple:
            if hr.single:
                return (rank[hr.key], 0, 0, 0)
            return (rank[hr.key], 1, max(hr.width, len(str(hr.lo))), hr.lo)

        return key

    def within_range(self, h1: _Range, h2: _Range | None) -> bool:
        if h2 is None or self.prefix_cmp(h1, h2) != 0:
            return False
        return not (h1.single or h2.single)


def _isdigit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def _isspace(c: int) -> bool:
    return c == 0x20 or 0x09 <= c <= 0x0D


def _strnatcmp(a: bytes, b: bytes) -> int:
    """Martin Pool's natural comparison as Slurm uses it: C locale, signed ``char``."""
    la, lb = len(a), len(b)
    ai = bi = 0
    while True:
        ca = a[ai] if ai < la else 0
        cb = b[bi] if bi < lb else 0
        while _isspace(ca):
            ai += 1
            ca = a[ai] if ai < la else 0
        while _isspace(cb):
            bi += 1
            cb = b[bi] if bi < lb else 0
        if _isdigit(ca) and _isdigit(cb):
            if ca == 0x30 or cb == 0x30:
                r = _compare_left(a, ai, b, bi)
            else:
                r = _compare_right(a, ai, b, bi)
            if r:
                return r
        if ca == 0 and cb == 0:
            return 0
        sa = ca - 256 if ca >= 128 else ca
        sb = cb - 256 if cb >= 128 else cb
        if sa < sb:
            return -1
        if sa > sb:
            return 1
        ai += 1
        bi += 1


def _compare_right(a: bytes, ai: int, b: bytes, bi: int) -> int:
    """Right-aligned digit runs: the longer run wins, else the first difference."""
    bias = 0
    la, lb = len(a), len(b)
    while True:
        ca = a[ai] if ai < la else 0
        cb = b[bi] if bi < lb else 0
        da, db = _isdigit(ca), _isdigit(cb)
        if not da and not db:
            return bias
        if not da:
            return -1
        if not db:
            return 1
        if ca < cb:
            bias = bias or -1
        elif ca > cb:
            bias = bias or 1
        ai += 1
        bi += 1


def _compare_left(a: bytes, ai: int, b: bytes, bi: int) -> int:
    """Left-aligned digit runs (one starts with 0): the first difference wins."""
    la, lb = len(a), len(b)
    while True:
        ca = a[ai] if ai < la else 0
        cb = b[bi] if bi < lb else 0
        da, db = _isdigit(ca), _isdigit(cb)
        if not da and not db:
            return 0
        if not da:
            return -1
        if not db:
            return 1
        if ca < cb:
            return -1
        if ca > cb:
            return 1
        ai += 1
        bi += 1


def _msort(items: list[_Range], cmp) -> list[_Range]:  # noqa: ANN001 - a cmp function
    """glibc's qsort (a top-down merge sort, stable), the comparisons in the same order.

    Bottom-up over the same split points as the recursive version, so no recursion.
    """
    n = len(items)
    # The recursive split: n1 = n // 2 on the left. Build the tree of (start, length)
    # segments first, then merge children before parents (post-order).
    order: list[tuple[int, int]] = []
    stack = [(0, n, False)]
    while stack:
        start, length, visited = stack.pop()
        if length <= 1:
            continue
        if visited:
            order.append((start, length))
            continue
        n1 = length // 2
        stack.append((start, length, True))
        stack.append((start + n1, length - n1, False))
        stack.append((start, n1, False))
    a = list(items)
    for start, length in order:
        n1 = length // 2
        left = a[start : start + n1]
        right = a[start + n1 : start + length]
        out: list[_Range] = []
        i = j = 0
        nl, nr = len(left), len(right)
        while i < nl and j < nr:
            if cmp(left[i], right[j]) <= 0:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
        out.extend(left[i:])
        out.extend(right[j:])
        a[start : start + length] = out
    return a


def _intersect(h1: _Range, h2: _Range, cmp: _Comparator) -> _Range | None:
    if h1.single or h2.single:
        return None
    if h1.hi > h2.lo and cmp.prefix_cmp(h1, h2) == 0 and _width_combine(h1, h2):
        new = h1.copy()
        new.lo = h2.lo
        new.hi = h2.hi if h2.hi < h1.hi else h1.hi
        return new
    return None


def _empty(hr: _Range) -> bool:
    return hr.hi < hr.lo or hr.hi == _ULONG_MAX


def _coalesce(hl: list[_Range], cmp: _Comparator) -> list[_Range]:
    """hostlist_coalesce: split overlapping neighbours (duplicates) into single hosts.

    Slurm walks the pairs from the end; after a split it rescans from the end, where only
    the pairs from the split upwards can have changed (the others were checked and are
    untouched), so the scan resumes there. The list is a gap buffer (``left`` holds slots
    below the cursor, ``right`` the slots from it upwards, reversed) so that inserting
    at the cursor costs nothing. A step budget bounds the quadratic worst case.
    """
    left = hl
    right: list[_Range] = []
    if left:
        right.append(left.pop())
    budget = _COALESCE_BUDGET
    while left and right:  # the pair at the cursor: (left[-1], right[-1])
        budget -= 1
        new = _intersect(left[-1], right[-1], cmp)
        if new is None:
            right.append(left.pop())
            continue
        budget -= new.hi - new.lo + 1
        if budget < 0:
            raise HostlistError(
                "too many overlapping duplicate names to fold the way Slurm does "
                "(its algorithm is quadratic there); remove the duplicates first"
            )
        hprev, hnext = left[-1], right[-1]
        if new.hi < hprev.hi:
            hnext.hi = hprev.hi
        hprev.hi = new.lo
        hnext.lo = new.hi
        if _empty(hprev):
            right.pop()  # sic: Slurm deletes the slot after hprev (cannot happen once sorted)
        v = new.lo
        while v <= new.hi:  # inserted at the cursor, in order
            if v > hprev.hi:
                left.append(_Range(new.prefix, new.key, v, v, new.width, False))
            if v < hnext.lo:
                left.append(_Range(new.prefix, new.key, v, v, new.width, False))
            v += 1
        # Slurm resumes at the last slot; we resume at the pair above hnext's slot.
        if len(right) > 1:
            left.append(right.pop())
        elif not right and left:
            right.append(left.pop())
    left.extend(reversed(right))
    return left


def _collapse(hl: list[_Range], cmp: _Comparator) -> list[_Range]:
    """hostlist_collapse: join neighbours that continue each other (scanned from the end)."""
    if not hl:
        return hl
    out: list[_Range] = []
    cur = hl[-1]
    for k in range(len(hl) - 2, -1, -1):
        prev = hl[k]
        if prev.hi == cur.lo - 1 and cmp.prefix_cmp(prev, cur) == 0 and _width_combine(prev, cur):
            prev.hi = cur.hi
        else:
            out.append(cur)
        cur = prev
    out.append(cur)
    out.reverse()
    return out


def _numstr(hr: _Range) -> str:
    if hr.single:
        return ""
    w = hr.width
    if hr.lo < hr.hi:
        return f"{hr.lo:0{w}d}-{hr.hi:0{w}d}"
    return f"{hr.lo:0{w}d}"


def _ranged_string(hl: list[_Range], cmp: _Comparator) -> str:
    """hostlist_ranged_string: neighbours with one prefix share one bracket."""
    out: list[str] = []
    i, n = 0, len(hl)
    while i < n:
        first = hl[i]
        count = 1 if first.single else first.hi - first.lo + 1
        bracket = count > 1 or cmp.within_range(first, hl[i + 1] if i + 1 < n else None)
        parts = [_numstr(first)]
        i += 1
        while i < n and cmp.within_range(hl[i], hl[i - 1]):
            parts.append(_numstr(hl[i]))
            i += 1
        body = ",".join(parts)
        out.append(f"{first.prefix}[{body}]" if bracket else f"{first.prefix}{body}")
    return ",".join(out)


# --------------------------------------------------------------------------- sorting
_NUM_RUNS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders gpu-2 before gpu-10 and keeps text order otherwise."""
    return tuple((0, int(p), len(p)) if p.isdigit() else (1, p, 0) for p in _NUM_RUNS.split(name) if p)


def fold_display(names: Iterable[str]) -> str:
    """:func:`fold` for reports: never raises. Names that cannot be folded (a node name from an
    inventory may hold anything) are listed as they are, comma-separated."""
    names = list(names)
    try:
        return fold(names, unique=True)
    except HostlistError:
        return ",".join(names)
