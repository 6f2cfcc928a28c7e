"""nccl-tests (``all_reduce_perf`` and every other ``*_perf``): text and ``-J`` JSON output.

One :class:`NcclRun` per test found in the input: a log holding several tests back to back
(a script running ``all_reduce_perf``, then ``all_gather_perf``, ...) gives several runs.
Both table layouts are read:

* current: ``size count type redop root | time algbw busbw #wrong | time algbw busbw #wrong``
  where ``#wrong`` is an element count, or ``N/A`` where the test does not check (in-place
  alltoall / sendrecv);
* old (before nccl-tests 2.10 or so): no ``root`` column, and an ``error`` column holding the
  maximum numeric error as a float (``7e-07``) instead of a count.

A failed run (``Test NCCL failure ...``, ``Test CUDA failure ...``, ``Test failure
common.cu:NNN``, an init failure, a timeout) is not a parse error: its run carries the cause in
``error`` (and every failure line in ``failures``). ``NCCL WARN`` lines are kept in ``warnings``;
they become the ``error`` of a run only when that run did not finish.

Units: sizes in bytes, times in microseconds, bandwidths in GB/s (10^9 bytes/s, as printed).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from clusterkit.record import ConfigDict, Record

from clusterkit.errors import ParseError
from clusterkit.parsers.base import ParsedOutput, fail, split_lines, not_recognised

TOOL = "nccl-tests"


class _Model(Record):
    model_config = ConfigDict(extra="forbid")


class NcclResult(_Model):
    """One half (out-of-place or in-place) of a table row."""

    time_us: float | None = None
    algbw_gbps: float | None = None
    busbw_gbps: float | None = None
    wrong: int | None = None  # '#wrong' count; null for 'N/A' (not checked) and the old format
    max_error: float | None = None  # old format 'error' column (maximum numeric error)


class NcclRow(_Model):
    size_bytes: int
    count: int | None = None
    type: str | None = None
    redop: str | None = None
    root: int | None = None
    out_of_place: NcclResult | None = None
    in_place: NcclResult | None = None


class NcclDevice(_Model):
    """A '#  Rank  N Group  G Pid P on HOST device D [BUSID] NAME' line."""

    rank: int
    group: int | None = None
    pid: int | None = None
    host: str | None = None
    device: int | None = None
    busid: str | None = None
    name: str | None = None


class NcclConfig(_Model):
    """The '# nThread 1 nGpus 1 minBytes ... graph: 0' header line (or the JSON 'config')."""

    nthread: int | None = None
    ngpus: int | None = None
    min_bytes: int | None = None
    max_bytes: int | None = None
    step: int | None = None
    step_kind: str | None = None  # 'factor' or 'bytes'
    warmup_iters: int | None = None
    iters: int | None = None
    agg_iters: int | None = None
    validation: int | None = None
    graph: int | None = None
    unalign: int | None = None


class NcclRun(_Model):
    collective: str | None = None  # 'all_reduce', 'all_gather', ... (test name without '_perf')
    collective_inferred: bool = False  # true when guessed from the table (no name in the output)
    test: str | None = None  # 'all_reduce_perf' as the output names it
    nranks: int | None = None
    nccl_tests_version: str | None = None
    nccl_version: str | None = None
    config: NcclConfig | None = None
    devices: list[NcclDevice] = []
    max_bytes_reduced_to: int | None = None  # '# Reducing maxBytes to N due to memory limitation'
    rows: list[NcclRow] = []
    out_of_bounds: int | None = None
    out_of_bounds_ok: bool | None = None
    avg_busbw_gbps: float | None = None
    avg_busbw_ok: bool | None = None  # only with '-c/--check' thresholds: 'OK' / 'FAILED'
    wrong_total: int | None = None  # sum of '#wrong' over the table; null when not reported
    peak_busbw_gbps: float | None = None  # best out-of-place or in-place busbw of the table
    complete: bool = False  # the footer ('# Avg bus bandwidth') was reached
    error: str | None = None
    failures: list[str] = []
    warnings: list[str] = []
    ok: bool = False  # complete, no error, no wrong elements, no out-of-bounds values


class NcclTestsOutput(ParsedOutput):
    format: Literal["text", "json"] = "text"
    runs: list[NcclRun]

    def summary(self) -> str:
        lines = []
        for run in self.runs:
            name = run.collective or run.test or "unknown collective"
            ranks = f"{run.nranks} ranks" if run.nranks is not None else "ranks unknown"
            if run.rows:
                span = f"{_human_bytes(run.rows[0].size_bytes)}..{_human_bytes(run.rows[-1].size_bytes)}"
                sizes = f"{len(run.rows)} sizes {span}"
            else:
                sizes = "no data rows"
            parts = [f"{name} ({ranks}): {sizes}"]
            if run.avg_busbw_gbps is not None:
                parts.append(f"avg busbw {run.avg_busbw_gbps:g} GB/s")
            if run.peak_busbw_gbps is not None:
                parts.append(f"peak busbw {run.peak_busbw_gbps:g} GB/s")
            if run.wrong_total is not None:
                parts.append(f"#wrong {run.wrong_total}")
            verdict = "OK" if run.ok else f"NOT OK: {run.error}" if run.error else "NOT OK"
            lines.append(", ".join(parts) + f" - {verdict}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- utilities
_TYPE_SIZES = {
    "int8": 1, "uint8": 1, "char": 1, "f8e4m3": 1, "f8e5m2": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
    "half": 2, "float16": 2, "bfloat16": 2, "bf16": 2,
    "int32": 4, "uint32": 4, "int": 4, "float": 4, "float32": 4,
    "int64": 8, "uint64": 8, "double": 8, "float64": 8,
}


def _human_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


_INT_LIMIT = 1 << 64  # no count, size or id in this output is larger


def _int(tok: Any) -> int | None:
    if isinstance(tok, bool):
        return None
    if isinstance(tok, int):
        return tok if abs(tok) < _INT_LIMIT else None
    if isinstance(tok, float):
        return int(tok) if math.isfinite(tok) and abs(tok) < _INT_LIMIT else None
    if not isinstance(tok, str):
        return None
    s = tok.strip()
    if not s or len(s) > 40:
        return None
    try:
        value = int(s)
        return value if abs(value) < _INT_LIMIT else None
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and f == int(f) and abs(f) < _INT_LIMIT else None


def _float(tok: Any) -> float | None:
    if isinstance(tok, bool):
        return None
    if isinstance(tok, (int, float)):
        try:
            f = float(tok)
        except OverflowError:
            return None
    elif isinstance(tok, str):
        s = tok.strip()
        if not s or len(s) > 40:
            return None
        try:
            f = float(s)
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "ok", "yes", "1"):
            return True
        if low in ("false", "failed", "no", "0"):
            return False
    if isinstance(value, int):
        return bool(value)
    return None


def _nccl_version_from_code(code: int | None) -> str | None:
    """NCCL_VERSION_CODE -> 'X.Y.Z' (2.9 and later: X*10000+Y*100+Z; before: X*1000+Y*100+Z)."""
    if code is None or code <= 0:
        return None
    if code >= 20900:
        return f"{code // 10000}.{(code % 10000) // 100}.{code % 100}"
    return f"{code // 1000}.{(code % 1000) // 100}.{code % 100}"


def _test_to_collective(test: str | None) -> str | None:
    if not test:
        return None
    base = test.rsplit("/", 1)[-1]
    if base.endswith("_perf_mpi"):
        base = base[: -len("_perf_mpi")]
    elif base.endswith("_perf"):
        base = base[: -len("_perf")]
    else:
        return None
    return base or None


_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
               "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40,
               "TIB": 1 << 40}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]{0,3})\s*$")


def _size_bytes(value: Any) -> int | None:
    """A byte count: an int, or '32 MB' / '1.50 KB' / '8G' (nccl-tests uses 1024-based units)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _int(value)
    if not isinstance(value, str) or len(value) > 40:
        return None
    m = _SIZE_RE.match(value)
    if not m:
        return None
    scale = _SIZE_UNITS.get(m.group(2).upper())
    if scale is None:
        return None
    return _int(round(float(m.group(1)) * scale))


# --------------------------------------------------------------------------- run building
class _RunBuilder:
    def __init__(self) -> None:
        self.test: str | None = None
        self.nccl_tests_version: str | None = None
        self.nccl_version: str | None = None
        self.config: NcclConfig | None = None
        self.devices: list[NcclDevice] = []
        self.reduced: int | None = None
        self.columns: list[str] | None = None
        self.rows: list[NcclRow] = []
        self.oob: int | None = None
        self.oob_ok: bool | None = None
        self.avg: float | None = None
        self.avg_ok: bool | None = None
        self.avg_seen = False
        self.concluded = False
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.nranks_hint: int | None = None
        self.json_errors: list[str] = []

    @property
    def finished(self) -> bool:
        return self.avg_seen or self.concluded

    def build(self) -> NcclRun:
        rows = self.rows
        wrongs = [r.wrong for row in rows for r in (row.out_of_place, row.in_place)
                  if r is not None and r.wrong is not None]
        wrong_total = sum(wrongs) if wrongs else None
        busbws = [r.busbw_gbps for row in rows for r in (row.out_of_place, row.in_place)
                  if r is not None and r.busbw_gbps is not None]
        ranks = {d.rank for d in self.devices}
        nranks = len(ranks) if ranks else self.nranks_hint
        collective = _test_to_collective(self.test)
        inferred = False
        if collective is None and rows:
            collective = _infer_collective(rows, nranks)
            inferred = collective is not None
        complete = self.avg_seen
        error = _primary_failure(self.failures) or (self.json_errors[0] if self.json_errors else None)
        if error is None and not complete:
            if self.warnings:
                error = f"NCCL WARN {self.warnings[0]}"
            else:
                error = "incomplete output: the run ends before its '# Avg bus bandwidth' line"
        ok = (
            complete
            and error is None
            and not wrong_total
            and not self.oob
            and self.avg_ok is not False
        )
        return NcclRun(
            collective=collective,
            collective_inferred=inferred,
            test=self.test,
            nranks=nranks,
            nccl_tests_version=self.nccl_tests_version,
            nccl_version=self.nccl_version,
            config=self.config,
            devices=self.devices,
            max_bytes_reduced_to=self.reduced,
            rows=rows,
            out_of_bounds=self.oob,
            out_of_bounds_ok=self.oob_ok,
            avg_busbw_gbps=self.avg,
            avg_busbw_ok=self.avg_ok,
            wrong_total=wrong_total,
            peak_busbw_gbps=max(busbws) if busbws else None,
            complete=complete,
            error=error,
            failures=self.failures,
            warnings=self.warnings,
            ok=bool(ok),
        )


def _primary_failure(failures: list[str]) -> str | None:
    """The line that names the cause: the NCCL/CUDA failure, not the 'Test failure' call chain."""
    for line in failures:
        if "Test failure " not in line or "NCCL failure" in line or "CUDA failure" in line:
            return line
    return failures[0] if failures else None


def _infer_collective(rows: list[NcclRow], nranks: int | None) -> str | None:
    """Guess the collective from the table when the output does not name it (old format).

    Uses what each collective's table shows: redop ('none' for data movement), root (>= 0 for
    rooted collectives), bytes per element (size / count / type size: 1 for all_reduce-like,
    nranks for all_gather / reduce_scatter / alltoall), the busbw/algbw ratio (2(n-1)/n for
    all_reduce, 1 for sendrecv / broadcast / reduce) and whether in-place is checked.
    Returns None whenever the evidence is not clear.
    """
    sample = None
    for row in rows:
        r = row.out_of_place or row.in_place
        if r and r.algbw_gbps and r.busbw_gbps and r.algbw_gbps >= 0.1:
            sample = row
    if sample is None:
        return None
    r = sample.out_of_place or sample.in_place
    assert r is not None and r.algbw_gbps and r.busbw_gbps
    ratio = r.busbw_gbps / r.algbw_gbps
    tsize = _TYPE_SIZES.get((sample.type or "").lower())
    per_elem = None
    if tsize and sample.count:
        per_elem = sample.size_bytes / (sample.count * tsize)
    redop = (sample.redop or "").lower()
    rooted = sample.root is not None and sample.root >= 0
    inplace_checked = sample.in_place is not None and (
        sample.in_place.wrong is not None or sample.in_place.max_error is not None
    )
    if redop and redop != "none":
        if rooted:
            return "reduce" if abs(ratio - 1) < 0.05 else None
        if per_elem is not None and per_elem > 1.5:
            return "reduce_scatter"
        if ratio > 1.05:
            return "all_reduce"
        if abs(ratio - 1) < 0.02 and not inplace_checked:
            return "sendrecv"
        return None
    if redop == "none":
        if rooted:
            return "broadcast" if abs(ratio - 1) < 0.02 and per_elem is not None and per_elem < 1.5 else None
        if per_elem is not None and per_elem > 1.5:
            return "all_gather" if inplace_checked else "alltoall"
    return None


# --------------------------------------------------------------------------- text
_VERSION_RE = re.compile(
    r"^#\s*nccl-tests version\s+(\S+)(?:\s+nccl-headers=([0-9]{1,18}))?(?:\s+nccl-library=([0-9]{1,18}))?"
)
_START_RE = re.compile(r"^#\s*Collective test starting:\s*(\S+)")
_CONCLUDED_RE = re.compile(r"^#\s*Collective test concluded:\s*(\S+)")
_DEVICE_RE = re.compile(
    r"^#\s*Rank\s+([0-9]{1,18})(?:\s+Group\s+([0-9]{1,18}))?\s+Pid\s+([0-9]{1,18})"
    r"\s+on\s+(\S+)\s+device\s+([0-9]{1,18})"
    r"\s+\[([^\]]*)\]\s*(.*)$"
)
_OOB_RE = re.compile(r"^#\s*Out of bounds values\s*:\s*([0-9]{1,18})\s*([A-Za-z]*)")
_AVG_RE = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*(\S+)\s*([A-Za-z]*)")
_REDUCE_RE = re.compile(r"^#\s*Reducing maxBytes to\s+([0-9]{1,18})")
_NCCL_VERSION_RE = re.compile(r"NCCL version\s+([0-9]{1,18}\.[0-9]{1,18}\.[0-9]{1,18})")
_FAILURE_MARKERS = (
    "Test NCCL failure",
    "Test CUDA failure",
    "Test failure ",
    "Test timeout",
    "NCCL failure",
    "CUDA failure",
    "Cuda failure",
    "Invalid number of GPUs",
    "# error:",
)


def _is_failure(line: str) -> bool:
    return any(m in line for m in _FAILURE_MARKERS)


def _parse_config(line: str) -> NcclConfig:
    toks = line.lstrip("#").split()
    fields: dict[str, str] = {}
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok in ("nThread", "nGpus", "minBytes", "maxBytes") and i + 1 < len(toks):
            fields[tok] = toks[i + 1]
            i += 2
            continue
        if tok.endswith(":") and len(tok) > 1 and i + 1 < len(toks):
            key = tok[:-1]
            if key == "iters" and i > 0 and toks[i - 1] in ("warmup", "agg"):
                key = toks[i - 1] + "_iters"
            fields.setdefault(key, toks[i + 1])
            i += 2
            continue
        i += 1
    step = fields.get("step", "")
    step_val, step_kind = step, None
    if "(" in step and step.endswith(")"):
        step_val, step_kind = step[:-1].split("(", 1)
    return NcclConfig(
        nthread=_int(fields.get("nThread")),
        ngpus=_int(fields.get("nGpus")),
        min_bytes=_int(fields.get("minBytes")),
        max_bytes=_int(fields.get("maxBytes")),
        step=_int(step_val),
        step_kind=step_kind or None,
        warmup_iters=_int(fields.get("warmup_iters")),
        iters=_int(fields.get("iters")),
        agg_iters=_int(fields.get("agg_iters")),
        validation=_int(fields.get("validation")),
        graph=_int(fields.get("graph")),
        unalign=_int(fields.get("unalign")),
    )


def _is_table_header(line: str) -> list[str] | None:
    if not line.startswith("#"):
        return None
    toks = line.lstrip("#").split()
    if len(toks) >= 6 and toks[0] == "size" and "count" in toks and ("time" in toks or "cputime" in toks):
        return toks
    return None


class _Layout:
    """Where the values of a row are, from the table header (or guessed from a row)."""

    def __init__(self, has_root: bool, per_iter: bool, err_kind: str) -> None:
        self.has_root = has_root
        self.per_iter = per_iter
        self.err_kind = err_kind  # 'wrong' or 'error'

    @classmethod
    def from_header(cls, cols: list[str]) -> _Layout:
        return cls("root" in cols, "i_min" in cols, "error" if "error" in cols else "wrong")

    @classmethod
    def guess(cls, toks: list[str]) -> _Layout | None:
        n = len(toks)
        if n == 12:
            return cls(False, False, "error")
        if n >= 13:
            has_root = _int(toks[4]) is not None
            first = 5 if has_root else 4
            err_tok = toks[first + 3] if len(toks) > first + 3 else ""
            err_kind = "error" if ("." in err_tok or "e-" in err_tok) else "wrong"
            return cls(has_root, n >= 21 and has_root, err_kind)
        return None


def _half(toks: list[str], err_kind: str) -> NcclResult:
    time_us, algbw, busbw, err = toks
    res = NcclResult(time_us=_float(time_us), algbw_gbps=_float(algbw), busbw_gbps=_float(busbw))
    if err_kind == "error":
        res.max_error = _float(err)
    else:
        res.wrong = _int(err)
    return res


def _parse_row(toks: list[str], layout: _Layout) -> NcclRow | None:
    first = 5 if layout.has_root else 4
    group = 8 if layout.per_iter else 4
    if len(toks) < first + group + 4:
        return None
    size, count = _int(toks[0]), _int(toks[1])
    if size is None or count is None:
        return None
    oop = toks[first:first + 4]
    ip = toks[first + group:first + group + 4]
    # every bandwidth/time cell must be a number (or 'N/A' for #wrong)
    for cell in oop[:3] + ip[:3]:
        if _float(cell) is None and cell.lower() not in ("nan", "-nan", "inf", "n/a"):
            return None
    for cell in (oop[3], ip[3]):
        if _float(cell) is None and cell.lower() not in ("n/a", "nan", "-nan"):
            return None
    return NcclRow(
        size_bytes=size,
        count=count,
        type=toks[2],
        redop=toks[3],
        root=_int(toks[4]) if layout.has_root else None,
        out_of_place=_half(oop, layout.err_kind),
        in_place=_half(ip, layout.err_kind),
    )


def _looks_like_row(toks: list[str]) -> bool:
    return len(toks) >= 3 and all(t.isascii() and t.isdigit() for t in toks[:2])


def _parse_text(text: str) -> NcclTestsOutput:
    lines = split_lines(text)
    last_nonempty = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    runs: list[_RunBuilder] = []
    cur: _RunBuilder | None = None
    pending_version: str | None = None
    pending_warnings: list[str] = []

    def new_run() -> _RunBuilder:
        nonlocal cur, pending_version, pending_warnings
        cur = _RunBuilder()
        if pending_version:
            cur.nccl_version = pending_version
        cur.warnings.extend(pending_warnings)
        pending_version, pending_warnings = None, []
        runs.append(cur)
        return cur

    def run_for() -> _RunBuilder:
        """The run a line belongs to; a new one after a finished run."""
        if cur is None or cur.finished:
            return new_run()
        return cur

    for idx, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        if "NCCL INFO" in line:
            m = _NCCL_VERSION_RE.search(line)
            if m and cur is not None and cur.nccl_version is None:
                cur.nccl_version = m.group(1)
            continue
        if "NCCL WARN" in line:
            msg = line.split("NCCL WARN", 1)[1].strip()
            if cur is None or cur.finished:
                pending_warnings.append(msg)
            else:
                cur.warnings.append(msg)
            continue
        if _is_failure(line):
            run = cur if cur is not None and not cur.finished else new_run()
            run.failures.append(line.lstrip(". ").strip() if line.startswith("..") else line)
            continue
        if line.startswith("#"):
            m = _VERSION_RE.match(line)
            if m:
                run = new_run() if (cur is None or cur.finished or cur.nccl_tests_version or cur.test
                                    or cur.config or cur.columns or cur.rows) else cur
                run.nccl_tests_version = m.group(1)
                lib = _nccl_version_from_code(_int(m.group(3)) if m.group(3) else None)
                if lib:
                    run.nccl_version = lib
                continue
            m = _START_RE.match(line)
            if m:
                run = new_run() if (cur is None or cur.finished or cur.test or cur.config
                                    or cur.columns or cur.rows) else cur
                run.test = m.group(1)
                continue
            m = _CONCLUDED_RE.match(line)
            if m:
                if cur is not None:
                    cur.concluded = True
                    if cur.test is None:
                        cur.test = m.group(1)
                continue
            if line.lstrip("#").lstrip().startswith("nThread "):
                run = new_run() if (cur is None or cur.finished or cur.config or cur.columns
                                    or cur.rows) else cur
                run.config = _parse_config(line)
                toks = line.lstrip("#").split()
                for i, tok in enumerate(toks[:-1]):
                    if tok.rstrip(":").lower() == "nranks":
                        run.nranks_hint = _int(toks[i + 1])
                continue
            m = _DEVICE_RE.match(line)
            if m:
                run = new_run() if (cur is None or cur.finished or cur.columns or cur.rows) else cur
                run.devices.append(NcclDevice(
                    rank=int(m.group(1)),
                    group=int(m.group(2)) if m.group(2) is not None else None,
                    pid=int(m.group(3)),
                    host=m.group(4),
                    device=int(m.group(5)),
                    busid=m.group(6).strip() or None,
                    name=m.group(7).strip() or None,
                ))
                continue
            cols = _is_table_header(line)
            if cols is not None:
                run = new_run() if (cur is None or cur.finished or cur.rows) else cur
                run.columns = cols
                continue
            m = _OOB_RE.match(line)
            if m:
                run = run_for()
                run.oob = int(m.group(1))
                word = m.group(2).upper()
                run.oob_ok = True if word == "OK" else False if word == "FAILED" else run.oob == 0
                continue
            m = _AVG_RE.match(line)
            if m:
                run = cur if cur is not None and not cur.avg_seen else new_run()
                run.avg = _float(m.group(1))
                word = m.group(2).upper()
                run.avg_ok = True if word == "OK" else False if word == "FAILED" else None
                run.avg_seen = True
                continue
            m = _REDUCE_RE.match(line)
            if m:
                run = run_for()
                run.reduced = int(m.group(1))
                continue
            continue  # other comment lines: '# Using devices', '#', units line, ...
        m = _NCCL_VERSION_RE.match(line)
        if m:
            if cur is not None and not cur.finished:
                if cur.nccl_version is None:
                    cur.nccl_version = m.group(1)
            else:
                pending_version = m.group(1)
            continue
        toks = line.split()
        if _looks_like_row(toks):
            run = run_for()
            layout = _Layout.from_header(run.columns) if run.columns else _Layout.guess(toks)
            row = _parse_row(toks, layout) if layout is not None else None
            if row is None:
                if idx == last_nonempty:
                    continue  # output cut in the middle of a row
                raise fail(TOOL, "malformed result row", idx + 1, raw)
            run.rows.append(row)
            continue
        # anything else (mpirun chatter, author elisions, stray text) is not ours: ignored

    if not runs:
        raise not_recognised(TOOL, lines, "no nccl-tests header, result table or failure line found")
    return NcclTestsOutput(format="text", runs=[r.build() for r in runs])


# --------------------------------------------------------------------------- JSON (-J)
def _get(d: dict, *keys: str) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _json_half(obj: Any) -> NcclResult | None:
    if not isinstance(obj, dict):
        return None
    wrong = _get(obj, "nwrong", "wrong", "#wrong")
    return NcclResult(
        time_us=_float(_get(obj, "time", "cpu_time", "time_us")),
        algbw_gbps=_float(_get(obj, "alg_bw", "algbw", "algbw_gbps")),
        busbw_gbps=_float(_get(obj, "bus_bw", "busbw", "busbw_gbps")),
        wrong=_int(wrong),
        max_error=_float(_get(obj, "error", "max_error")),
    )


def _json_run(doc: dict) -> NcclRun:
    run = _RunBuilder()
    run.nccl_version = _nccl_version_from_code(_int(doc.get("nccl_version")))
    args = doc.get("args")
    if isinstance(args, list) and args and isinstance(args[0], str):
        base = args[0].rsplit("/", 1)[-1]
        if _test_to_collective(base):
            run.test = base
    if run.test is None:
        for key in ("test", "program", "collective_test"):
            val = doc.get(key)
            if isinstance(val, str) and val:
                run.test = val
                break
    cfg = doc.get("config")
    if isinstance(cfg, dict):
        step_factor = _int(cfg.get("step_factor"))
        run.config = NcclConfig(
            nthread=_int(_get(cfg, "nthreads", "nThread")),
            ngpus=_int(_get(cfg, "ngpus", "nGpus")),
            min_bytes=_size_bytes(_get(cfg, "minimum_bytes", "minBytes", "min_bytes")),
            max_bytes=_size_bytes(_get(cfg, "maximum_bytes", "maxBytes", "max_bytes")),
            step=step_factor if step_factor is not None else _size_bytes(cfg.get("step_bytes")),
            step_kind="factor" if step_factor is not None else "bytes" if "step_bytes" in cfg else None,
            warmup_iters=_int(cfg.get("warmup_iters")),
            iters=_int(_get(cfg, "iterations", "iters")),
            agg_iters=_int(_get(cfg, "aggregated_iterations", "agg_iters")),
            validation=_int(cfg.get("validation")),
            graph=_int(cfg.get("graph")),
            unalign=_int(cfg.get("unalign")),
        )
        run.nranks_hint = _int(cfg.get("nranks"))
    devices = doc.get("devices")
    if devices is None and isinstance(cfg, dict):
        devices = cfg.get("devices")
    if isinstance(devices, list):
        for dev in devices:
            if not isinstance(dev, dict):
                continue
            rank = _int(dev.get("rank"))
            if rank is None:
                continue
            name = _get(dev, "device_info", "name")
            busid = _get(dev, "device_hex", "busid")
            host = _get(dev, "hostname", "host")
            run.devices.append(NcclDevice(
                rank=rank,
                group=_int(dev.get("group")),
                pid=_int(dev.get("pid")),
                host=host if isinstance(host, str) else None,
                device=_int(dev.get("device")),
                busid=busid if isinstance(busid, str) else None,
                name=name if isinstance(name, str) else None,
            ))
    if run.nranks_hint is None:
        run.nranks_hint = _int(doc.get("nranks"))
    results = doc.get("results")
    if isinstance(results, list):
        for entry in results:
            if not isinstance(entry, dict):
                continue
            size = _size_bytes(_get(entry, "size", "size_bytes", "bytes"))
            if size is None:
                continue
            typ = entry.get("type")
            redop = entry.get("redop")
            run.rows.append(NcclRow(
                size_bytes=size,
                count=_size_bytes(_get(entry, "count", "elements")),
                type=typ if isinstance(typ, str) else None,
                redop=redop if isinstance(redop, str) else None,
                root=_int(entry.get("root")),
                out_of_place=_json_half(entry.get("out_of_place")),
                in_place=_json_half(entry.get("in_place")),
            ))
    oob = doc.get("out_of_bounds")
    if isinstance(oob, dict):
        run.oob = _int(oob.get("count"))
        run.oob_ok = _bool(oob.get("okay"))
    elif oob is not None:
        run.oob = _int(oob)
    avg = doc.get("average_bus_bandwidth")
    if isinstance(avg, dict):
        run.avg = _float(avg.get("bandwidth"))
        run.avg_ok = _bool(avg.get("okay"))
        run.avg_seen = True
    elif avg is not None:
        run.avg = _float(avg)
        run.avg_seen = True
    errors = doc.get("errors")
    if isinstance(errors, list):
        run.json_errors = [e.strip() for e in errors if isinstance(e, str) and e.strip()]
    elif isinstance(errors, str) and errors.strip():
        run.json_errors = [errors.strip()]
    return run.build()


def _line_of(text: str, pos: int) -> tuple[int, str]:
    line_no = text.count("\n", 0, pos) + 1
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return line_no, text[start:end if end >= 0 else len(text)]


def _parse_json(text: str) -> NcclTestsOutput:
    decoder = json.JSONDecoder()
    docs: list[tuple[int, Any]] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n\ufeff":
            pos += 1
        if pos >= n:
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:
            where = getattr(e, "pos", pos)
            line_no, line = _line_of(text, where if isinstance(where, int) else pos)
            msg = getattr(e, "msg", "invalid JSON")
            raise fail(TOOL, f"not valid nccl-tests JSON ({msg})", line_no, line) from None
        docs.append((pos, obj))
        pos = end
    runs: list[NcclRun] = []
    for start, obj in docs:
        items = obj if isinstance(obj, list) else [obj]
        for item in items:
            if isinstance(item, dict) and ("results" in item or "config" in item
                                           or "average_bus_bandwidth" in item):
                runs.append(_json_run(item))
            else:
                line_no, line = _line_of(text, start)
                raise fail(TOOL, "JSON without nccl-tests 'config'/'results'", line_no, line)
    if not runs:
        raise fail(TOOL, "empty JSON: no nccl-tests run")
    return NcclTestsOutput(format="json", runs=runs)


# --------------------------------------------------------------------------- entry point
def parse_nccl_tests(text: str) -> NcclTestsOutput:
    """Parse nccl-tests output (text, or the JSON file written with ``-J``)."""
    if not isinstance(text, str):
        raise fail(TOOL, "input is not text")
    head = text.lstrip(" \t\r\n\ufeff")
    if head.startswith("{") or (head.startswith("[") and not head.startswith("[...]")):
        try:
            return _parse_json(text)
        except ParseError:
            if "Avg bus bandwidth" in text or "# nThread" in text or "Collective test" in text:
                return _parse_text(text)
            raise
    return _parse_text(text)
