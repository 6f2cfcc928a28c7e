"""Runbook extractor: a runbook's markdown -> the steps a rehearsal runs, with what each expects.

Pure (text in, data out; no I/O, no processes), so the grammar is unit-tested on its own
(tests/unit/test_runbook_extractor.py) and the rehearsal (tests/integration/test_runbooks.py)
only runs what this module hands it.

The convention, as docs/runbooks/README.md tells runbook authors:

* A fenced block whose info string is ``sh`` is a **command step**: it is rehearsed. It must be
  preceded by an ``expect`` directive; ``needs`` is optional.
* A fenced block of any other language (``yaml``, ``text``, ``json``, ...) is not run. Preceded
  by a ``file`` directive, its text is written to that file of the runbook's working directory
  at that point of the runbook (a **file step**): a scenario's simulated fleet, a captured log.
* ``bash``, ``shell``, ``console`` and ``zsh`` blocks are refused: a command must be ``sh``
  (rehearsed) and an output ``text`` (not run), so nothing that looks runnable escapes the
  rehearsal.
* A directive is an HTML comment ``<!-- KEY: VALUE -->`` (one line, or several) standing right
  before the fence it belongs to: only blank lines and other directives may come between.
  Other comments are ordinary comments, but one that starts like a directive (a lower-case
  ``word:``) with an unknown word is an error: a mistyped directive never goes unnoticed.

Directives::

    <!-- file: fleet.yaml -->                 the next (non-sh) block is written to fleet.yaml
    <!-- needs: slurm, metrics-store -->      the next sh block needs these capabilities
    <!-- expect: exit=1; stdout~="gpu-003"; stderr!~="Traceback" -->

Expectation clauses, separated by ``;``:

    exit=N | exit=N|M        the block's exit status (required; alternatives with |)
    stdout~="TEXT"           stdout contains TEXT (a JSON string literal: \\" and \\n escapes)
    stdout!~="TEXT"          stdout does not contain TEXT
    stdout~=/REGEX/          stdout matches REGEX (Python re, MULTILINE)     also !~=/REGEX/
    stderr~=... stderr!~=... the same on stderr
    file(NAME)~="TEXT"       the file NAME (relative to the working directory) exists and
                             contains TEXT; file(NAME)!~="TEXT": exists and does not
    json.PATH=VALUE          stdout is JSON and the value at PATH equals VALUE (a JSON literal);
    json(NAME).PATH=VALUE    the same for the JSON file NAME. PATH: keys and list indexes
                             separated by dots (summary.failed, bad_links.0.device)

A command step runs as one bash script with ``set -euo pipefail``: every command but the last
must succeed (a failure earlier in the block is reported as such), and the block's exit status
is its last command's. Commands are one per line (a line ending in ``\\`` continues); heredocs
are refused (write the file with a ``file`` directive instead).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

#: capabilities a step may need; the rehearsal maps each to a provider (CAPABILITIES there)
KNOWN_CAPABILITIES = ("slurm", "metrics-store", "ssh-nodes")
#: fence languages refused in runbooks (see the module docstring)
REFUSED_LANGS = ("bash", "shell", "console", "zsh", "shell-session")
DIRECTIVES = ("expect", "needs", "file")


class RunbookError(ValueError):
    """The runbook breaks the convention; the message names the line."""


@dataclass(frozen=True)
class Clause:
    """One expectation: ``target`` is stdout, stderr, file:NAME, json or json:NAME."""

    target: str
    op: str                    # "~" contains/matches, "!~" does not, "=" json equals
    text: str | None = None    # substring (op ~ / !~)
    regex: str | None = None   # regex (op ~ / !~)
    path: tuple[str | int, ...] = ()
    value: Any = None          # json equals
    source: str = ""


@dataclass(frozen=True)
class Expectation:
    exits: tuple[int, ...]
    clauses: tuple[Clause, ...] = ()
    source: str = ""

    def verify(self, rc: int, stdout: str, stderr: str,
               read_file: Callable[[str], str | None] = lambda name: None) -> list[str]:
        """What does not hold, one line each (empty: all holds). ``read_file(name)`` returns the
        text of a file of the working directory, or None when there is no such file."""
        problems: list[str] = []
        if rc not in self.exits:
            want = " or ".join(str(e) for e in self.exits)
            problems.append(f"exit {rc}, expected {want}")
        for c in self.clauses:
            problem = _check(c, stdout, stderr, read_file)
            if problem:
                problems.append(f"{c.source}: {problem}")
        return problems


@dataclass(frozen=True)
class Step:
    kind: str                  # "run" or "file"
    line: int                  # 1-based line of the opening fence
    code: str                  # the block's text (ends with a newline unless empty)
    lang: str
    heading: str = ""          # the nearest heading above, for messages
    expect: Expectation | None = None
    needs: tuple[str, ...] = ()
    path: str | None = None    # file steps: where the text goes
    prose_after: str = ""      # the text after the block, up to the next block or heading

    @property
    def where(self) -> str:
        head = f" ({self.heading})" if self.heading else ""
        return f"line {self.line}{head}"


@dataclass(frozen=True)
class Runbook:
    title: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def commands(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "run"]

    @property
    def files(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "file"]

    @property
    def needs(self) -> set[str]:
        return {n for s in self.steps for n in s.needs}


# ----------------------------------------------------------------------------- parsing
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_DIRECTIVE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_-]*)\s*:(.*)$", re.S)
_HEREDOC = re.compile(r"(?<!<)<<-?\s*['\"]?[A-Za-z_][A-Za-z0-9_]*")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]*$")


def parse(text: str) -> Runbook:
    """The runbook's steps in document order. Raises RunbookError naming the line."""
    lines = text.splitlines()
    title = ""
    heading = ""
    steps: list[Step] = []
    pending: list[tuple[int, str, str]] = []   # (line, key, value) waiting for their fence
    i = 0
    n = len(lines)
    prose_target: int | None = None            # index in steps collecting prose_after
    prose: list[str] = []

    def flush_prose() -> None:
        nonlocal prose_target, prose
        if prose_target is not None:
            s = steps[prose_target]
            steps[prose_target] = replace(s, prose_after="\n".join(prose).strip())
        prose_target, prose = None, []

    while i < n:
        line = lines[i]
        lineno = i + 1
        m = _FENCE.match(line)
        if m:
            fence = m.group("fence")
            info = m.group("info").strip()
            lang = info.split()[0].lower() if info else ""
            body: list[str] = []
            j = i + 1
            closed = False
            while j < n:
                close = lines[j].strip()
                if close.startswith(fence[0] * len(fence)) and set(close) <= {fence[0]}:
                    closed = True
                    break
                body.append(lines[j])
                j += 1
            if not closed:
                raise RunbookError(f"line {lineno}: code block never closed")
            code = "\n".join(body) + ("\n" if body else "")
            flush_prose()
            step = _make_step(lineno, lang, code, heading, pending)
            pending = []
            if step is not None:
                steps.append(step)
                prose_target = len(steps) - 1 if step.kind == "run" else None
            i = j + 1
            continue
        stripped = line.strip()
        if stripped.startswith("<!--"):
            j = i
            chunk = [line]
            while "-->" not in lines[j] and j + 1 < n:
                j += 1
                chunk.append(lines[j])
            whole = "\n".join(chunk).strip()
            if "-->" not in whole:
                raise RunbookError(f"line {lineno}: HTML comment never closed")
            inner = whole[4:whole.index("-->")].strip()
            after = whole[whole.index("-->") + 3:].strip()
            d = _DIRECTIVE.match(inner)
            if d and d.group(1).lower() in DIRECTIVES:
                if after:
                    raise RunbookError(f"line {lineno}: text after a directive on its line")
                pending.append((lineno, d.group(1).lower(),
                                re.sub(r"\s*\n\s*", " ", d.group(2).strip())))
            elif d and re.fullmatch(r"[a-z][a-z-]*", d.group(1)):
                raise RunbookError(f"line {lineno}: unknown directive {d.group(1)!r} "
                                   f"(known: {', '.join(DIRECTIVES)})")
            i = j + 1
            continue
        if stripped and pending:
            first = pending[0][0]
            raise RunbookError(f"line {first}: directive not followed by a code block "
                               f"(text on line {lineno} comes first)")
        h = _HEADING.match(line)
        if h:
            flush_prose()
            heading = h.group(1)
            if not title and line.startswith("# "):
                title = heading
        elif prose_target is not None:
            prose.append(line)
        i += 1
    flush_prose()
    if pending:
        raise RunbookError(f"line {pending[0][0]}: directive at the end, with no code block")
    return Runbook(title=title, steps=tuple(steps))


def _make_step(lineno: int, lang: str, code: str, heading: str,
               pending: Sequence[tuple[int, str, str]]) -> Step | None:
    keys = [k for _, k, _ in pending]
    for k in set(keys):
        if keys.count(k) > 1:
            raise RunbookError(f"line {lineno}: two {k!r} directives for one block")
    d = {k: (ln, v) for ln, k, v in pending}
    if lang in REFUSED_LANGS:
        raise RunbookError(f"line {lineno}: ```{lang} block: write commands as ```sh (rehearsed) "
                           "and output as ```text (not run)")
    if lang == "sh":
        if "file" in d:
            raise RunbookError(f"line {d['file'][0]}: a file directive belongs before a data "
                               "block, not a ```sh block")
        if "expect" not in d:
            raise RunbookError(f"line {lineno}: ```sh block without an <!-- expect: ... --> "
                               "directive before it")
        if _HEREDOC.search(code):
            raise RunbookError(f"line {lineno}: heredoc in a ```sh block: write the file with a "
                               "<!-- file: NAME --> block instead")
        if not code.strip():
            raise RunbookError(f"line {lineno}: empty ```sh block")
        needs: tuple[str, ...] = ()
        if "needs" in d:
            needs = parse_needs(d["needs"][1], d["needs"][0])
        return Step(kind="run", line=lineno, code=code, lang=lang, heading=heading,
                    expect=parse_expect(d["expect"][1], d["expect"][0]), needs=needs)
    if "expect" in d or "needs" in d:
        ln = d.get("expect", d.get("needs"))[0]  # type: ignore[index]
        raise RunbookError(f"line {ln}: expect/needs directive before a ```{lang or '(plain)'} "
                           "block: only ```sh blocks are run")
    if "file" in d:
        return Step(kind="file", line=lineno, code=code, lang=lang, heading=heading,
                    path=parse_file_name(d["file"][1], d["file"][0]))
    return None


def parse_file_name(value: str, lineno: int = 0) -> str:
    name = value.strip()
    parts = name.split("/")
    if (not name or not _FILE_NAME.match(name) or name.startswith("/")
            or any(p in ("", ".", "..") for p in parts)):
        raise RunbookError(f"line {lineno}: file name {name!r}: a relative path inside the "
                           "working directory (letters, digits, . _ - /; no '..')")
    return name


def parse_needs(value: str, lineno: int = 0) -> tuple[str, ...]:
    caps = tuple(c.strip() for c in value.split(",") if c.strip())
    if not caps:
        raise RunbookError(f"line {lineno}: needs: no capability named")
    for c in caps:
        if c not in KNOWN_CAPABILITIES:
            raise RunbookError(f"line {lineno}: needs: unknown capability {c!r} "
                               f"(known: {', '.join(KNOWN_CAPABILITIES)})")
    return caps


# ----------------------------------------------------------------------------- expectations
_EXIT = re.compile(r"^exit\s*=\s*(\d{1,3}(?:\s*\|\s*\d{1,3})*)$")
_TEXT = re.compile(r"^(stdout|stderr|file\(([^()]+)\))\s*(!?~)=\s*(.+)$", re.S)
_JSON = re.compile(r"^json(?:\(([^()]+)\))?((?:\.[A-Za-z0-9_-]+)+)\s*=\s*(.+)$", re.S)


def split_clauses(value: str) -> list[str]:
    """Split at ';' outside "strings" and /regexes/ (with backslash escapes)."""
    out: list[str] = []
    cur: list[str] = []
    quote: str | None = None
    esc = False
    for ch in value:
        if quote:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                quote = None
            continue
        if ch == ";":
            out.append("".join(cur).strip())
            cur = []
            continue
        if ch == '"' or (ch == "/" and "".join(cur).rstrip().endswith("=")):
            quote = ch
        cur.append(ch)
    if quote:
        raise RunbookError(f"unterminated {quote} in {value!r}")
    out.append("".join(cur).strip())
    return [c for c in out if c]


def parse_expect(value: str, lineno: int = 0) -> Expectation:
    try:
        return _parse_expect(value)
    except RunbookError as e:
        raise RunbookError(f"line {lineno}: expect: {e}") from None


def _parse_expect(value: str) -> Expectation:
    exits: tuple[int, ...] | None = None
    clauses: list[Clause] = []
    for raw in split_clauses(value):
        m = _EXIT.match(raw)
        if m:
            if exits is not None:
                raise RunbookError("exit given twice")
            exits = tuple(int(x) for x in m.group(1).split("|"))
            if any(e > 255 for e in exits):
                raise RunbookError(f"{raw}: an exit status is 0..255")
            continue
        m = _TEXT.match(raw)
        if m:
            target = "file:" + parse_file_name(m.group(2)) if m.group(2) else m.group(1)
            op, pat = m.group(3), m.group(4).strip()
            if pat.startswith('"'):
                clauses.append(Clause(target, op, text=_json_string(pat, raw), source=raw))
            elif pat.startswith("/") and pat.endswith("/") and len(pat) >= 3:
                rx = pat[1:-1].replace("\\/", "/")
                try:
                    re.compile(rx)
                except re.error as e:
                    raise RunbookError(f"{raw}: bad regex: {e}") from None
                clauses.append(Clause(target, op, regex=rx, source=raw))
            else:
                raise RunbookError(f'{raw}: the pattern is a "string" or a /regex/')
            continue
        m = _JSON.match(raw)
        if m:
            name = parse_file_name(m.group(1)) if m.group(1) else None
            path = tuple(int(p) if p.isdigit() else p for p in m.group(2).strip(".").split("."))
            try:
                val = json.loads(m.group(3))
            except ValueError:
                raise RunbookError(f"{raw}: the value is a JSON literal (strings in quotes)") from None
            clauses.append(Clause("json" + (f":{name}" if name else ""), "=", path=path, value=val,
                                  source=raw))
            continue
        raise RunbookError(f"cannot read clause {raw!r} (exit=N, stdout~=\"…\", stderr!~=\"…\", "
                           "file(NAME)~=\"…\", json.PATH=VALUE)")
    if exits is None:
        raise RunbookError("no exit=N clause")
    return Expectation(exits=exits, clauses=tuple(clauses), source=value)


def _json_string(pat: str, raw: str) -> str:
    try:
        s = json.loads(pat)
    except ValueError:
        raise RunbookError(f"{raw}: bad string literal") from None
    if not isinstance(s, str) or not s:
        raise RunbookError(f"{raw}: bad string literal")
    return s


_MISSING = object()


def json_at(doc: Any, path: Sequence[str | int]) -> Any:
    cur = doc
    for p in path:
        if isinstance(cur, list) and isinstance(p, int) and -len(cur) <= p < len(cur):
            cur = cur[p]
        elif isinstance(cur, dict) and str(p) in cur:
            cur = cur[str(p)]
        else:
            return _MISSING
    return cur


def _check(c: Clause, stdout: str, stderr: str,
           read_file: Callable[[str], str | None]) -> str | None:
    if c.target in ("stdout", "stderr"):
        text: str | None = stdout if c.target == "stdout" else stderr
    elif c.target.startswith("file:"):
        text = read_file(c.target[5:])
        if text is None:
            return "no such file"
    else:  # json
        name = c.target[5:] if c.target.startswith("json:") else None
        raw = stdout if name is None else read_file(name)
        if raw is None:
            return "no such file"
        try:
            doc = json.loads(raw)
        except ValueError as e:
            return f"not JSON ({e})"
        got = json_at(doc, c.path)
        if got is _MISSING:
            return "no such path"
        return None if got == c.value else f"got {json.dumps(got)[:200]}"
    assert text is not None
    if c.regex is not None:
        found = re.search(c.regex, text, re.M) is not None
    else:
        found = (c.text or "") in text
    if c.op == "~" and not found:
        return "not found"
    if c.op == "!~" and found:
        return "found"
    return None


# ----------------------------------------------------------------------------- commands
def last_command_start(code: str) -> int:
    """1-based line where the last command of a block starts: commands are lines, a line
    ending in a backslash continues on the next; blank lines and # comments are not commands."""
    start = 0
    continuing = False
    for idx, line in enumerate(code.splitlines(), 1):
        s = line.strip()
        if not continuing and (not s or s.startswith("#")):
            continue
        if not continuing:
            start = idx
        continuing = line.rstrip().endswith("\\")
    return start


def script(step: Step, errline_file: str) -> str:
    """The bash script a command step runs as: strict mode, and an ERR trap that writes the
    line of a failing command to ``errline_file`` (so a failure before the last command is told
    apart). Line k of the block is line k + 1 of the script."""
    import shlex
    q = shlex.quote(errline_file)
    return f"set -euo pipefail; trap 'echo \"$LINENO\" > {q}' ERR\n{step.code}"


def earlier_failure(step: Step, errline: int | None) -> int | None:
    """The block line of a failing command before the last one, from the ERR trap's script
    line, or None when the failure (if any) was the last command's."""
    if errline is None:
        return None
    block_line = errline - 1
    return block_line if block_line < last_command_start(step.code) else None


# ----------------------------------------------------------------------------- lint
_EXIT_WORDS = re.compile(r"\bexit(?:s|ing)?(?:\s+code)?\s+((?:\d+)(?:(?:,\s*|\s+or\s+)\d+)*)", re.I)


def lint(book: Runbook) -> list[str]:
    """Convention checks beyond parsing: every command step's exit codes are said in the prose
    right after its block (``exits 1``, ``exit 0 or 3``), so a reader sees what the rehearsal
    checks."""
    problems: list[str] = []
    if not book.title:
        problems.append("no '# title' heading")
    if not book.commands:
        problems.append("no ```sh command block")
    for s in book.commands:
        assert s.expect is not None
        said: set[int] = set()
        for m in _EXIT_WORDS.finditer(s.prose_after):
            said.update(int(x) for x in re.findall(r"\d+", m.group(1)))
        missing = [e for e in s.expect.exits if e not in said]
        if missing:
            problems.append(f"{s.where}: the prose after the block does not say "
                            f"'exits {' or '.join(map(str, missing))}'")
    return problems
