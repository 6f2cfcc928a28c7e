"""`node-check --format influx` as Telegraf's inputs.exec runs it: every line it prints is ingested
by a real store with zero rejected lines; it exits 0 whenever it measured (a failed node too);
it answers SIGTERM (Telegraf's timeout) with what it measured, inside Telegraf's 5 s."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from clusterkit.telemetry.lineproto import parse_line


def node_check(node: str, *args: str, sim: str = "builtin") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    env.update({"CLUSTERKIT_SIM": sim, "CLUSTERKIT_NODE": node})
    return subprocess.Popen([sys.executable, "-m", "clusterkit", "node-check", "--format", "influx", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)


def _metric(vm: Any, name: str) -> float:
    with urllib.request.urlopen(f"{vm.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_line_is_ingested_and_a_failed_node_exits_0(vmstore: Any) -> None:
    p = node_check("gpu-003")  # uncorrectable ECC errors: a failed node
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    lines = [ln for ln in out.splitlines() if ln]
    assert len(lines) > 100 and all(parse_line(ln) for ln in lines)
    assert any(ln.startswith("clusterkit_node,") and "status_code=2i" in ln for ln in lines)
    before_rows = _metric(vmstore, 'vm_rows_inserted_total{type="influx"}')
    before_bad = _metric(vmstore, 'vm_rows_invalid_total{type="influx"}')
    req = urllib.request.Request(f"{vmstore.url}/write", data=out.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204
    fields = sum(len(parse_line(ln).fields) for ln in lines)
    deadline = time.monotonic() + 10  # the store parses the body after it answered
    while time.monotonic() < deadline:
        vmstore.flush()
        inserted = _metric(vmstore, 'vm_rows_inserted_total{type="influx"}') - before_rows
        if inserted >= fields:
            break
        time.sleep(0.1)
    assert inserted == fields
    assert _metric(vmstore, 'vm_rows_invalid_total{type="influx"}') == before_bad
    rows = vmstore.export('gpu_value{check="gpu.ecc.uncorrectable",host="gpu-003",gpu="5"}', expect=1)
    assert rows and rows[0]["values"] == [2.0]


def test_sigterm_prints_what_was_measured_and_exits_0() -> None:
    d = Path(tempfile.mkdtemp(prefix="ck-influx-"))
    fleet = d / "hang.yaml"
    fleet.write_text("name: hang\nprofile: h100-sxm\nnodes: gpu-[001-002]\n"
                     "faults:\n  - {node: gpu-001, kind: hang, value: 60}\n")
    try:
        p = node_check("gpu-001", sim=str(fleet))
        time.sleep(2.0)  # NVML hangs; the other domains have finished
        sent = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        fleet.unlink()
        d.rmdir()
    assert p.returncode == 0, err
    assert took < 2.0, took
    lines = [ln for ln in out.splitlines() if ln]
    assert all(parse_line(ln) for ln in lines)
    node = [ln for ln in lines if ln.startswith("clusterkit_node,")]
    assert len(node) == 1 and "status_code=3i" in node[0]  # error: not everything ran
    assert any(re.match(r"clusterkit_check,check=gpu\.probe,.*status_code=3i", ln) for ln in lines)
    assert any(ln.startswith("system,") for ln in lines)  # what finished is there


def test_deadline_default_fits_telegrafs_timeout() -> None:
    d = Path(tempfile.mkdtemp(prefix="ck-influx-"))
    fleet = d / "hang.yaml"
    fleet.write_text("name: hang\nprofile: h100-sxm\nnodes: gpu-001\n"
                     "faults:\n  - {node: gpu-001, kind: hang, value: 60}\n")
    try:
        started = time.monotonic()
        p = node_check("gpu-001", sim=str(fleet))
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        fleet.unlink()
        d.rmdir()
    assert p.returncode == 0 and took < 5.0, (took, err)
    assert "clusterkit_node," in out
