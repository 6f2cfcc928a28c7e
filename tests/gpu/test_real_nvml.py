"""Opt-in, on a machine with an NVIDIA GPU: `pytest -m gpu tests/gpu`.

node-check runs on the real NVML (nvidia-ml-py) with a profile written for the GPUs found, so a
healthy machine of any GPU count must pass; what a machine cannot have (NVLink on one GPU,
unsupported NVML fields) must come out as `skip`, never `fail` or `error`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpus():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        pytest.skip(f"no usable NVML here: {e}")
    try:
        n = pynvml.nvmlDeviceGetCount()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else name
        mem_mib = pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024)
        return n, name, mem_mib
    finally:
        pynvml.nvmlShutdown()


def test_node_check_passes_on_real_hardware(gpus, tmp_path):
    n, name, mem_mib = gpus
    model = "H200" if "H200" in name else ("H100" if "H100" in name else name)
    prof = tmp_path / "this-machine.yaml"
    prof.write_text(json.dumps({
        "name": f"{n}x-{model.lower().replace(' ', '-')}",
        "gpu": {"count": n, "model_patterns": [model], "memory_total_mib_min": int(mem_mib * 0.98),
                "pcie_gen": 5 if model in ("H100", "H200") else None, "pcie_width": 16,
                "temp_warn_c": 85, "temp_fail_c": 87, "ecc_required": True, "persistence_required": False},
        "system": {"paths": [{"path": "/", "free_gib_min": 1}]},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    p = subprocess.run([sys.executable, "-m", "clusterkit", "node-check", "--json", "--profile", str(prof)],
                       capture_output=True, text=True, env=env, timeout=120)
    doc = json.loads(p.stdout)
    print(json.dumps({"facts": doc["facts"], "not_pass": [c for c in doc["checks"] if c["status"] != "pass"]},
                     indent=1))
    bad = [c for c in doc["checks"] if c["status"] in ("fail", "error")]
    assert bad == [], bad
    assert doc["facts"]["gpu_count"] == n and p.returncode == 0
    assert {c["check"] for c in doc["checks"]} >= {"gpu.count", "gpu.ecc.uncorrectable", "gpu.pcie.width"}
