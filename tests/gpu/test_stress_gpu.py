"""Opt-in, on a machine with an NVIDIA GPU and torch (or cupy): `pytest -m gpu tests/gpu`.

The stress worker measures the real GPU 0 (bf16 GEMM TFLOP/s, device-to-device copy GB/s) and
prints its JSON line; node-check --stress then judges every GPU of the machine with a profile
written for the GPUs found (no floors: only the sibling rule), so a healthy machine must pass.
The interpreter is this one, or $CLUSTERKIT_STRESS_PYTHON when torch lives in another.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_count() -> int:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        pytest.skip(f"no usable NVML here: {e}")
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("CLUSTERKIT_") or k == "CLUSTERKIT_STRESS_PYTHON"}


def test_worker_measures_gpu0(gpu_count):
    python = os.environ.get("CLUSTERKIT_STRESS_PYTHON") or sys.executable
    argv = [python, "-c", "import sys; sys.path.append(sys.argv.pop(1)); "
                          "from clusterkit.validate.stress_worker import main; sys.exit(main())",
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
    p = subprocess.run([*argv, "--gpu", "0", "--seconds", "6"], capture_output=True, text=True,
                       env=_env(), timeout=300)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, p.stdout + p.stderr
    doc = json.loads(lines[0])
    print(json.dumps(doc, indent=1))
    if doc["skipped"]:
        pytest.skip(doc["skipped"])
    assert p.returncode == 0 and doc["error"] is None, doc
    assert doc["schema"] == "clusterkit.stress-worker/v1" and doc["gpu"] == 0
    gemm, hbm = doc["gemm"], doc["hbm"]
    assert gemm["error"] is None and gemm["finite"] is True
    assert hbm["error"] is None
    name = doc["device"] or ""
    if "H100" in name or "H200" in name:
        # Hopper: about 790 TFLOP/s bf16 (8192^3) and 2.9 (H100) / 4.0+ (H200) TB/s copy
        assert gemm["tflops"] > 600, gemm
        assert hbm["gbps"] > (3300 if "H200" in name else 2400), hbm
    else:
        assert gemm["tflops"] > 1 and hbm["gbps"] > 10


def test_node_check_stress_passes_on_healthy_gpus(gpu_count, tmp_path):
    prof = tmp_path / "this-machine.json"
    prof.write_text(json.dumps({"name": f"{gpu_count}-gpus", "gpu": {"count": gpu_count},
                                "stress": {"seconds": 6, "sibling_rel_min": 0.85}}))
    # dcgmi diag -r 2 takes about two minutes; gpu_burn its burn: give them the time
    p = subprocess.run([sys.executable, "-m", "clusterkit", "node-check", "--stress", "--checks", "stress",
                        "--profile", str(prof), "--json", "--deadline", "240"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    doc = json.loads(p.stdout)
    print(json.dumps([c for c in doc["checks"]], indent=1))
    bad = [c for c in doc["checks"] if c["status"] in ("fail", "error")]
    assert bad == [], bad
    gemm = [c for c in doc["checks"] if c["check"] == "stress.gemm"]
    assert len(gemm) == gpu_count
    if all(c["status"] == "skip" for c in gemm):
        pytest.skip(gemm[0]["message"])
    if shutil.which("dcgmi") is None:
        assert [c["status"] for c in doc["checks"] if c["check"] == "stress.dcgm"] == ["skip"]
