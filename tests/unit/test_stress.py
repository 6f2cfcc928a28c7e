"""The stress domain: its judges (floor, sibling rule, totality), the worker's JSON contract, and
the probe driving fake dcgmi / gpu_burn / worker executables through the real tool runner."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest

from clusterkit.models import Status
from clusterkit.profiles import StressProfile, load_profile
from clusterkit.validate import stress, stress_worker
from clusterkit.validate.context import ProbeContext, ToolResult
from clusterkit.validate.registry import node_checks, select
from clusterkit.validate.stress import (BurnGpu, BurnRun, DcgmRun, DcgmTest, GpuFigures, StressMeasurement,
                                        judge, judge_dcgm, judge_figures, judge_gpu_burn, read_worker)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
H100 = load_profile("h100-sxm")
ALL = list(stress.STRESS_CHECKS)


def statuses(results: list) -> dict[tuple[str, Optional[str]], str]:
    return {(r.check, r.subject): r.status.value for r in results}


def figures(gemm: list[Optional[float]], hbm: Optional[list[Optional[float]]] = None) -> StressMeasurement:
    hbm = hbm if hbm is not None else [3000.0] * len(gemm)
    return StressMeasurement(requested=["stress.gemm", "stress.hbm"], gpu_count=len(gemm),
                             gpus=[GpuFigures(index=i, gemm_tflops=g, hbm_gbps=h, gemm_dtype="bfloat16",
                                              gemm_shape=[8192, 8192, 8192], gemm_finite=True)
                                   for i, (g, h) in enumerate(zip(gemm, hbm))])


# ------------------------------------------------------------------------------- opt-in
def test_opt_in_from_the_flag_and_from_checks():
    assert stress.opt_in(False, None) == frozenset()
    assert stress.opt_in(True, None) == frozenset(ALL)
    assert stress.opt_in(False, ["stress"]) == frozenset(ALL)
    assert stress.opt_in(False, ["gpu", "stress.gemm"]) == {"stress.gemm"}
    assert stress.opt_in(True, ["stress.dcgm", "stress.hbm"]) == {"stress.dcgm", "stress.hbm"}
    assert stress.opt_in(True, ["gpu"]) == frozenset(ALL)  # the domain is not selected: nothing runs
    assert stress.opt_in(False, ["gpu", "ib.write_bw"]) == frozenset()


def test_registry_lists_the_stress_ids_and_selects_them():
    ids = node_checks()
    assert {"stress.gemm", "stress.hbm", "stress.dcgm", "stress.gpu_burn", "stress.probe"} <= set(ids)
    sel = select(["stress.gemm"])
    assert sel.domains == ["stress"] and sel.keeps("stress.gemm") and not sel.keeps("stress.hbm")


def test_not_asked_for_nothing_runs_and_nothing_is_reported(tmp_path):
    ctx = ProbeContext.around(tool_path=[str(tmp_path)])  # no opt-in
    m = stress.probe(ctx, H100)
    assert m.requested == [] and m.gpus == [] and m.dcgm is None and m.gpu_burn is None
    assert judge(m, H100) == []
    assert ctx.procs._running == set()


def test_profiles_carry_stress_floors_and_refuse_level_1():
    h200 = load_profile("h200-sxm")
    assert H100.stress is not None and h200.stress is not None
    assert (H100.stress.gemm_tflops_min, H100.stress.hbm_gbps_min) == (650, 2400)
    assert (h200.stress.gemm_tflops_min, h200.stress.hbm_gbps_min) == (650, 3300)
    assert H100.stress.sibling_rel_min == 0.9 and H100.stress.dcgm_level == 2
    with pytest.raises(Exception):
        StressProfile(dcgm_level=1)
    with pytest.raises(Exception):
        StressProfile(sibling_rel_min=1.5)


# ------------------------------------------------------------------------------- figures
def test_floor_fails_one_gpu_and_passes_the_rest():
    m = figures([790.0, 795.0, 788.0, 500.0, 792.0, 791.0, 789.0, 794.0])
    res = judge(m, H100)
    st = statuses(res)
    assert st[("stress.gemm", "gpu3")] == "fail"
    assert [k for k, v in st.items() if v != "pass"] == [("stress.gemm", "gpu3")]
    bad = next(r for r in res if r.subject == "gpu3" and r.check == "stress.gemm")
    assert bad.value == 500.0 and bad.threshold == 650 and bad.unit == "TFLOPS"
    assert "below the 650 TFLOPS floor of profile h100-sxm" in bad.message
    good = next(r for r in res if r.subject == "gpu0" and r.check == "stress.gemm")
    assert good.message.startswith("790 TFLOPS bf16 GEMM (bfloat16 8192x8192x8192)")


def test_one_gpu_well_below_its_siblings_fails_even_above_the_floor():
    m = figures([790.0, 690.0, 788.0, 793.0, 792.0, 791.0, 789.0, 794.0],
                hbm=[3000.0, 3010.0, 2990.0, 3005.0, 2995.0, 3002.0, 2500.0, 3001.0])
    res = judge(m, H100)
    assert {k: v for k, v in statuses(res).items() if v != "pass"} == {
        ("stress.gemm", "gpu1"): "fail", ("stress.hbm", "gpu6"): "fail"}
    gemm = next(r for r in res if r.subject == "gpu1" and r.check == "stress.gemm")
    assert gemm.value == 690.0 and gemm.value > H100.stress.gemm_tflops_min
    assert "87% of the node's other GPUs (median 791 TFLOPS; flagged below 0.9 x)" in gemm.message
    assert gemm.threshold == round(0.9 * 791.0, 1)
    hbm = next(r for r in res if r.subject == "gpu6" and r.check == "stress.hbm")
    assert hbm.unit == "GB/s" and "of the node's other GPUs" in hbm.message


def test_sibling_rule_needs_siblings_and_holds_without_a_floor():
    p = StressProfile()  # no floors
    m = figures([400.0])
    assert [r.status for r in judge_figures(m, "stress.gemm", p.gemm_tflops_min, 0.9, "x")] == [Status.PASS]
    m = figures([400.0, 800.0])
    st = {r.subject: r.status for r in judge_figures(m, "stress.gemm", None, 0.9, "x")}
    assert st == {"gpu0": Status.FAIL, "gpu1": Status.PASS}
    # half the GPUs slow: the slow ones are flagged, the fast ones are not
    m = figures([500.0] * 4 + [800.0] * 4)
    st = {r.subject: r.status for r in judge_figures(m, "stress.gemm", None, 0.9, "x")}
    assert [st[f"gpu{i}"] for i in range(8)] == [Status.FAIL] * 4 + [Status.PASS] * 4


def test_a_product_with_nan_fails_as_wrong_arithmetic():
    m = figures([790.0, 791.0])
    m.gpus[1].gemm_finite = False
    r = next(r for r in judge(m, H100) if r.subject == "gpu1" and r.check == "stress.gemm")
    assert r.status is Status.FAIL and "NaN or Inf" in r.message


def test_figures_are_total_unknown_is_error_or_skip_never_fail():
    """Every combination of unread fields: never a crash, never a fail."""
    options: dict[str, list[Any]] = {
        "gemm_tflops": [None], "hbm_gbps": [None], "skipped": [None, "no torch"], "error": [None, "boom"],
        "gemm_error": [None, "OOM"], "hbm_error": [None, "OOM"], "gemm_finite": [None, True],
        "gemm_shape": [None, [1, 2, 3]], "gemm_dtype": [None, "bfloat16"],
    }
    keys = list(options)
    for combo in itertools.product(*options.values()):
        fields = dict(zip(keys, combo))
        m = StressMeasurement(requested=ALL, gpu_count=2,
                              gpus=[GpuFigures(index=0, **fields), GpuFigures(index=1, gemm_tflops=800.0,
                                                                              hbm_gbps=3000.0)],
                              dcgm=DcgmRun(level=2), gpu_burn=BurnRun())
        res = judge(m, H100)
        mine = [r for r in res if r.subject == "gpu0" and r.check in ("stress.gemm", "stress.hbm")]
        assert len(mine) == 2
        want = Status.SKIP if fields["skipped"] else Status.ERROR
        assert {r.status for r in mine} == {want}, (fields, mine)
    # an empty measurement that asked for everything: errors, nothing else
    res = judge(StressMeasurement(requested=ALL, gpu_count=8), H100)
    assert {r.status for r in res} == {Status.ERROR} and {r.check for r in res} == {"stress.dcgm", "stress.gpu_burn"}


def test_profile_without_gpus_skips():
    prof = H100.model_copy(update={"gpu": None})
    m = stress.probe(ProbeContext.around(opt_in=frozenset(ALL)), prof)
    assert [(r.check, r.status) for r in judge(m, prof)] == [("stress", Status.SKIP)]


# ------------------------------------------------------------------------- worker contract
class FakeBackend(stress_worker.Backend):
    """A 'GPU' whose product of (m, n, k) takes m*n*k*2 / rate seconds, and whose copy of
    b bytes takes 2*b / bw seconds."""

    name = "fake 1.0"
    dtype = "bfloat16"

    def __init__(self, tflops: float = 800.0, gbps: float = 4000.0, fail: Optional[str] = None,
                 finite: bool = True) -> None:
        self.tflops, self.gbps, self.fail, self.finite = tflops, gbps, fail, finite
        self.cost_ms = 0.0
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {"device": "Fake H100", "pci_bus_id": "0000:18:00.0"}

    def free_bytes(self) -> Optional[int]:
        return 80 * 1024**3

    def gemm(self, m: int, n: int, k: int) -> tuple[Callable[[], None], Callable[[], bool]]:
        if self.fail == "gemm":
            raise RuntimeError("CUDA out of memory")
        self.cost_ms = 2.0 * m * n * k / (self.tflops * 1e12) * 1000

        def run() -> None:
            self.calls += 1

        return run, lambda: self.finite

    def copy(self, nbytes: int) -> Callable[[], None]:
        if self.fail == "hbm":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        self.cost_ms = 2.0 * nbytes / (self.gbps * 1e9) * 1000

        def run() -> None:
            self.calls += 1

        return run

    def time_ms(self, fn: Callable[[], None], iters: int) -> float:
        for _ in range(iters):
            fn()
        return self.cost_ms * iters


def test_worker_measures_best_shape_median_and_copy_bandwidth():
    be = FakeBackend(tflops=800.0, gbps=4000.0)
    doc, rc = stress_worker.run(0, 2.0, ["gemm", "hbm"], loader=lambda g: (be, None))
    assert rc == 0 and doc["schema"] == stress_worker.SCHEMA and doc["gpu"] == 0
    assert doc["backend"] == "fake 1.0" and doc["device"] == "Fake H100" and doc["error"] is None
    assert doc["gemm"]["tflops"] == 800.0 and doc["gemm"]["dtype"] == "bfloat16" and doc["gemm"]["finite"] is True
    assert [s["shape"] for s in doc["gemm"]["shapes"]] == [list(s) for s in stress_worker.GEMM_SHAPES]
    assert doc["hbm"]["gbps"] == 4000.0 and doc["hbm"]["bytes"] == stress_worker.HBM_BYTES
    line = stress_worker.dumps(doc)
    assert "\n" not in line and json.loads(line) == doc
    # the probe reads it back
    fig = read_worker(0, ToolResult(argv=["w"], rc=0, stdout="noise\n" + line + "\n", stderr="", duration_s=1.0), 60)
    assert (fig.gemm_tflops, fig.hbm_gbps, fig.gemm_shape, fig.backend, fig.error) == (
        800.0, 4000.0, [8192, 8192, 8192], "fake 1.0", None)


def test_worker_test_errors_skips_and_no_library():
    doc, rc = stress_worker.run(1, 1.0, ["gemm", "hbm"], loader=lambda g: (FakeBackend(fail="hbm"), None))
    assert rc == 1 and doc["gemm"]["tflops"] == 800.0 and "illegal memory access" in doc["hbm"]["error"]
    doc, rc = stress_worker.run(1, 1.0, ["gemm"], loader=lambda g: (None, "neither torch nor cupy"))
    assert rc == 0 and doc["skipped"] == "neither torch nor cupy" and doc["gemm"] is None

    def broken(g: int) -> Any:
        raise RuntimeError("torch sees 4 GPUs: no GPU 6")

    doc, rc = stress_worker.run(6, 1.0, ["hbm"], loader=broken)
    assert rc == 1 and doc["error"] == "RuntimeError: torch sees 4 GPUs: no GPU 6" and doc["hbm"] is None
    doc, rc = stress_worker.run(0, 1.0, ["gemm"], loader=lambda g: (FakeBackend(finite=False), None))
    assert doc["gemm"]["finite"] is False
    assert stress_worker.dumps({"x": float("nan")}) == '{"x":null}'


def test_load_backend_picks_torch_then_cupy_and_explains_a_skip(monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):  # recorded, so undone after the test
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)

    def none(name: str) -> Any:
        raise ImportError(f"No module named '{name}'")

    be, why = stress_worker.load_backend(3, importer=none)
    assert be is None and "No module named 'torch'" in why and "No module named 'cupy'" in why
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cpu_torch = SimpleNamespace(__version__="2.5.0+cpu", version=SimpleNamespace(cuda=None))
    be, why = stress_worker.load_backend(0, importer=lambda n: cpu_torch if n == "torch" else none(n))
    assert be is None and "CPU-only build" in why
    # a Slurm step that restricts the GPUs: the index is into that list
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    cuda_torch = SimpleNamespace(__version__="2.5.0", version=SimpleNamespace(cuda="12.4"),
                                 cuda=SimpleNamespace(device_count=lambda: 2))
    with pytest.raises(RuntimeError, match="torch sees 2 GPUs: no GPU 5"):
        stress_worker.load_backend(5, importer=lambda n: cuda_torch)


def test_worker_module_on_this_machine_prints_one_json_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERKIT_", "CUDA_"))}
    p = subprocess.run([sys.executable, "-m", "clusterkit.validate.stress_worker", "--gpu", "0", "--seconds", "1"],
                       capture_output=True, text=True, env=env, timeout=120)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stdout + p.stderr
    doc = json.loads(lines[0])
    assert doc["schema"] == "clusterkit.stress-worker/v1" and doc["gpu"] == 0
    if importlib.util.find_spec("torch") is None and importlib.util.find_spec("cupy") is None:
        assert p.returncode == 0 and doc["gemm"] is None and doc["hbm"] is None
        assert doc["skipped"].startswith("neither torch nor cupy can be used by")
    bad = subprocess.run([sys.executable, "-m", "clusterkit.validate.stress_worker", "--gpu", "x"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""


def test_read_worker_is_tolerant():
    def r(stdout: str = "", rc: int = 0, timed_out: bool = False, missing: bool = False) -> ToolResult:
        return ToolResult(argv=["w"], rc=rc, stdout=stdout, stderr="Traceback ... Segmentation fault",
                          duration_s=1.0, timed_out=timed_out, missing=missing)

    assert "did not finish within 55 s" in read_worker(0, r(timed_out=True, rc=-9), 55).error
    assert "could not be started" in read_worker(0, r(missing=True, rc=127), 5).error
    assert "gave no result (exit 139)" in read_worker(0, r(stdout="garbage", rc=139), 5).error
    assert "spoke 'other/v9'" in read_worker(0, r(stdout='{"schema": "other/v9"}'), 5).error
    odd = {"schema": stress_worker.SCHEMA, "gpu": 0, "gemm": {"tflops": "fast", "shape": [1, True], "finite": 1},
           "hbm": {"gbps": float("inf"), "bytes": "x"}, "backend": 7, "skipped": ""}
    fig = read_worker(0, r(stdout=json.dumps(odd)), 5)
    assert (fig.gemm_tflops, fig.gemm_shape, fig.gemm_finite, fig.hbm_gbps, fig.hbm_bytes, fig.backend,
            fig.skipped) == (None, None, None, None, None, None, None)
    res = judge(StressMeasurement(requested=["stress.gemm"], gpus=[fig]), H100)
    assert [(x.status, x.message) for x in res] == [(Status.ERROR, "bf16 GEMM: the worker gave no figure")]


# ------------------------------------------------------------------- probe with fake tools
def fake_tool(directory: Path, name: str, stdout: str = "", rc: int = 0, sleep: float = 0.0,
              argv_log: Optional[Path] = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f".{name}.out"
    data.write_text(stdout)
    path = directory / name
    log = f"with open({str(argv_log)!r}, 'a') as fh: fh.write(json.dumps(sys.argv[1:]) + '\\n')\n" if argv_log else ""
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n{log}time.sleep({sleep})\n"
                    f"sys.stdout.write(open({str(data)!r}).read())\nsys.exit({rc})\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def ctx_for(tools: Path, checks: list[str], deadline_s: float = 60.0) -> ProbeContext:
    return ProbeContext.around(tool_path=[str(tools)], opt_in=frozenset(checks), deadline_s=deadline_s)


@pytest.fixture
def no_path(tmp_path, monkeypatch):
    """PATH without dcgmi or gpu_burn, whatever this machine has installed."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def dcgm_doc(tests: list[tuple[str, str, list[tuple[Optional[int], str, Optional[str]]]]]) -> str:
    """A DCGM 3.x ``dcgmi diag -j`` document: (category, test, [(gpu, status, warning)])."""
    cats: dict[str, list[Any]] = {}
    for category, name, results in tests:
        rows = []
        for gpu, status, warning in results:
            row: dict[str, Any] = {"status": status}
            if gpu is not None:
                row["gpu_ids"] = str(gpu)
            if warning:
                row["warnings"] = [{"warning": warning, "error_id": 22, "error_category": 3, "error_severity": 2}]
            rows.append(row)
        cats.setdefault(category, []).append({"name": name, "results": rows})
    return json.dumps({"DCGM GPU Diagnostic": {"version": "3.3.9", "test_categories": [
        {"category": c, "tests": t} for c, t in cats.items()]}}, indent=1)


DEPLOYMENT = [("Deployment", n, [(None, "Pass", None)]) for n in ("Denylist", "NVML Library", "Persistence Mode")]


def test_dcgm_failed_plugin_fails_naming_the_gpu_and_the_test(tmp_path, no_path):
    warning = "A memory mismatch was detected on GPU 1, but no error was reported by CUDA or ECC."
    text = dcgm_doc(DEPLOYMENT + [
        ("Integration", "PCIe", [(0, "Pass", None), (1, "Pass", None)]),
        ("Hardware", "GPU Memory", [(0, "Pass", None), (1, "Fail", warning)]),
    ])
    log = tmp_path / "argv.log"
    fake_tool(tmp_path / "tools", "dcgmi", text, rc=226, argv_log=log)
    ctx = ctx_for(tmp_path / "tools", ["stress.dcgm"])
    m = stress.probe(ctx, H100)
    assert json.loads(log.read_text()) == ["diag", "-r", "2", "-j"]
    res = judge(m, H100)
    assert statuses(res) == {("stress.dcgm", "gpu1"): "fail", ("stress.dcgm", "gpu0"): "pass"}
    bad = next(r for r in res if r.status is Status.FAIL)
    assert bad.message == f"dcgmi diag -r 2: GPU Memory failed on GPU 1: {warning}"
    assert bad.value == "GPU Memory"
    assert next(r for r in res if r.status is Status.PASS).message == "dcgmi diag -r 2: PCIe, GPU Memory passed"
    assert stress.facts(m) == {"dcgm_version": "3.3.9"}


def test_dcgm_every_hardware_plugin_skipped_is_error_never_pass(tmp_path, no_path):
    skipped = dcgm_doc(DEPLOYMENT + [
        ("Integration", "PCIe", [(0, "Skip", None), (1, "Skip", None)]),
        ("Hardware", "GPU Memory", [(0, "Skip", None), (1, "Not Run", None)]),
    ])
    fake_tool(tmp_path / "tools", "dcgmi", skipped)
    res = judge(stress.probe(ctx_for(tmp_path / "tools", ["stress.dcgm"]), H100), H100)
    assert [(r.check, r.subject, r.status) for r in res] == [("stress.dcgm", None, Status.ERROR)]
    assert "nothing was tested" in res[0].message and "GPU Memory (Skip)" in res[0].message
    # deployment checks only (what -r 1 runs): nothing was tested either
    fake_tool(tmp_path / "tools", "dcgmi", dcgm_doc(DEPLOYMENT))
    res = judge(stress.probe(ctx_for(tmp_path / "tools", ["stress.dcgm"]), H100), H100)
    assert [r.status for r in res] == [Status.ERROR] and "nothing was tested" in res[0].message
    # one GPU's plugins all skipped while the others ran: that GPU is error
    partly = dcgm_doc(DEPLOYMENT + [("Hardware", "GPU Memory", [(0, "Pass", None), (1, "Skip", None)])])
    fake_tool(tmp_path / "tools", "dcgmi", partly)
    res = judge(stress.probe(ctx_for(tmp_path / "tools", ["stress.dcgm"]), H100), H100)
    assert statuses(res) == {("stress.dcgm", "gpu0"): "pass", ("stress.dcgm", "gpu1"): "error"}


def test_dcgm_deployment_failure_warn_and_the_real_fixture(tmp_path, no_path):
    text = dcgm_doc([("Deployment", "Persistence Mode", [(None, "Fail", "Persistence mode for GPU 0 is disabled")]),
                     ("Hardware", "GPU Memory", [(0, "Pass", None), (1, "Warn", "GPU 1 slow allocation")])])
    fake_tool(tmp_path / "tools", "dcgmi", text)
    res = judge(stress.probe(ctx_for(tmp_path / "tools", ["stress.dcgm"]), H100), H100)
    assert statuses(res) == {("stress.dcgm", None): "fail", ("stress.dcgm", "gpu0"): "pass",
                             ("stress.dcgm", "gpu1"): "warn"}
    assert "Persistence Mode failed: Persistence mode for GPU 0 is disabled" in res[0].message
    fixture = (FIXTURES / "dcgmi" / "dcgmi_diag_r3_json_tesla_t4_pass.json").read_text()
    fake_tool(tmp_path / "tools", "dcgmi", fixture)
    res = judge(stress.probe(ctx_for(tmp_path / "tools", ["stress.dcgm"]), H100), H100)
    assert statuses(res) == {("stress.dcgm", "gpu0"): "pass"}
    assert "Diagnostic" in res[0].message and "EUD Test" not in res[0].message


def test_dcgm_cannot_run_is_error_missing_is_skip(tmp_path, no_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    res = judge(stress.probe(ctx_for(tools, ["stress.dcgm"]), H100), H100)
    assert [(r.status, r.message) for r in res] == [(Status.SKIP, "dcgmi not found on PATH (DCGM is not installed)")]
    fake_tool(tools, "dcgmi", "Error: unable to establish a connection to the specified host: localhost\n"
                             "Error: Unable to connect to host engine. Host engine connection invalid/disconnected.\n",
              rc=255)
    res = judge(stress.probe(ctx_for(tools, ["stress.dcgm"]), H100), H100)
    assert [r.status for r in res] == [Status.ERROR]
    assert res[0].message.startswith("dcgmi diag could not run (exit 255): Error: Unable to connect to host engine")
    fake_tool(tools, "dcgmi", "Segmentation fault\n", rc=139)
    res = judge(stress.probe(ctx_for(tools, ["stress.dcgm"]), H100), H100)
    assert [r.status for r in res] == [Status.ERROR] and "gave no result (exit 139)" in res[0].message
    runtime = json.dumps({"DCGM GPU Diagnostic": {"runtime_error": "Error: GPUs are in use by another process",
                                                  "version": "3.3.9"}})
    fake_tool(tools, "dcgmi", runtime, rc=1)
    res = judge(stress.probe(ctx_for(tools, ["stress.dcgm"]), H100), H100)
    assert [(r.status, r.message) for r in res] == [
        (Status.ERROR, "dcgmi diag could not run (exit 1): Error: GPUs are in use by another process")]


def test_dcgm_out_of_time_is_error(tmp_path, no_path):
    fake_tool(tmp_path / "tools", "dcgmi", dcgm_doc(DEPLOYMENT), sleep=30)
    started = time.monotonic()
    ctx = ctx_for(tmp_path / "tools", ["stress.dcgm"], deadline_s=12.2)
    res = judge(stress.probe(ctx, H100), H100)
    assert time.monotonic() - started < 12.2
    assert [r.status for r in res] == [Status.ERROR] and "did not finish within" in res[0].message
    assert "--deadline" in res[0].message
    # too little left to start it at all
    res = judge(stress.probe(ctx_for(tmp_path / "tools", ["stress.dcgm"], deadline_s=5), H100), H100)
    assert [r.status for r in res] == [Status.ERROR] and res[0].message.startswith("no time left for dcgmi diag -r 2")


BURN_OK = (FIXTURES / "gpu-burn" / "gpu_burn_2x_tesla_m4_doubles_360s_ok.txt").read_text()


def test_gpu_burn_faulty_fails_naming_the_gpu(tmp_path, no_path):
    faulty = BURN_OK.replace("errors: 0 - 0   temps: 54 C - 54 C", "errors: 0 - 5   temps: 54 C - 54 C", 1) \
        .replace("GPU 1: OK", "GPU 1: FAULTY")
    log = tmp_path / "argv.log"
    tools = tmp_path / "tools"
    fake_tool(tools, "gpu_burn", faulty, argv_log=log)
    (tools / "compare.ptx").write_text("// ptx\n")
    two = H100.model_copy(update={"gpu": H100.gpu.model_copy(update={"count": 2})})
    m = stress.probe(ctx_for(tools, ["stress.gpu_burn"]), two)
    assert json.loads(log.read_text()) == ["-c", os.path.realpath(tools / "compare.ptx"), "10"]
    res = judge(m, two)
    assert statuses(res) == {("stress.gpu_burn", "gpu0"): "pass", ("stress.gpu_burn", "gpu1"): "fail"}
    bad = next(r for r in res if r.status is Status.FAIL)
    assert bad.message.startswith("gpu_burn on GPU 1: FAULTY") and "5 compute errors" in bad.message
    # healthy
    fake_tool(tools, "gpu_burn", BURN_OK)
    res = judge(stress.probe(ctx_for(tools, ["stress.gpu_burn"]), two), two)
    assert statuses(res) == {("stress.gpu_burn", "gpu0"): "pass", ("stress.gpu_burn", "gpu1"): "pass"}
    assert res[0].unit == "Gflop/s" and res[0].value == 65.0


def test_gpu_burn_missing_incomplete_or_broken_is_never_fail(tmp_path, no_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    res = judge(stress.probe(ctx_for(tools, ["stress.gpu_burn"]), H100), H100)
    assert [r.status for r in res] == [Status.SKIP] and "gpu_burn not found" in res[0].message
    incomplete = BURN_OK.split("done")[0]
    fake_tool(tools, "gpu-burn", incomplete)  # the other name it is installed under
    res = judge(stress.probe(ctx_for(tools, ["stress.gpu_burn"]), H100), H100)
    assert {r.status for r in res} == {Status.ERROR} and {r.subject for r in res} == {"gpu0", "gpu1"}
    assert "incomplete" in res[0].message
    fake_tool(tools, "gpu_burn", "Couldn't init a GPU test: Error in load module (gpu_burn-drv.cpp:239): a PTX "
                                 "JIT compilation failed\n", rc=1)
    res = judge(stress.probe(ctx_for(tools, ["stress.gpu_burn"]), H100), H100)
    assert [r.status for r in res] == [Status.ERROR] and "gave no result (exit 1)" in res[0].message
    # a GPU that died is evidence even in an incomplete run
    died = judge_gpu_burn(BurnRun(seconds=10, error="gpu_burn did not finish within 30 s", complete=False,
                                  gpus=[BurnGpu(index=0, died=True, errors=0), BurnGpu(index=1)]))
    assert statuses(died) == {("stress.gpu_burn", "gpu0"): "fail", ("stress.gpu_burn", "gpu1"): "error"}
    fewer = judge_gpu_burn(BurnRun(seconds=10, complete=True, gpus=[BurnGpu(index=0, status="OK", errors=0)]), 2)
    assert statuses(fewer) == {("stress.gpu_burn", "gpu0"): "pass", ("stress.gpu_burn", "gpu1"): "error"}


def test_judge_dcgm_is_total():
    results = ["Pass", "Fail", "Warn", "Skip", "Not Run", "Unknown", "Weird"]
    for combo in itertools.product(results, repeat=2):
        for gpus in ((None, None), (0, 0), (0, 1)):
            run = DcgmRun(level=2, tests=[DcgmTest(name="GPU Memory", category="Hardware", gpu=g, result=r)
                                          for g, r in zip(gpus, combo)])
            res = judge_dcgm(run)
            assert res, (combo, gpus)
            if "Fail" not in combo:
                assert Status.FAIL not in {r.status for r in res}
            else:
                assert Status.FAIL in {r.status for r in res}
            if set(combo) <= {"Skip", "Not Run"}:
                assert {r.status for r in res} == {Status.ERROR}


# ------------------------------------------------------------------- the whole probe
def test_every_tool_missing_is_skip_never_fail(tmp_path, no_path):
    """No stand-ins, no dcgmi, no gpu_burn, and (here) no torch: skip, with the reason."""
    if importlib.util.find_spec("torch") or importlib.util.find_spec("cupy"):
        pytest.skip("this machine has a GPU library")
    tools = tmp_path / "tools"
    tools.mkdir()
    two = H100.model_copy(update={"gpu": H100.gpu.model_copy(update={"count": 2})})
    m = stress.probe(ctx_for(tools, ALL), two)
    res = judge(m, two)
    assert {r.status for r in res} == {Status.SKIP}
    assert statuses(res) == {(c, s): "skip" for c in ("stress.gemm", "stress.hbm") for s in ("gpu0", "gpu1")} | {
        ("stress.gpu_burn", None): "skip", ("stress.dcgm", None): "skip"}
    gemm = next(r for r in res if r.check == "stress.gemm")
    assert gemm.message.startswith("not measured: neither torch nor cupy can be used by")
    assert m.worker == [sys.executable, "-m", "clusterkit.validate.stress_worker"]


def test_worker_interpreter_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERKIT_STRESS_PYTHON", sys.executable)
    ctx = ProbeContext.around(tool_path=[str(tmp_path)])
    argv = stress.worker_argv(ctx)
    assert argv[:2] == [sys.executable, "-c"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERKIT_", "CUDA_"))}
    p = subprocess.run([*argv, "--gpu", "1", "--tests", "hbm"], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path), timeout=60)
    doc = json.loads(p.stdout)
    assert doc["schema"] == stress_worker.SCHEMA and doc["gpu"] == 1 and "hbm" in doc and "gemm" not in doc


def test_a_hung_worker_is_killed_and_reported(tmp_path, no_path):
    fake_tool(tmp_path / "tools", "clusterkit-stress-worker", "", sleep=60)
    started = time.monotonic()
    two = H100.model_copy(update={"gpu": H100.gpu.model_copy(update={"count": 2})})
    m = stress.probe(ctx_for(tmp_path / "tools", ["stress.gemm"], deadline_s=6), two)
    assert time.monotonic() - started < 8
    res = judge(m, two)
    assert {r.status for r in res} == {Status.ERROR} and len(res) == 2
    assert "did not finish within" in res[0].message


def test_simulated_node_runs_the_real_probe_through_the_stand_ins(tmp_path, monkeypatch):
    from clusterkit import sim
    from clusterkit.sim.context import sim_context

    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path / "sim"))
    fleet = sim.parse_fleet("nodes: 'n[1-2]'\nfaults:\n"
                            "  - {node: n1, gpu: 3, kind: gemm_slow, value: 1.15}\n"
                            "  - {node: n1, gpu: 5, kind: hbm_slow, value: 2}\n"
                            "  - {node: n1, gpu: 2, kind: dcgm_fail, value: Memory}\n", "t")
    ctx = sim_context(fleet.node("n1"), "k1", deadline=time.monotonic() + 60)
    ctx.opt_in = frozenset(ALL)
    m = stress.probe(ctx, H100)
    res = judge(m, H100)
    assert {k: v for k, v in statuses(res).items() if v != "pass"} == {
        ("stress.gemm", "gpu3"): "fail", ("stress.hbm", "gpu5"): "fail", ("stress.dcgm", "gpu2"): "fail"}
    gemm3 = next(r for r in res if r.check == "stress.gemm" and r.subject == "gpu3")
    assert gemm3.value > 650 and "of the node's other GPUs" in gemm3.message  # the sibling rule
    dcgm = next(r for r in res if r.check == "stress.dcgm" and r.status is Status.FAIL)
    assert "GPU Memory failed on GPU 2" in dcgm.message
    assert len([r for r in res if r.check == "stress.gpu_burn" and r.status is Status.PASS]) == 8
    assert stress.facts(m) == {"stress_backend": "clusterkit-sim (stand-in)", "dcgm_version": "3.3.9"}
    healthy = sim_context(fleet.node("n2"), "k1", deadline=time.monotonic() + 60)
    healthy.opt_in = frozenset(ALL)
    res = judge(stress.probe(healthy, H100), H100)
    assert {r.status for r in res} == {Status.PASS} and len(res) == 8 * 4
    assert 785 < min(r.value for r in res if r.check == "stress.gemm") <= max(
        r.value for r in res if r.check == "stress.gemm") < 800
