"""Stress domain (opt-in: ``node-check --stress``): the GPUs under load, time-boxed.

* ``stress.gemm`` / ``stress.hbm``: bf16 GEMM TFLOP/s and device-to-device copy bandwidth per
  GPU, measured by :mod:`clusterkit.validate.stress_worker` — one process per GPU, all at once,
  through the tool runner (so torch is imported there, never in node-check, and a hung CUDA call
  is killed at the deadline). Judged against the profile's floor and against the node's other
  GPUs: a GPU below ``sibling_rel_min`` x its siblings' median fails even above the floor.
  Without torch (or cupy) on the node: ``skip``, with the reason.
* ``stress.gpu_burn``: wilicc/gpu-burn (``gpu_burn``) when installed, read by the gpu-burn parser:
  a FAULTY GPU, compute errors or a GPU that died fail, naming the GPU.
* ``stress.dcgm``: ``dcgmi diag -r N -j`` when DCGM is installed, read by the dcgmi parser: a
  failed plugin fails, naming the GPU and the test; a run in which no hardware plugin ran
  (every one skipped) is ``error`` ("nothing was tested"), never ``pass``.

The phases run one after another (each would disturb the others' figures): the worker, then
gpu_burn, then dcgmi with what is left of node-check's deadline. A tool that is not installed is
``skip``; one that could not run, gave no result or ran out of time is ``error``; only evidence
from a run that happened is ``fail``.

On a simulated node the simulator's stand-ins (``clusterkit-stress-worker``, ``dcgmi``,
``gpu_burn``) come first on the tool path and print the same formats, so this code runs
unchanged under ``--sim``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterable, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import Profile, StressProfile
from clusterkit.validate.subjects import Subject, on_gpu

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.context import ProbeContext, ToolResult

NAME = "stress"
DOC = "opt-in (--stress): GPUs under load: bf16 GEMM and HBM copy per GPU, dcgmi diag, gpu-burn"
CHECKS: dict[str, str] = {
    "stress": "the profile expects no GPUs (skip)",
    "stress.gemm": "opt-in (--stress): bf16 GEMM TFLOP/s below the floor or the node's other GPUs (fail)",
    "stress.hbm": "opt-in (--stress): device-to-device copy GB/s below the floor or the node's other GPUs (fail)",
    "stress.dcgm": "opt-in (--stress): dcgmi diag -r N: a failed plugin (fail); nothing tested (error)",
    "stress.gpu_burn": "opt-in (--stress): gpu-burn: a FAULTY GPU, compute errors, a GPU that died (fail)",
}
#: The checks ``--stress`` turns on (each may be asked for alone through ``--checks``).
STRESS_CHECKS = ("stress.gemm", "stress.hbm", "stress.gpu_burn", "stress.dcgm")
#: The measurement worker's name on the tool path (the simulator's stand-in); when no such tool
#: is there, ``python -m clusterkit.validate.stress_worker`` with this interpreter.
WORKER_TOOL = "clusterkit-stress-worker"
WORKER_MODULE = "clusterkit.validate.stress_worker"
WORKER_SCHEMA = "clusterkit.stress-worker/v1"
#: an interpreter with torch (or cupy) for the worker, when node-check's own has none
ENV_PYTHON = "CLUSTERKIT_STRESS_PYTHON"
#: seconds a worker may take beyond its timed load: interpreter, torch import, CUDA context,
#: allocation and warm-up
WORKER_STARTUP_S = 45.0
#: gpu_burn's start-up and shut-down around its burn
BURN_OVERHEAD_S = 20.0
#: left for judging and printing the report when the deadline comes
RESERVE_S = 2.0
#: below this many seconds left, dcgmi diag is not started
DCGM_MIN_S = 10.0
BURN_MIN_S = 3.0
#: how long dcgmi diag levels normally run (the dcgmi diag manual)
DCGM_TAKES = {2: "takes about two minutes", 3: "takes about 15 minutes", 4: "takes longer still"}
#: dcgmi diag categories whose tests are not hardware plugins
SOFTWARE_CATEGORIES = frozenset({"deployment", "software", "metadata"})
SOFTWARE_TESTS = frozenset({
    "denylist", "blacklist", "nvml library", "cuda main library", "cuda toolkit libraries",
    "permissions and os blocks", "persistence mode", "environment variables",
    "page retirement/row remap", "graphics processes", "inforom", "software",
})


def opt_in(stress: bool, filters: Optional[Iterable[str]]) -> frozenset[str]:
    """The stress checks a run asks for: the ones ``--checks`` names (a check id, the domain,
    a group), else all of them with ``--stress``."""
    named = {c for c in STRESS_CHECKS for f in (filters or ())
             if c == f or c.startswith(f + ".") or f == NAME}
    if named:
        return frozenset(named)
    return frozenset(STRESS_CHECKS) if stress else frozenset()


# ------------------------------------------------------------------------------------ models
class GpuFigures(Record):
    """One GPU's worker result."""

    model_config = ConfigDict(extra="forbid")

    index: int
    backend: Optional[str] = None
    device: Optional[str] = None
    pci_bus_id: Optional[str] = None
    gemm_tflops: Optional[float] = None
    gemm_shape: Optional[list[int]] = None
    gemm_dtype: Optional[str] = None
    gemm_finite: Optional[bool] = None
    gemm_error: Optional[str] = None
    hbm_gbps: Optional[float] = None
    hbm_bytes: Optional[int] = None
    hbm_error: Optional[str] = None
    skipped: Optional[str] = None  # no GPU library: the reason
    error: Optional[str] = None  # the worker could not run, or gave no result
    seconds: Optional[float] = None


class DcgmTest(Record):
    model_config = ConfigDict(extra="forbid")

    name: str
    category: Optional[str] = None
    gpu: Optional[int] = None
    result: str
    detail: Optional[str] = None


class DcgmRun(Record):
    model_config = ConfigDict(extra="forbid")

    level: int
    argv: list[str] = Field(default_factory=list)
    skipped: Optional[str] = None  # not installed
    error: Optional[str] = None  # could not run, gave no result, out of time
    version: Optional[str] = None
    tests: list[DcgmTest] = Field(default_factory=list)
    duration_s: Optional[float] = None


class BurnGpu(Record):
    model_config = ConfigDict(extra="forbid")

    index: int
    status: Optional[str] = None  # OK / FAULTY, from the summary
    errors: Optional[int] = None
    died: bool = False
    gflops: Optional[float] = None


class BurnRun(Record):
    model_config = ConfigDict(extra="forbid")

    seconds: Optional[int] = None
    argv: list[str] = Field(default_factory=list)
    skipped: Optional[str] = None
    error: Optional[str] = None
    complete: Optional[bool] = None
    gpus: list[BurnGpu] = Field(default_factory=list)
    duration_s: Optional[float] = None


class StressMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    requested: list[str] = Field(default_factory=list)
    no_gpus: bool = False  # the profile expects none
    gpu_count: Optional[int] = None
    budget_s: Optional[float] = None  # seconds of timed load per phase
    worker: list[str] = Field(default_factory=list)  # how the worker was started
    gpus: list[GpuFigures] = Field(default_factory=list)
    gpu_burn: Optional[BurnRun] = None
    dcgm: Optional[DcgmRun] = None


Measurement = StressMeasurement


# ------------------------------------------------------------------------------------- probe
def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> StressMeasurement:
    """Run what ``ctx.opt_in`` asks for, phase after phase, within the deadline. Never raises for
    a tool that is missing, fails or hangs."""
    wanted = [c for c in STRESS_CHECKS if c in ctx.opt_in]
    m = StressMeasurement(requested=wanted)
    if not wanted or profile is None:
        return m
    if profile.gpu is None or profile.gpu.count == 0:
        m.no_gpus = True
        return m
    p = profile.stress or StressProfile()
    m.gpu_count = profile.gpu.count
    gpus = list(range(profile.gpu.count))
    if "stress.gemm" in wanted or "stress.hbm" in wanted:
        tests = [t for t, c in (("gemm", "stress.gemm"), ("hbm", "stress.hbm")) if c in wanted]
        _measure(ctx, m, p, gpus, tests)
    if "stress.gpu_burn" in wanted:
        m.gpu_burn = _gpu_burn(ctx, p)
    if "stress.dcgm" in wanted:
        m.dcgm = _dcgm(ctx, p)
    return m


def worker_argv(ctx: "ProbeContext") -> list[str]:
    """The worker command: the tool on the path (the simulator's stand-in, or an installed
    one); else ``$CLUSTERKIT_STRESS_PYTHON`` (an interpreter that has torch, when node-check's
    own has not) running this package's worker; else this interpreter running the module."""
    path = ctx.which(WORKER_TOOL)
    if path:
        return [path]
    other = os.environ.get(ENV_PYTHON)
    if other:
        # that interpreter may not have clusterkit: this package's directory goes last on its path
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return [other, "-c", f"import sys; sys.path.append({root!r}); "
                             f"from {WORKER_MODULE} import main; sys.exit(main())"]
    return [sys.executable, "-m", WORKER_MODULE]


def _time_left(ctx: "ProbeContext") -> float:
    return ctx.time_left() - RESERVE_S


def _measure(ctx: "ProbeContext", m: StressMeasurement, p: StressProfile, gpus: list[int],
             tests: list[str]) -> None:
    left = _time_left(ctx)
    # the timed load: the profile's seconds, less when the deadline is short (the later phases
    # need their share too)
    seconds = round(max(1.0, min(float(p.seconds), 0.3 * left)), 1)
    m.budget_s = seconds
    base = worker_argv(ctx)
    m.worker = base
    results: dict[int, GpuFigures] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        argv = [*base, "--gpu", str(i), "--seconds", f"{seconds:g}", "--tests", ",".join(tests)]
        timeout = max(1.0, min(_time_left(ctx), seconds + WORKER_STARTUP_S))
        r = ctx.run_tool(argv, timeout=timeout)
        fig = read_worker(i, r, timeout)
        with lock:
            results[i] = fig

    threads = [threading.Thread(target=one, args=(i,), name=f"ck-stress-gpu{i}", daemon=True) for i in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, ctx.time_left()) + 1.0)
    with lock:
        m.gpus = [results.get(i) or GpuFigures(index=i, error="the worker did not finish before the deadline")
                  for i in gpus]


def _last_json(text: str) -> Optional[dict[str, Any]]:
    from clusterkit.fsutil import last_json_object

    return last_json_object(text)


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _str(v: Any) -> Optional[str]:
    return " ".join(v.split())[:500] if isinstance(v, str) and v.strip() else None


def _tail(r: "ToolResult") -> str:
    text = " ".join((r.stderr or r.stdout or "").split())
    return text[-300:] if text else "no output"


def read_worker(index: int, r: "ToolResult", timeout: float) -> GpuFigures:
    """One GPU's figures from the worker's JSON line (the last line starting with ``{``); read
    tolerantly: a field of the wrong type is unknown, never zero."""
    fig = GpuFigures(index=index)
    if r.missing:
        fig.error = f"the stress worker could not be started: {_tail(r)}"
        return fig
    doc = _last_json(r.stdout)
    if doc is None or doc.get("schema") != WORKER_SCHEMA:
        if r.timed_out:
            fig.error = f"the stress worker did not finish within {timeout:.0f} s (a hung GPU or CUDA call?)"
        elif doc is not None:
            fig.error = f"the stress worker spoke {doc.get('schema')!r}, not {WORKER_SCHEMA}"
        else:
            fig.error = f"the stress worker gave no result (exit {r.rc}): {_tail(r)}"
        return fig
    fig.backend, fig.device, fig.pci_bus_id = _str(doc.get("backend")), _str(doc.get("device")), \
        _str(doc.get("pci_bus_id"))
    fig.seconds = _num(doc.get("seconds"))
    fig.skipped = _str(doc.get("skipped"))
    fig.error = _str(doc.get("error"))
    gemm = doc.get("gemm")
    if isinstance(gemm, dict):
        fig.gemm_tflops = _num(gemm.get("tflops"))
        fig.gemm_error = _str(gemm.get("error"))
        fig.gemm_dtype = _str(gemm.get("dtype"))
        shape = gemm.get("shape")
        if isinstance(shape, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in shape):
            fig.gemm_shape = shape
        finite = gemm.get("finite")
        fig.gemm_finite = finite if isinstance(finite, bool) else None
    hbm = doc.get("hbm")
    if isinstance(hbm, dict):
        fig.hbm_gbps = _num(hbm.get("gbps"))
        fig.hbm_error = _str(hbm.get("error"))
        b = hbm.get("bytes")
        fig.hbm_bytes = b if isinstance(b, int) and not isinstance(b, bool) else None
    return fig


def _gpu_burn_tool(ctx: "ProbeContext") -> Optional[str]:
    for name in ("gpu_burn", "gpu-burn"):
        path = ctx.which(name)
        if path:
            return path
    return None


def _gpu_burn(ctx: "ProbeContext", p: StressProfile) -> BurnRun:
    from clusterkit.errors import ParseError
    from clusterkit.parsers.gpu_burn import parse_gpu_burn

    run = BurnRun()
    path = _gpu_burn_tool(ctx)
    if path is None:
        run.skipped = "gpu_burn not found on PATH (wilicc/gpu-burn is not installed)"
        return run
    left = _time_left(ctx)
    seconds = int(min(float(p.seconds), 0.4 * (left - BURN_OVERHEAD_S)))
    if seconds < BURN_MIN_S:
        run.error = (f"no time left for gpu_burn ({max(0.0, left):.0f} s of node-check's deadline left); "
                     "give node-check a longer --deadline (validate: --timeout)")
        return run
    run.seconds = seconds
    argv = [path]
    # gpu_burn reads its compare kernel from ./compare.ptx unless told: use the one beside it
    ptx = os.path.join(os.path.dirname(os.path.realpath(path)), "compare.ptx")
    if os.path.isfile(ptx):
        argv += ["-c", ptx]
    argv.append(str(seconds))
    run.argv = argv
    timeout = max(1.0, min(left, seconds + BURN_OVERHEAD_S))
    r = ctx.run_tool(argv, timeout=timeout)
    run.duration_s = r.duration_s
    if r.missing:
        run.skipped = f"gpu_burn could not be started: {_tail(r)}"
        return run
    text = r.stdout + ("\n" + r.stderr if r.stderr else "")
    try:
        out = parse_gpu_burn(text)
    except ParseError as e:
        why = f"did not finish within {timeout:.0f} s" if r.timed_out else f"gave no result (exit {r.rc})"
        run.error = f"gpu_burn {why}: {' '.join(text.split())[-300:] or e}"
        return run
    run.complete = out.complete
    run.gpus = [BurnGpu(index=g.index, status=g.status, errors=g.errors, died=g.died, gflops=g.gflops)
                for g in out.gpus]
    if r.timed_out and not out.complete:
        run.error = f"gpu_burn did not finish within {timeout:.0f} s"
    elif out.error:
        run.error = f"gpu_burn: {out.error}" + (f" (exit {r.rc})" if r.rc else "")
    return run


def _dcgm(ctx: "ProbeContext", p: StressProfile) -> DcgmRun:
    from clusterkit.errors import ParseError
    from clusterkit.parsers.dcgmi import parse_dcgmi_diag

    run = DcgmRun(level=p.dcgm_level)
    path = ctx.which("dcgmi")
    if path is None:
        run.skipped = "dcgmi not found on PATH (DCGM is not installed)"
        return run
    left = _time_left(ctx)
    if left < DCGM_MIN_S:
        run.error = (f"no time left for dcgmi diag -r {p.dcgm_level} ({max(0.0, left):.0f} s of node-check's "
                     "deadline left); give node-check a longer --deadline (validate: --timeout)")
        return run
    run.argv = ["dcgmi", "diag", "-r", str(p.dcgm_level), "-j"]
    r = ctx.run_tool(run.argv, timeout=left)
    run.duration_s = r.duration_s
    if r.missing:
        run.skipped = f"dcgmi could not be started: {_tail(r)}"
        return run
    if r.timed_out:
        run.error = (f"dcgmi diag -r {p.dcgm_level} did not finish within {left:.0f} s (level "
                     f"{p.dcgm_level} {DCGM_TAKES.get(p.dcgm_level, 'takes long')}): give node-check a longer "
                     "--deadline (validate: --timeout)")
        return run
    text = r.stdout if r.stdout.strip() else r.stderr
    try:
        out = parse_dcgmi_diag(text)
    except ParseError:
        run.error = f"dcgmi diag gave no result (exit {r.rc}): {_tail(r)}"
        return run
    run.version = out.dcgm_version
    for t in out.tests:
        detail = "; ".join(t.warnings) or t.info
        run.tests.append(DcgmTest(name=t.name, category=t.category, gpu=t.gpu, result=t.result,
                                  detail=" ".join(detail.split())[:400] if detail else None))
    if out.error and not out.tests:
        run.error = f"dcgmi diag could not run (exit {r.rc}): {out.error}"
    return run


# ------------------------------------------------------------------------------------- judge
def judge(m: StressMeasurement, profile: Profile) -> list[CheckResult]:
    """Pure verdicts. Total: what was not measured is ``error`` (could not run) or ``skip`` (the
    tool or library is not there), never a crash and never a ``fail``."""
    if not m.requested:
        return []
    if m.no_gpus:
        return [CheckResult(check="stress", status=Status.SKIP, message=f"profile {profile.name} expects no GPUs")]
    p = profile.stress or StressProfile()
    out: list[CheckResult] = []
    if "stress.gemm" in m.requested:
        out.extend(judge_figures(m, "stress.gemm", p.gemm_tflops_min, p.sibling_rel_min, profile.name))
    if "stress.hbm" in m.requested:
        out.extend(judge_figures(m, "stress.hbm", p.hbm_gbps_min, p.sibling_rel_min, profile.name))
    if "stress.gpu_burn" in m.requested:
        out.extend(judge_gpu_burn(m.gpu_burn, m.gpu_count))
    if "stress.dcgm" in m.requested:
        out.extend(judge_dcgm(m.dcgm))
    return out


_FIG = {
    "stress.gemm": ("gemm_tflops", "gemm_error", "TFLOPS", "bf16 GEMM"),
    "stress.hbm": ("hbm_gbps", "hbm_error", "GB/s", "device-to-device copy"),
}


def _fmt(v: float) -> str:
    return f"{v:,.1f}".rstrip("0").rstrip(".") if v < 100 else f"{v:,.0f}"


def judge_figures(m: StressMeasurement, check: str, floor: Optional[float], rel: float,
                  pname: str) -> list[CheckResult]:
    """Per GPU: ``fail`` below the floor, or below ``rel`` x the median of the node's other
    measured GPUs (one GPU well below its siblings is flagged even above the floor)."""
    field, err_field, unit, what = _FIG[check]
    values = {g.index: getattr(g, field) for g in m.gpus if getattr(g, field) is not None}
    out: list[CheckResult] = []
    for g in m.gpus:
        at = on_gpu(g.index)
        v = getattr(g, field)
        if g.skipped:
            out.append(CheckResult(check=check, **at, status=Status.SKIP,
                                   message=f"not measured: {g.skipped}"))
            continue
        if v is None:
            why = getattr(g, err_field) or g.error or "the worker gave no figure"
            out.append(CheckResult(check=check, **at, status=Status.ERROR, message=f"{what}: {why}"))
            continue
        how = f" ({g.gemm_dtype} {'x'.join(map(str, g.gemm_shape))})" if check == "stress.gemm" and \
            g.gemm_shape and g.gemm_dtype else ""
        if check == "stress.gemm" and g.gemm_finite is False:
            out.append(CheckResult(check=check, **at, status=Status.FAIL, value=v, unit=unit,
                                   message=f"{what}{how}: the product held NaN or Inf from random inputs: "
                                           "the GPU computes wrong results"))
            continue
        others = [x for i, x in values.items() if i != g.index]
        ref = float(statistics.median(others)) if others else None
        if floor is not None and v < floor:
            out.append(CheckResult(check=check, **at, status=Status.FAIL, value=v, threshold=floor,
                                   unit=unit, message=f"{_fmt(v)} {unit} {what}{how}, below the {_fmt(floor)} {unit} "
                                                      f"floor of profile {pname}"))
        elif ref is not None and v < rel * ref:
            out.append(CheckResult(check=check, **at, status=Status.FAIL, value=v,
                                   threshold=round(rel * ref, 1), unit=unit,
                                   message=f"{_fmt(v)} {unit} {what}{how}, {v / ref:.0%} of the node's other GPUs "
                                           f"(median {_fmt(ref)} {unit}; flagged below {rel:g} x)"))
        else:
            note = "" if floor is not None else f" (profile {pname} sets no floor)"
            out.append(CheckResult(check=check, **at, status=Status.PASS, value=v, threshold=floor,
                                   unit=unit, message=f"{_fmt(v)} {unit} {what}{how}{note}"))
    return out


def judge_gpu_burn(run: Optional[BurnRun], count: Optional[int] = None) -> list[CheckResult]:
    check = "stress.gpu_burn"
    if run is None:
        return [CheckResult(check=check, status=Status.ERROR, message="gpu_burn was not run")]
    if run.skipped:
        return [CheckResult(check=check, status=Status.SKIP, message=run.skipped)]
    out: list[CheckResult] = []
    bad_seen = False
    for g in run.gpus:
        at = on_gpu(g.index)
        problems = []
        if g.status == "FAULTY":
            problems.append("FAULTY: its results differ from the other GPUs' (wrong arithmetic)")
        if g.errors:
            problems.append(f"{g.errors} compute error{'s' if g.errors != 1 else ''}")
        if g.died:
            problems.append("its burn process died")
        if problems:
            bad_seen = True
            out.append(CheckResult(check=check, **at, status=Status.FAIL, value=g.errors,
                                   message=f"gpu_burn on GPU {g.index}: {'; '.join(problems)}"))
        elif g.status == "OK" and not run.error:
            rate = f", {g.gflops:,.0f} Gflop/s" if g.gflops is not None else ""
            out.append(CheckResult(check=check, **at, status=Status.PASS, value=g.gflops, unit="Gflop/s",
                                   message=f"gpu_burn {run.seconds} s: OK, 0 errors{rate}"))
    if run.error:
        # incomplete: the GPUs without evidence against them are unknown
        judged = {r.gpu for r in out}
        missing = [g for g in run.gpus if g.index not in judged]
        if missing:
            for g in missing:
                out.append(CheckResult(check=check, **on_gpu(g.index), status=Status.ERROR, message=run.error))
        elif not bad_seen or not run.gpus:
            out.append(CheckResult(check=check, status=Status.ERROR, message=run.error))
        return out
    if not run.gpus:
        return [CheckResult(check=check, status=Status.ERROR, message="gpu_burn reported no GPU")]
    seen = {g.index for g in run.gpus}
    for i in range(count or 0):
        if i not in seen:
            out.append(CheckResult(check=check, **on_gpu(i), status=Status.ERROR,
                                   message=f"gpu_burn did not test GPU {i} (it saw {len(seen)})"))
    return out


def is_hardware(t: DcgmTest) -> bool:
    """A hardware plugin (memory, PCIe, diagnostic, targeted stress/power, memory bandwidth, …),
    not one of the Deployment / software checks."""
    if t.category is not None and t.category.strip().lower() in SOFTWARE_CATEGORIES:
        return False
    return t.name.strip().lower() not in SOFTWARE_TESTS


_RAN = ("Pass", "Warn", "Fail")


def judge_dcgm(run: Optional[DcgmRun]) -> list[CheckResult]:
    check = "stress.dcgm"
    if run is None:
        return [CheckResult(check=check, status=Status.ERROR, message="dcgmi diag was not run")]
    if run.skipped:
        return [CheckResult(check=check, status=Status.SKIP, message=run.skipped)]
    if run.error:
        return [CheckResult(check=check, status=Status.ERROR, message=run.error)]
    head = f"dcgmi diag -r {run.level}"
    out: list[CheckResult] = []
    # failures, per GPU (a test of the whole node: no subject)
    fails: dict[Optional[int], list[DcgmTest]] = {}
    for t in run.tests:
        if t.result == "Fail":
            fails.setdefault(t.gpu, []).append(t)
    for gpu, tests in sorted(fails.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
        names = ", ".join(dict.fromkeys(t.name for t in tests))
        details = "; ".join(dict.fromkeys(t.detail for t in tests if t.detail))
        where = f" on GPU {gpu}" if gpu is not None else ""
        out.append(CheckResult(check=check, **(on_gpu(gpu) if gpu is not None else Subject()), status=Status.FAIL,
                               value=names, message=f"{head}: {names} failed{where}" +
                                                    (f": {details}" if details else "")))
    hardware = [t for t in run.tests if is_hardware(t)]
    ran = [t for t in hardware if t.result in _RAN]
    if not ran:
        if not out:
            skipped = ", ".join(dict.fromkeys(f"{t.name} ({t.result})" for t in hardware)) or "none in this level"
            out.append(CheckResult(check=check, status=Status.ERROR,
                                   message=f"{head}: nothing was tested: no hardware plugin ran "
                                           f"(hardware plugins: {skipped})"))
        return out
    by_gpu: dict[int, list[DcgmTest]] = {}
    node_wide: list[DcgmTest] = []
    for t in hardware:
        if t.gpu is None:
            node_wide.append(t)
        else:
            by_gpu.setdefault(t.gpu, []).append(t)
    for gpu in sorted(by_gpu):
        if gpu in fails:
            continue
        tests = by_gpu[gpu]
        done = [t for t in tests if t.result in _RAN]
        odd = [t for t in tests if t.result not in _RAN + ("Skip", "Not Run")]
        warns = [t for t in done if t.result == "Warn"]
        at = on_gpu(gpu)
        if odd:
            out.append(CheckResult(check=check, **at, status=Status.ERROR,
                                   message=f"{head}: " + ", ".join(f"{t.name} reported {t.result!r}" for t in odd)))
        elif not done:
            out.append(CheckResult(check=check, **at, status=Status.ERROR,
                                   message=f"{head}: nothing was tested on GPU {gpu}: every hardware plugin skipped "
                                           f"({', '.join(t.name for t in tests)})"))
        elif warns:
            out.append(CheckResult(check=check, **at, status=Status.WARN, value=len(done),
                                   message=f"{head}: " + "; ".join(f"{t.name} warned" + (f": {t.detail}" if t.detail
                                                                                        else "") for t in warns)))
        else:
            out.append(CheckResult(check=check, **at, status=Status.PASS, value=len(done),
                                   message=f"{head}: {', '.join(t.name for t in done)} passed"))
    if not by_gpu and None not in fails:
        odd = [t for t in node_wide if t.result not in _RAN + ("Skip", "Not Run")]
        warns = [t for t in node_wide if t.result == "Warn"]
        if odd:
            out.append(CheckResult(check=check, status=Status.ERROR,
                                   message=f"{head}: " + ", ".join(f"{t.name} reported {t.result!r}" for t in odd)))
        else:
            out.append(CheckResult(check=check, status=Status.WARN if warns else Status.PASS,
                                   message=f"{head}: {', '.join(t.name for t in ran)} "
                                           f"{'warned' if warns else 'passed'}"))
    return out


# ------------------------------------------------------------------------------------- facts
def facts(m: StressMeasurement) -> dict[str, Any]:
    out: dict[str, Any] = {}
    backends = sorted({g.backend for g in m.gpus if g.backend})
    if backends:
        out["stress_backend"] = ", ".join(backends)
    if m.dcgm is not None and m.dcgm.version:
        out["dcgm_version"] = m.dcgm.version
    return out
