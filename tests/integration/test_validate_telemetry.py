"""`clusterkit validate --influx-url …` as a user runs it, against a real VictoriaMetrics: the run's
metrics arrive; a store that is down costs one warning line and the points wait in the spool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.infra.vmstore import samples


def validate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERKIT_", "INFLUX"))}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "clusterkit", "validate", "--sim", "--checks", "gpu", *args],
                          capture_output=True, text=True, env=e, timeout=180, stdin=subprocess.DEVNULL)


def test_validate_sends_its_metrics(vmstore: Any, tmp_path: Path) -> None:
    prom = tmp_path / "ck.prom"
    p = validate("--influx-url", vmstore.url, "--influx-org", "ops", "--influx-bucket", "ck",
                 "--spool-dir", str(tmp_path / "spool"), "--prom-textfile", str(prom), "--json",
                 env={"INFLUX_TOKEN": "s3cr3t-token"})
    assert p.returncode == 1 and p.stderr == "", p.stderr
    report = json.loads(p.stdout)
    nodes = vmstore.export("clusterkit_node_status_code", expect=8)
    status = {r["metric"]["host"]: r["values"][-1] for r in nodes}
    assert status == {f"gpu-{i:03d}": (2 if i in (3, 6) else 0) for i in range(1, 9)}
    (ecc,) = vmstore.export('gpu_value{check="gpu.ecc.uncorrectable",host="gpu-003",gpu="5"}', expect=1)
    assert ecc["values"] == [2.0]
    (run,) = vmstore.export("clusterkit_run_exit_code", expect=1)
    assert run["values"] == [1]
    assert not list((tmp_path / "spool").glob("**/*.lp*"))
    text = prom.read_text()
    assert "clusterkit" in text and "gpu-003" in text
    assert "s3cr3t-token" not in p.stdout + p.stderr + text
    assert report["summary"]["exit_code"] == 1


def test_store_down_is_one_warning_and_the_points_wait(vmstore: Any, tmp_path: Path) -> None:
    url = vmstore.url
    vmstore.stop()
    spool = tmp_path / "spool"
    p = validate("--influx-url", url, "--influx-org", "ops", "--influx-bucket", "ck", "--spool-dir", str(spool),
                 "--telemetry-timeout", "3")
    assert p.returncode == 1, p.stderr  # the fleet's verdict, not the store's
    warnings = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("clusterkit: warning: "), p.stderr
    assert "FAIL" in p.stdout
    vmstore.start()
    # the next run replays the spooled batches first: both runs' points arrive
    p = validate("--influx-url", url, "--influx-org", "ops", "--influx-bucket", "ck", "--spool-dir", str(spool))
    assert p.returncode == 1 and p.stderr == "", p.stderr
    runs = vmstore.export("clusterkit_run_exit_code", expect=2)
    assert samples(runs) == 2
