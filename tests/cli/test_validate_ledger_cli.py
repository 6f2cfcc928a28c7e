"""validate records every node's verdict in the controller's ledger; deploy serve's health gate
reads it (a dry run with --nodes needs no Slurm)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    env["CLUSTERKIT_STATE_DIR"] = str(state)
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_validate_feeds_the_deploy_gate(tmp_path: Path) -> None:
    # a partial run (--checks) is no validation: its pass lets no node serve
    p = run("validate", "--sim", "--checks", "gpu", "--json", state=tmp_path)
    assert p.returncode == 1, p.stderr
    p = run("deploy", "serve", "--engine", "vllm", "--model", "meta-llama/Llama-3.1-8B", "--tp", "8",
            "--nodes", "gpu-[001-004]", "--dry-run", state=tmp_path)
    assert p.returncode == 1 and "gpu-001: refused: last validation ran only --checks gpu" in p.stderr, p.stderr
    p = run("validate", "--sim", "--json", state=tmp_path)
    assert p.returncode == 1, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert run_id in json.dumps(ledger)
    p = run("deploy", "serve", "--engine", "vllm", "--model", "meta-llama/Llama-3.1-8B", "--tp", "8",
            "--nodes", "gpu-[001-004]", "--dry-run", state=tmp_path)
    assert p.returncode == 0, p.stderr
    gate = [ln for ln in p.stdout.splitlines() if ln.startswith("#     gpu-")]
    assert [ln.split(":")[0].strip("# ") for ln in gate if "refused" in ln] == ["gpu-003"]
    assert "replica 0: gpu-001" in p.stdout
