"""Smoke tests of the real Slurm test cluster (tests/infra/slurmcluster.py).

They check what clusterkit's Slurm tests rely on: 8 idle nodes, ``sinfo --json``, multi-node
GPU jobs on fake devices, drains in ``scontrol -o show node``, a killed slurmd becoming
``down*`` and coming back, slurmctld outages (errors, state kept), and what a
HealthCheckProgram sees.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra.slurmcluster import (
    CTLD_DOWN_ERRORS,
    CTLD_DOWN_EXIT_CODE,
    SlurmCluster,
    parse_node_line,
)

pytestmark = pytest.mark.integration

NODES = [f"gpu-{i:03d}" for i in range(1, 9)]


def test_parse_node_line_strips_reason_stamp() -> None:
    line = ("NodeName=gpu-002 Arch=x86_64 State=IDLE+DRAIN ThreadsPerCore=1 Partitions=gpu "
            "ExtSensorsTemp=n/s Reason=clusterkit: gpu.ecc: Xid 48 count=3 "
            "[root@2026-11-22T03:16:28]")
    assert parse_node_line(line) == ("IDLE+DRAIN", "clusterkit: gpu.ecc: Xid 48 count=3")
    assert parse_node_line("NodeName=gpu-001 State=IDLE ThreadsPerCore=1") == ("IDLE", "")


def test_cluster_reaches_idle_with_8_nodes(slurm_cluster: SlurmCluster) -> None:
    slurm_cluster.reset()
    assert slurm_cluster.idle_count() == 8
    cp = slurm_cluster.run(["sinfo", "-h", "-N", "-o", "%N %P %t %G"])
    assert cp.returncode == 0, cp.stderr
    rows = [line.split() for line in cp.stdout.splitlines()]
    assert [r[0] for r in rows] == NODES
    assert all(r[1:] == ["gpu*", "idle", "gpu:h100:8"] for r in rows), rows
    assert slurm_cluster.node_state("gpu-001") == ("IDLE", "")


def test_sinfo_json_lists_8_nodes(slurm_cluster: SlurmCluster) -> None:
    cp = slurm_cluster.run(["sinfo", "--json"])
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert not doc.get("errors")
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert sorted(nodes) == NODES
    assert all(n["gres"] == "gpu:h100:8" for n in nodes.values())
    assert all(n["partitions"] == ["gpu"] for n in nodes.values())


def test_two_node_gpu_job(slurm_cluster: SlurmCluster) -> None:
    slurm_cluster.reset()
    out = slurm_cluster.out_dir / "two-node.out"
    # \$: expanded by each step's shell, not by the batch script's (which runs on one node)
    job = slurm_cluster.sbatch(["--gres=gpu:8", "-N2", "--ntasks-per-node=1", "-o", str(out),
                                "--wrap",
                                'srun bash -c "echo \\$SLURMD_NODENAME \\$CUDA_VISIBLE_DEVICES"'])
    assert re.fullmatch(r"\d+", job)
    assert slurm_cluster.wait_job(job, timeout=30) == "COMPLETED", out.read_text()
    lines = sorted(out.read_text().split("\n"))
    rows = [line.split() for line in lines if line.strip()]
    assert len(rows) == 2, lines
    assert len({r[0] for r in rows}) == 2 and {r[0] for r in rows} <= set(NODES), rows
    assert all(r[1] == "0,1,2,3,4,5,6,7" for r in rows), rows


def test_drain_shows_in_scontrol(slurm_cluster: SlurmCluster) -> None:
    slurm_cluster.reset()
    cp = slurm_cluster.run(["scontrol", "update", "nodename=gpu-005", "state=drain",
                            "reason=clusterkit: smoke x=1"])
    assert cp.returncode == 0, cp.stderr
    assert slurm_cluster.node_state("gpu-005") == ("IDLE+DRAIN", "clusterkit: smoke x=1")
    assert slurm_cluster.sinfo_state("gpu-005") == "drain"
    assert slurm_cluster.node_states()["gpu-004"] == ("IDLE", "")
    slurm_cluster.reset()
    assert slurm_cluster.node_state("gpu-005") == ("IDLE", "")


def test_slurmctld_down_then_back_keeps_drain(slurm_cluster: SlurmCluster) -> None:
    slurm_cluster.reset()
    slurm_cluster.run(["scontrol", "update", "nodename=gpu-006", "state=drain",
                       "reason=kept across restart"], check=True)
    slurm_cluster.stop_slurmctld()
    try:
        t0 = time.monotonic()
        cp = slurm_cluster.run(["sinfo"])
        took = time.monotonic() - t0
        assert cp.returncode == CTLD_DOWN_EXIT_CODE
        assert cp.stderr.strip() == CTLD_DOWN_ERRORS["sinfo"]
        assert took < 10, took
        cp = slurm_cluster.run(["scontrol", "-o", "show", "node", "gpu-001"])
        assert (cp.returncode, cp.stderr.strip()) == (CTLD_DOWN_EXIT_CODE,
                                                      CTLD_DOWN_ERRORS["scontrol show node"])
    finally:
        slurm_cluster.start_slurmctld()
    assert slurm_cluster.node_state("gpu-006") == ("IDLE+DRAIN", "kept across restart")
    slurm_cluster.reset()


def test_killed_slurmd_goes_down_and_comes_back(slurm_cluster: SlurmCluster) -> None:
    slurm_cluster.reset()
    t0 = time.monotonic()
    slurm_cluster.kill_slurmd("gpu-008")
    assert "gpu-008" not in slurm_cluster.pids
    _, reason = slurm_cluster.wait_node_state("gpu-008", "down*", timeout=40)
    down_after = time.monotonic() - t0
    assert reason == "Not responding"
    assert slurm_cluster.node_state("gpu-008")[0] == "DOWN+NOT_RESPONDING"
    t1 = time.monotonic()
    slurm_cluster.start_slurmd("gpu-008")
    slurm_cluster.wait_node_state("gpu-008", "idle", timeout=30)
    back_after = time.monotonic() - t1
    print(f"down* after {down_after:.1f} s, idle again {back_after:.1f} s after restart")
    assert slurm_cluster.node_state("gpu-008") == ("IDLE", "")


def test_four_nodes_and_healthcheck_sees_nodename(
        slurm_cluster_factory: Callable[..., SlurmCluster], tmp_path: Path) -> None:
    """A second cluster next to the module's one (another slot); slurmd runs the
    HealthCheckProgram with SLURMD_NODENAME set (every slurmd shares one hostname here)."""
    dumps = tmp_path / "hc"
    dumps.mkdir()
    script = tmp_path / "healthcheck.sh"
    script.write_text(f'#!/bin/sh\n/usr/bin/env > "{dumps}/env.$SLURMD_NODENAME.$$"\nexit 0\n')
    script.chmod(0o755)
    cluster = slurm_cluster_factory(4, healthcheck_program=script, healthcheck_interval=2)
    try:
        assert cluster.idle_count() == 4
        assert "NodeName=gpu-[001-004] " in cluster.conf_path.read_text()
        deadline = time.monotonic() + 15
        seen: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline and len(seen) < 4:
            for f in dumps.iterdir():
                env = dict(line.split("=", 1) for line in f.read_text().splitlines()
                           if "=" in line)
                if env.get("SLURMD_NODENAME"):
                    seen[env["SLURMD_NODENAME"]] = env
            time.sleep(0.3)
        assert sorted(seen) == NODES[:4]
        for env in seen.values():
            assert "SLURM_CONF" not in env and "PATH" not in env, env
    finally:
        cluster.stop()
    assert not cluster.pids
    assert os.path.isdir(cluster.root)
