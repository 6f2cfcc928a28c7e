"""gpu-burn (wilicc/gpu-burn ``gpu_burn``): per-GPU verdicts, Gflop/s, error counts, temperatures.

What is read::

    GPU 0: Tesla M4 (UUID: GPU-57ddd9f4-...)              <- nvidia-smi -L, names and UUIDs
    Initialized device 0 with 3778 MB of memory (...), using DOUBLES
    Burning for 360 seconds.
     19.2%  proc'd: 4 (64 Gflop/s) - 0 ( 0 Gflop/s)   errors: 0 - 0   temps: 52 C - 52 C
            Summary at:   Mon Apr 14 04:50:50 PM CST 2025   <- newer versions, every ~10 %
    Tested 2 GPUs:
            GPU 0: OK
            GPU 1: FAULTY

Progress lines are written with a carriage return (so a raw capture may hold them on one line);
either way each one is read. ``gflops``, ``temp_c`` and ``power_w`` are the last progress line's
figures; ``errors`` is the highest error count any progress line showed for that GPU (gpu_burn
resets the counts after each 'Summary at' block, so the last line alone can hide earlier errors).
``ok`` is false when any GPU is FAULTY, shows errors or died, or when the 'Tested N GPUs' summary
is missing (the run is then marked incomplete in ``error``).
"""

from __future__ import annotations

import math
import re

from clusterkit.record import ConfigDict, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines, not_recognised

TOOL = "gpu-burn"


class GpuBurnGpu(Record):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: str | None = None
    uuid: str | None = None
    status: str | None = None  # 'OK' / 'FAULTY' from the summary; null when there is none
    gflops: float | None = None
    errors: int | None = None
    temp_c: int | None = None
    power_w: int | None = None
    processed: int | None = None  # matrix multiplications done (last progress line)
    died: bool = False  # gpu_burn printed '(DIED!)' for it


class GpuBurnOutput(ParsedOutput):
    gpus: list[GpuBurnGpu]
    ok: bool
    complete: bool  # the 'Tested N GPUs:' summary is there
    tested_count: int | None = None
    duration_s: int | None = None
    precision: str | None = None  # 'DOUBLES' / 'FLOATS' (as gpu_burn says), 'TENSOR CORES' with -tc
    last_progress_pct: float | None = None
    error: str | None = None
    failures: list[str] = []

    def summary(self) -> str:
        head = "gpu-burn: " + ("OK" if self.ok else "NOT OK")
        if self.duration_s is not None:
            head += f", {self.duration_s} s"
        if self.precision:
            head += f", {self.precision.lower()}"
        if self.error:
            head += f" ({self.error})"
        lines = [head]
        for g in self.gpus:
            parts = [f"GPU {g.index}: {g.status or 'no verdict'}"]
            if g.gflops is not None:
                parts.append(f"{g.gflops:g} Gflop/s")
            if g.errors is not None:
                parts.append(f"errors {g.errors}")
            if g.temp_c is not None:
                parts.append(f"{g.temp_c} C")
            if g.died:
                parts.append("DIED")
            lines.append("  " + ", ".join(parts))
        return "\n".join(lines)


_PROGRESS_PCT_RE = re.compile(r"^\s*([0-9]{1,3}(?:\.[0-9]+)?)%")
_PROC_RE = re.compile(r"(-?[0-9]{1,18})\s*\(\s*([-+0-9.eEnaifNAIF]+)\s*Gflop/s\)")
_ERR_RE = re.compile(r"([0-9]{1,18})\s*(\((?:DIED|WARNING)!\))?")
_TEMP_RE = re.compile(r"([0-9]{1,18})\s*C\b|(--)")
_POWER_RE = re.compile(r"([0-9]{1,18})\s*W\b|(--)")
_TESTED_RE = re.compile(r"^Tested\s+([0-9]{1,18})\s+GPUs?:?$")
_VERDICT_RE = re.compile(r"^GPU\s+([0-9]{1,18}):\s*(OK|FAULTY)$")
_GPU_LINE_RE = re.compile(r"^GPU\s+([0-9]{1,18}):\s*(.*)$")
_INIT_RE = re.compile(r"^Initialized device\s+([0-9]{1,18})\b")
_BURNING_RE = re.compile(r"^Burning for\s+([0-9]{1,18})\s+seconds")
_FAILURE_MARKERS = (
    "No clients are alive",
    "Couldn't init",
    "Failure during compute",
    "No CUDA devices",
    "No CUDA capable GPUs",
    "Error in ",
    "Error: ",
    "error_string",
    "CUDA_ERROR",
    "terminate called",
)
_KEYWORDS = ("proc'd:", "errors:", "temps:", "power:")


def _sections(line: str) -> dict[str, str]:
    """Split a progress line into its 'proc'd:' / 'errors:' / 'temps:' / 'power:' parts."""
    marks = sorted((line.find(k), k) for k in _KEYWORDS if k in line)
    out: dict[str, str] = {}
    for i, (pos, key) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(line)
        out[key] = line[pos + len(key):end]
    return out


def _gflops(tok: str) -> float | None:
    try:
        value = float(tok)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_gpu_burn(text: str) -> GpuBurnOutput:
    """Parse the console output of gpu_burn."""
    if not isinstance(text, str):
        raise fail(TOOL, "input is not text")
    lines = split_lines(text)
    gpus: dict[int, GpuBurnGpu] = {}
    recognised = False
    in_summary = False
    tested: int | None = None
    duration: int | None = None
    precision: str | None = None
    last_pct: float | None = None
    failures: list[str] = []

    def gpu(i: int) -> GpuBurnGpu:
        if i not in gpus:
            gpus[i] = GpuBurnGpu(index=i)
        return gpus[i]

    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if "proc'd:" in line:
            recognised = True
            in_summary = False
            m = _PROGRESS_PCT_RE.match(line)
            if m:
                last_pct = float(m.group(1))
            sec = _sections(line)
            procs = _PROC_RE.findall(sec.get("proc'd:", ""))
            errs = _ERR_RE.findall(sec.get("errors:", ""))
            temps = _TEMP_RE.findall(sec.get("temps:", ""))
            powers = _POWER_RE.findall(sec.get("power:", ""))
            for i, (processed, gfl) in enumerate(procs):
                g = gpu(i)
                g.processed = int(processed)
                g.gflops = _gflops(gfl)
                if g.processed == -1:
                    g.died = True
            for i, (count, note) in enumerate(errs):
                g = gpu(i)
                g.errors = max(g.errors or 0, int(count))
                if "DIED" in note:
                    g.died = True
            for i, (deg, _dash) in enumerate(temps):
                gpu(i).temp_c = int(deg) if deg else None
            for i, (watts, _dash) in enumerate(powers):
                gpu(i).power_w = int(watts) if watts else None
            continue
        if line.startswith("Summary at:"):
            recognised = True
            continue
        m = _TESTED_RE.match(line)
        if m:
            recognised = True
            in_summary = True
            tested = int(m.group(1))
            continue
        m = _VERDICT_RE.match(line)
        if m and in_summary:
            gpu(int(m.group(1))).status = m.group(2)
            continue
        m = _GPU_LINE_RE.match(line)
        if m and not in_summary:
            # 'GPU 0: Tesla M4 (UUID: GPU-...)' from nvidia-smi -L
            g = gpu(int(m.group(1)))
            rest = m.group(2).strip()
            if rest.endswith(")") and "(UUID:" in rest:
                name, _, uuid = rest.rpartition("(UUID:")
                g.name = name.strip() or None
                g.uuid = uuid[:-1].strip() or None
            elif rest:
                g.name = rest
            continue
        m = _INIT_RE.match(line)
        if m:
            recognised = True
            gpu(int(m.group(1)))
            if "using DOUBLES" in line:
                precision = "DOUBLES"
            elif "using FLOATS" in line:
                precision = "FLOATS"
            if "Tensor" in line:
                precision = (precision + ", " if precision else "") + "TENSOR CORES"
            continue
        m = _BURNING_RE.match(line)
        if m:
            recognised = True
            duration = int(m.group(1))
            continue
        if line.startswith("Using compare file:") or line.startswith("Killing processes with SIG"):
            recognised = True
            continue
        if any(k in line for k in _FAILURE_MARKERS):
            failures.append(line)
            continue
        # anything else ('done', 'Results are ... bytes each', 'Freed memory', elisions): ignored

    if not recognised:
        raise not_recognised(TOOL, lines,
                             "no gpu-burn progress line ('proc'd:'), 'Burning for' or 'Tested N GPUs' found")

    gpu_list = [gpus[i] for i in sorted(gpus)]
    complete = tested is not None
    error = failures[0] if failures else None
    if not complete and error is None:
        where = f" (last progress {last_pct:g}%)" if last_pct is not None else ""
        error = f"incomplete: no 'Tested N GPUs' summary{where}"
    if complete and tested is not None and any(g.status is None for g in gpu_list[:tested]):
        error = error or "summary lists fewer GPUs than it tested"
    bad = any(g.status == "FAULTY" or (g.errors or 0) > 0 or g.died for g in gpu_list)
    ok = complete and not bad and error is None and bool(gpu_list)
    return GpuBurnOutput(
        gpus=gpu_list,
        ok=ok,
        complete=complete,
        tested_count=tested,
        duration_s=duration,
        precision=precision,
        last_progress_pct=last_pct,
        error=error,
        failures=failures,
    )
