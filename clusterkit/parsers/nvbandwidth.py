"""nvbandwidth: per-test bandwidth matrices (text output, and the ``-j`` JSON output).

Text layout (each part optional except the test blocks)::

    nvbandwidth Version: v0.4
    Built from Git version: v0.4.2-12-g8857188
    CUDA Runtime Version: 12020
    CUDA Driver Version: 12080
    Driver Version: 570.133.20
    Device 0: NVIDIA H100 80GB HBM3 (00000000:1b:00)
    Running device_to_device_memcpy_read_ce.
    memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)
              0         1 ...
    0       N/A    370.90 ...
    SUM device_to_device_memcpy_read_ce 20785.58

Matrix cells are GB/s (10^9 bytes/s) as printed; ``N/A`` becomes null. For GPU-to-GPU matrices the
diagonal (``N/A``, or ``0.00`` in older versions) is left out of min / avg / max. ``sum_gbps`` is
the ``SUM`` line when the output has one (``sum_reported``), else the sum of the printed cells.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from clusterkit.record import ConfigDict, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines, not_recognised

TOOL = "nvbandwidth"


class _Model(Record):
    model_config = ConfigDict(extra="forbid")


class NvbDevice(_Model):
    index: int
    name: str | None = None
    pci: str | None = None
    host: str | None = None


class NvbTest(_Model):
    name: str | None = None
    status: str = "Passed"  # Passed / Waived / Error / Incomplete
    description: str | None = None  # 'memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)'
    unit: str | None = None  # 'GB/s' (latency tests: 'ns')
    columns: list[int] = []
    matrix: dict[int, list[float | None]] = {}  # row (source) index -> one value per column
    sum_gbps: float | None = None
    sum_value: float | None = None  # the SUM of a test in another unit (latency tests: ns)
    sum_reported: bool = False
    pairs: int = 0  # measured cells, diagonal excluded
    min_gbps: float | None = None
    avg_gbps: float | None = None
    max_gbps: float | None = None
    error: str | None = None


class NvbandwidthOutput(ParsedOutput):
    version: str | None = None
    git_version: str | None = None
    cuda_runtime_version: int | None = None
    cuda_driver_version: int | None = None
    driver_version: str | None = None
    devices: list[NvbDevice] = []
    tests: list[NvbTest]
    errors: list[str] = []
    ok: bool = True  # no test errored or was cut short, no tool error

    def summary(self) -> str:
        head = f"nvbandwidth {self.version or '(version not shown)'}"
        if self.driver_version:
            head += f", driver {self.driver_version}"
        if self.devices:
            head += f", {len(self.devices)} devices"
        lines = [head]
        for t in self.tests:
            if t.status != "Passed":
                lines.append(f"  {t.name or '(unnamed test)'}: {t.status}"
                             + (f" ({t.error})" if t.error else ""))
                continue
            if t.unit == "GB/s" and t.pairs:
                lines.append(
                    f"  {t.name}: {t.pairs} pairs, min {t.min_gbps:.2f} / avg {t.avg_gbps:.2f} / "
                    f"max {t.max_gbps:.2f} GB/s, sum {t.sum_gbps:.2f} GB/s"
                )
            else:
                lines.append(f"  {t.name}: {len(t.matrix)}x{len(t.columns)} matrix ({t.unit or 'no unit'})")
        for e in self.errors:
            lines.append(f"  error: {e}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- utilities
def _cell(tok: str) -> float | None | str:
    """A matrix cell: a float, None for 'N/A', or the string 'bad' when it is neither."""
    if tok.upper() == "N/A":
        return None
    if len(tok) > 40:
        return "bad"
    try:
        value = float(tok)
    except ValueError:
        return "bad"
    return value if math.isfinite(value) else None


def _unit_of(description: str | None) -> str | None:
    if not description:
        return None
    m = re.search(r"\(([^()]{1,20})\)\s*$", description)
    return m.group(1).strip() if m else None


def _gpu_to_gpu(description: str | None) -> bool:
    if description is None:
        return True
    d = description.replace(" ", "")
    return "GPU(row)" in d and "GPU(column)" in d


def _finish(test: NvbTest) -> None:
    """Fill the statistics of a test from its matrix."""
    test.unit = test.unit or _unit_of(test.description)
    diag = _gpu_to_gpu(test.description)
    values: list[float] = []
    everything: list[float] = []
    for row, cells in test.matrix.items():
        for j, v in enumerate(cells):
            if v is None:
                continue
            everything.append(v)
            col = test.columns[j] if j < len(test.columns) else j
            if diag and col == row:
                continue
            values.append(v)
    test.pairs = len(values)
    if test.unit in (None, "GB/s"):
        if not test.sum_reported:
            test.sum_gbps = round(sum(everything), 2) if everything else None
        if values:
            test.min_gbps = min(values)
            test.max_gbps = max(values)
            test.avg_gbps = round(sum(values) / len(values), 3)
    else:
        test.sum_value, test.sum_gbps = test.sum_gbps, None
    if test.unit is None and test.matrix:
        test.unit = "GB/s"


_RUNNING_RE = re.compile(r"^Running\s+(\S+?)\.?$")
_SUM_RE = re.compile(r"^SUM\s+(\S+)\s+(\S+)$")
_DEVICE_RE = re.compile(r"^Device\s+([0-9]{1,18}):\s*(.*)$")
_PROCESS_RE = re.compile(r"^Process\s+([0-9]{1,18})\s+\(([^)]*)\):\s*device\s+([0-9]{1,18}):\s*(.*)$")
_PCI_RE = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-9A-Fa-f])?$")


def _name_and_pci(rest: str) -> tuple[str | None, str | None]:
    """'NVIDIA H100 80GB HBM3 (00000000:1b:00)' -> (name, pci); the PCI part is optional."""
    rest = rest.strip()
    if rest.endswith(")") and "(" in rest:
        head, _, tail = rest.rpartition("(")
        pci = tail[:-1].strip()
        if _PCI_RE.match(pci):
            return head.strip() or None, pci
    return rest or None, None
_KV = {
    "nvbandwidth Version:": "version",
    "Built from Git version:": "git_version",
    "CUDA Runtime Version:": "cuda_runtime_version",
    "CUDA Driver Version:": "cuda_driver_version",
    "Driver Version:": "driver_version",
}


def _uint(tok: str) -> bool:
    """An ASCII decimal number short enough to be an index or a version code."""
    return tok.isascii() and tok.isdigit() and len(tok) <= 18


def _int(s: Any) -> int | None:
    if isinstance(s, bool):
        return None
    if isinstance(s, int):
        return s if abs(s) < 1 << 63 else None
    if isinstance(s, str) and _uint(s.strip()):
        return int(s.strip())
    return None


# --------------------------------------------------------------------------- text
def _parse_text(text: str) -> NvbandwidthOutput:
    lines = split_lines(text)
    last_nonempty = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    meta: dict[str, Any] = {}
    devices: list[NvbDevice] = []
    tests: list[NvbTest] = []
    errors: list[str] = []
    cur: NvbTest | None = None
    in_matrix = False  # between a column-header line and the blank line that ends the matrix
    recognised = False

    for idx, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            in_matrix = False
            continue
        for key, field in _KV.items():
            if line.startswith(key):
                val = line[len(key):].strip()
                meta[field] = _int(val) if field.startswith("cuda_") else (val or None)
                if field in ("version", "git_version", "cuda_runtime_version"):
                    recognised = True
                break
        else:
            m = _RUNNING_RE.match(line)
            if m:
                cur = NvbTest(name=m.group(1))
                tests.append(cur)
                in_matrix = False
                recognised = True
                continue
            m = _SUM_RE.match(line)
            if m:
                value = _cell(m.group(2))
                target = next((t for t in reversed(tests) if t.name == m.group(1)), cur)
                if target is None:
                    target = NvbTest(name=m.group(1))
                    tests.append(target)
                if isinstance(value, float):
                    target.sum_gbps = value
                    target.sum_reported = True
                recognised = True
                in_matrix = False
                continue
            m = _DEVICE_RE.match(line)
            if m:
                name, pci = _name_and_pci(m.group(2))
                devices.append(NvbDevice(index=int(m.group(1)), name=name, pci=pci))
                continue
            m = _PROCESS_RE.match(line)
            if m:
                name, pci = _name_and_pci(m.group(4))
                devices.append(NvbDevice(index=int(m.group(3)), name=name, pci=pci, host=m.group(2) or None))
                continue
            toks = line.split()
            if cur is not None and cur.status == "Passed" and all(_uint(t) for t in toks) and not cur.columns:
                cur.columns = [int(t) for t in toks]
                in_matrix = True
                continue
            if in_matrix and cur is not None and _uint(toks[0]):
                cells = [_cell(t) for t in toks[1:]]
                if any(c == "bad" for c in cells) or len(cells) != len(cur.columns):
                    if idx == last_nonempty:
                        cur.status = "Incomplete"
                        cur.error = "output ends inside the matrix"
                        continue
                    raise fail(TOOL, "malformed matrix row", idx + 1, raw)
                row = int(toks[0])
                if row in cur.matrix:
                    raise fail(TOOL, f"matrix row {row} appears twice", idx + 1, raw)
                cur.matrix[row] = [c for c in cells if c != "bad"]  # type: ignore[misc]
                continue
            in_matrix = False
            low = line.lower()
            if low.startswith("waived"):
                if cur is not None and not cur.matrix and cur.status == "Passed":
                    cur.status = "Waived"
                else:
                    tests.append(NvbTest(status="Waived"))
                recognised = True
                continue
            if low.startswith("error"):
                msg = line.split(":", 1)[1].strip() if ":" in line else line
                if cur is not None and not cur.matrix and cur.status == "Passed":
                    cur.status = "Error"
                    cur.error = msg or line
                else:
                    errors.append(msg or line)
                continue
            if cur is not None and not cur.columns and cur.description is None and cur.status == "Passed":
                cur.description = line  # the matrix title
                continue
            # NOTE lines, warnings, author elisions: not ours, ignored

    if not recognised:
        raise not_recognised(TOOL, lines, "no 'Running <test>.' line or nvbandwidth version header found")
    for t in tests:
        if t.status == "Passed" and not t.matrix and not t.sum_reported:
            t.status = "Incomplete"
            t.error = "no bandwidth matrix after 'Running'"
        _finish(t)
    ok = not errors and all(t.status in ("Passed", "Waived") for t in tests)
    return NvbandwidthOutput(devices=devices, tests=tests, errors=errors, ok=ok, **meta)


# --------------------------------------------------------------------------- JSON (-j)
def _parse_json(text: str) -> NvbandwidthOutput:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        line_no = getattr(e, "lineno", None)
        lines = text.split("\n")
        line = lines[line_no - 1] if isinstance(line_no, int) and 0 < line_no <= len(lines) else None
        raise fail(TOOL, f"not valid nvbandwidth JSON ({getattr(e, 'msg', type(e).__name__)})",
                   line_no, line) from None
    root = doc.get("nvbandwidth") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise fail(TOOL, "JSON without a top-level 'nvbandwidth' object", 1, text.split("\n", 1)[0])
    devices: list[NvbDevice] = []
    dev_list = root.get("GPU Device list")
    if isinstance(dev_list, list):
        for entry in dev_list:
            if not isinstance(entry, str):
                continue
            # '0: NVIDIA H100 80GB HBM3 (00000000:1b:00): (hostname)'
            m = re.match(r"^([0-9]{1,18}):\s*(.*)$", entry)
            if m:
                rest, host = m.group(2).strip(), None
                if rest.endswith(")") and "): (" in rest:
                    rest, _, host_part = rest.rpartition(": (")
                    host = host_part[:-1] or None
                name, pci = _name_and_pci(rest)
                devices.append(NvbDevice(index=int(m.group(1)), name=name, pci=pci, host=host))
    tests: list[NvbTest] = []
    cases = root.get("testcases")
    for case in cases if isinstance(cases, list) else []:
        if not isinstance(case, dict):
            continue
        name = case.get("name") if isinstance(case.get("name"), str) else None
        raw_status = case.get("status")
        status = raw_status if isinstance(raw_status, str) else "Passed"
        desc = case.get("bandwidth_description")
        test = NvbTest(name=name, status=status, description=desc if isinstance(desc, str) else None)
        if isinstance(case.get("error"), str):
            test.error = case["error"]
            test.status = "Error"
        matrix = case.get("bandwidth_matrix")
        if isinstance(matrix, list):
            width = 0
            for i, row in enumerate(matrix):
                if not isinstance(row, list):
                    continue
                cells = [_cell(str(c)) if isinstance(c, (str, int, float)) and not isinstance(c, bool)
                         else None for c in row]
                test.matrix[i] = [c if not isinstance(c, str) else None for c in cells]
                width = max(width, len(cells))
            test.columns = list(range(width))
        total = case.get("sum")
        if isinstance(total, (int, float)) and not isinstance(total, bool):
            value = _cell(repr(float(total))) if abs(total) < 1e300 else None
            if isinstance(value, float):
                test.sum_gbps = value
                test.sum_reported = True
        _finish(test)
        tests.append(test)
    errors = [root[k] for k in ("error",) if isinstance(root.get(k), str) and root[k]]
    ok = not errors and all(t.status in ("Passed", "Waived") for t in tests)
    return NvbandwidthOutput(
        version=root.get("version") if isinstance(root.get("version"), str) else None,
        git_version=root.get("git_version") if isinstance(root.get("git_version"), str) else None,
        cuda_runtime_version=_int(root.get("CUDA Runtime Version")),
        driver_version=root.get("Driver Version") if isinstance(root.get("Driver Version"), str) else None,
        devices=devices,
        tests=tests,
        errors=errors,
        ok=ok,
    )


def parse_nvbandwidth(text: str) -> NvbandwidthOutput:
    """Parse nvbandwidth output (text, or JSON from ``nvbandwidth -j``)."""
    if not isinstance(text, str):
        raise fail(TOOL, "input is not text")
    if text.lstrip(" \t\r\n\ufeff").startswith("{"):
        return _parse_json(text)
    return _parse_text(text)
