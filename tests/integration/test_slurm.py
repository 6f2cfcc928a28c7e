"""clusterkit inside a real Slurm cluster, run as a user runs it: the CLI as a subprocess
against real munged + slurmctld + 8 slurmd (gpu-001..gpu-008, partition gpu, 8 fake H100 each).

Hardware is simulated (the built-in fleet: gpu-003 has uncorrectable ECC errors on GPU 5,
gpu-006 a PCIe link at x8); Slurm is real: partitions, srun steps, drains, reasons, resume.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from clusterkit.slurm.reason import REASON_RE

HEALTHY_FLEET = "name: healthy\nprofile: h100-sxm\nnodes: gpu-[001-008]\n"
BAD = {"gpu-003": "gpu.ecc.uncorrectable", "gpu-006": "gpu.pcie.width"}


def ck(cluster: Any, *args: str, timeout: float = 180, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_") and k != "SLURM_JOB_ID"}
    e.update(cluster.env)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True,
                          timeout=timeout, env=e, stdin=subprocess.DEVNULL)


def report(p: subprocess.CompletedProcess[str]) -> dict:
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {p.returncode}): {p.stderr[-2000:]}") from None


def verdicts(doc: dict) -> dict[str, tuple[str, frozenset]]:
    """node -> (status, {(check, subject, status)} of every check that is not pass/skip)"""
    return {n["node"]: (n["status"], frozenset((c["check"], c["subject"], c["status"]) for c in n["checks"]
                                                if c["status"] not in ("pass", "skip")))
            for n in doc["nodes"]}


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in p.stderr, p.stderr
    assert lines and all(ln.startswith("clusterkit: ") for ln in lines), p.stderr
    return lines[-1]


@pytest.fixture()
def cluster(slurm_cluster: Any) -> Any:
    slurm_cluster.reset()
    return slurm_cluster


@pytest.fixture(scope="module")
def healthy_fleet() -> Any:
    d = Path(tempfile.mkdtemp(prefix="ck-fleet-"))
    f = d / "healthy.yaml"
    f.write_text(HEALTHY_FLEET)
    yield f
    f.unlink()
    d.rmdir()


# ----------------------------------------------------------------------------- inventory
def test_partition_inventory_skips_down_and_operator_drained(cluster: Any) -> None:
    cluster.run(["scontrol", "update", "nodename=gpu-002", "state=drain", "reason=bad fan, ticket 42"], check=True)
    doc = report(ck(cluster, "validate", "--sim", "--partition", "gpu", "--checks", "gpu", "--json"))
    assert sorted(n["node"] for n in doc["nodes"]) == [f"gpu-{i:03d}" for i in (1, 3, 4, 5, 6, 7, 8)]
    assert doc["skipped"] == [{"node": "gpu-002", "state": "idle+drain", "reason": "bad fan, ticket 42",
                               "why": "drained by someone else (--include-drained validates it anyway)"}]
    assert "partition:gpu" in doc["source"]
    # --include-drained validates it too; --nodes narrows the partition (intersection)
    doc = report(ck(cluster, "validate", "--sim", "--partition", "gpu", "--include-drained", "--checks", "gpu",
                    "--nodes", "gpu-[001-003],gpu-100", "--json"))
    assert [n["node"] for n in doc["nodes"]] == ["gpu-001", "gpu-002", "gpu-003"] and doc["skipped"] == []
    p = ck(cluster, "validate", "--sim", "--partition", "nosuch")
    assert p.returncode == 2 and "partition 'nosuch'" in one_line_error(p) and "gpu" in p.stderr


# ----------------------------------------------------------------------------- srun transport
def test_via_slurm_names_faults_by_node_and_matches_ssh(cluster: Any, ssh_fleet_factory: Any) -> None:
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--via", "slurm", "--json")
    assert p.returncode == 1, p.stderr
    via_slurm = verdicts(report(p))
    assert {n for n, (st, _) in via_slurm.items() if st == "fail"} == set(BAD)
    for node, check in BAD.items():
        assert any(c == check and s == "fail" for c, _, s in via_slurm[node][1])
    assert len(via_slurm) == 8
    # the same simulated fleet over real SSH gives the same verdicts, node by node
    fleet = ssh_fleet_factory(8, env={"CLUSTERKIT_SIM": "builtin"})
    p = ck(cluster, "validate", "--nodes", "gpu-[001-008]", "--ssh-config", str(fleet.ssh_config), "--json")
    assert p.returncode == 1, p.stderr
    assert verdicts(report(p)) == via_slurm
    fleet.stop()
    # and so does the local simulator
    assert verdicts(report(ck(cluster, "validate", "--sim", "--json"))) == via_slurm


def _pid_of_task(node: str, marker: str, timeout: float = 30) -> int:
    """The node-check our srun step started for ``node`` (found by its environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
                cmd = open(f"/proc/{d}/cmdline", "rb").read()
            except OSError:
                continue
            argv = cmd.split(b"\0")
            if f"SLURMD_NODENAME={node}".encode() in env and marker.encode() in b"\0".join(env) \
                    and b"node-check" in argv and argv[0] != b"/bin/sh":  # not srun's wrapper shell
                return int(d)
        time.sleep(0.2)
    raise AssertionError(f"no node-check task for {node}")


def test_via_slurm_task_killed_is_named_others_kept(cluster: Any) -> None:
    d = Path(tempfile.mkdtemp(prefix="ck-fleet-"))
    fleet = d / "hang.yaml"
    fleet.write_text("name: hang\nprofile: h100-sxm\nnodes: gpu-[001-008]\n"
                     "faults:\n  - {node: gpu-004, kind: hang, value: 60}\n")
    proc = subprocess.Popen([sys.executable, "-m", "clusterkit", "validate", "--sim", str(fleet), "--partition",
                             "gpu", "--via", "slurm", "--checks", "gpu", "--timeout", "90", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")},
                                 **cluster.env})
    try:
        pid = _pid_of_task("gpu-004", str(fleet))
        os.kill(pid, 9)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fleet.unlink()
        d.rmdir()
    doc = json.loads(out)
    by = {n["node"]: n for n in doc["nodes"]}
    assert by["gpu-004"]["status"] == "error" and "exit 137" in by["gpu-004"]["error"], by["gpu-004"]
    assert all(by[n]["status"] == "pass" for n in by if n != "gpu-004"), err
    assert len(by) == 8 and doc["summary"]["exit_code"] == 3


# ----------------------------------------------------------------------------- drain
def test_drain_with_owned_reason_and_operator_reason_untouched(cluster: Any) -> None:
    cluster.run(["scontrol", "update", "nodename=gpu-006", "state=drain", "reason=RMA 1234 (alice)"], check=True)
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--include-drained", "--drain", "--json")
    assert p.returncode == 1, p.stderr
    acts = {a["node"]: a for a in report(p)["actions"]}
    assert acts["gpu-003"]["action"] == "drain" and acts["gpu-003"]["outcome"] == "applied"
    assert acts["gpu-006"]["action"] == "left-alone"
    state, reason = cluster.node_state("gpu-003")
    assert "DRAIN" in state
    m = REASON_RE.match(reason)
    assert m and m.group(1) == "gpu.ecc.uncorrectable" and m.group(2).startswith("gpu5: ")
    assert cluster.node_state("gpu-006")[1] == "RMA 1234 (alice)"
    # sinfo -R, as other tools read it
    sinfo = cluster.run(["sinfo", "-R", "-h", "-o", "%n|%E"], check=True).stdout
    assert f"gpu-003|{reason}" in sinfo.splitlines()
    # a second run changes nothing
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--drain", "--json")
    acts = {a["node"]: a for a in report(p)["actions"]}
    assert acts["gpu-003"]["action"] == "already-drained"
    assert cluster.node_state("gpu-003")[1] == reason


def test_circuit_breaker_and_dry_run(cluster: Any) -> None:
    before = cluster.node_states()
    # 2 failed nodes of 8, the default limit 10% -> 1: nothing is drained
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--drain")
    assert p.returncode == 1
    assert "circuit breaker: 2 nodes would be drained, more than the limit of 1" in p.stderr
    assert cluster.node_states() == before
    # --dry-run with a higher limit: every change as before -> after, nothing changed
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--drain", "--drain-limit", "25%", "--dry-run")
    assert p.returncode == 1, p.stderr
    lines = [ln.strip() for ln in p.stdout.splitlines()]
    assert "slurm (dry run: nothing changed): drain: 2" in lines
    for node, check in BAD.items():
        assert any(ln.startswith(f"{node}  would drain: idle -> idle+drain; reason (none) -> 'clusterkit: {check}: ")
                   for ln in lines), p.stdout
    assert cluster.node_states() == before
    # --force drains past the breaker
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--drain", "--force")
    assert p.returncode == 1
    assert {n for n, (st, _) in cluster.node_states().items() if "DRAIN" in st} == set(BAD)


def test_errors_never_drain(cluster: Any) -> None:
    d = Path(tempfile.mkdtemp(prefix="ck-fleet-"))
    fleet = d / "nvml.yaml"
    fleet.write_text("name: nvml\nprofile: h100-sxm\nnodes: gpu-[001-008]\n"
                     "faults:\n  - {node: gpu-002, kind: nvml_unavailable}\n")
    try:
        p = ck(cluster, "validate", "--sim", str(fleet), "--partition", "gpu", "--checks", "gpu", "--drain",
               "--json")
    finally:
        fleet.unlink()
        d.rmdir()
    assert p.returncode == 3, p.stderr
    assert report(p)["actions"] == []
    assert all("DRAIN" not in st for st, _ in cluster.node_states().values())


# ----------------------------------------------------------------------------- resume
def test_resume_only_after_a_pass_never_an_operators_drain(cluster: Any, healthy_fleet: Path) -> None:
    cluster.run(["scontrol", "update", "nodename=gpu-006", "state=drain", "reason=RMA 1234 (alice)"], check=True)
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--drain")
    assert p.returncode == 1 and "DRAIN" in cluster.node_state("gpu-003")[0], p.stderr
    # the hardware is still bad: stays drained
    p = ck(cluster, "slurm", "resume", "--partition", "gpu", "--sim", "--json")
    assert p.returncode == 1, p.stderr
    acts = {a["node"]: a for a in report(p)["actions"]}
    assert acts["gpu-003"]["action"] == "still-failing" and acts["gpu-006"]["action"] == "left-alone"
    assert "DRAIN" in cluster.node_state("gpu-003")[0]
    # repaired (a healthy fleet): --dry-run says so and changes nothing
    p = ck(cluster, "slurm", "resume", "--partition", "gpu", "--sim", str(healthy_fleet), "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "gpu-003  would resume: idle+drain -> idle" in p.stdout
    assert "DRAIN" in cluster.node_state("gpu-003")[0]
    # then resumes it; the operator's drain stays
    p = ck(cluster, "slurm", "resume", "--nodes", "gpu-[001-008]", "--sim", str(healthy_fleet), "--json")
    assert p.returncode == 0, p.stderr
    rep = report(p)
    assert [n["node"] for n in rep["nodes"]] == ["gpu-003"]  # only the candidate was re-checked
    assert {c["check"] for c in rep["nodes"][0]["checks"]} == {"gpu.ecc.uncorrectable"}
    state, reason = cluster.node_state("gpu-003")
    assert "DRAIN" not in state and reason == ""
    state, reason = cluster.node_state("gpu-006")
    assert "DRAIN" in state and reason == "RMA 1234 (alice)"
    p = ck(cluster, "slurm", "resume", "--partition", "gpu", "--sim", str(healthy_fleet))
    assert p.returncode == 0 and "left-alone" in p.stdout


# ----------------------------------------------------------------------------- failures
def test_killed_slurmd_is_down_and_skipped(cluster: Any) -> None:
    cluster.kill_slurmd("gpu-005")
    cluster.wait_node_state("gpu-005", lambda st, _r: "NOT_RESPONDING" in st or st.startswith("DOWN"), timeout=60)
    for via in ("ssh", "slurm"):
        p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--checks", "gpu", "--via", via, "--json")
        doc = report(p)
        assert "gpu-005" not in {n["node"] for n in doc["nodes"]}, via
        sk = {s["node"]: s for s in doc["skipped"]}
        assert sk["gpu-005"]["state"].endswith("*") or sk["gpu-005"]["state"].startswith("down"), sk
        assert "down" in sk["gpu-005"]["why"]
    cluster.start_slurmd("gpu-005")
    cluster.wait_node_state("gpu-005", "IDLE", timeout=60)


def test_slurmctld_down_one_line_exit_3_no_drain(cluster: Any) -> None:
    cluster.stop_slurmctld()
    try:
        p = ck(cluster, "validate", "--sim", "--partition", "gpu", timeout=120)
        assert p.returncode == 3
        assert re.search(r"Slurm is not reachable .*Unable to contact slurm controller", one_line_error(p))
        p = ck(cluster, "validate", "--sim", "--drain", timeout=120)
        assert p.returncode == 3 and "not reachable" in one_line_error(p)
        p = ck(cluster, "slurm", "resume", "--partition", "gpu", "--sim", timeout=120)
        assert p.returncode == 3 and "not reachable" in one_line_error(p)
    finally:
        cluster.start_slurmctld()
    assert all("DRAIN" not in st for st, _ in cluster.node_states().values())


# ----------------------------------------------------------------------------- templates
def test_render_submit_and_complete_a_multi_node_gpu_job(cluster: Any) -> None:
    out = Path(cluster.out_dir)
    report_path = out / "validate-%j.json"
    args = ["validate", "--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu", "--time", "10",
            "--output-file", str(out / "validate-%j.out"), "--set", f"report={report_path}",
            "--set", "sim=true", "--set", f"clusterkit_command=[{sys.executable}, -m, clusterkit]",
            "--set", "checks=[gpu]"]
    p = ck(cluster, "slurm", "render", *args)
    assert p.returncode == 0, p.stderr
    assert "#SBATCH --gres=gpu:8" in p.stdout and "#SBATCH --nodes=2" in p.stdout
    p = ck(cluster, "slurm", "submit", *args, "--wait", "--wait-timeout", "120", "--json")
    job = json.loads(p.stdout)
    # the built-in simulated fleet: the first two nodes are healthy, so the job succeeds
    assert p.returncode == 0 and job["state"] == "COMPLETED" and job["exit_code"] == 0, (p.stdout, p.stderr)
    doc = json.loads(Path(str(report_path).replace("%j", job["job_id"])).read_text())
    assert [n["node"] for n in doc["nodes"]] == ["gpu-001", "gpu-002"]
    assert all(n["status"] == "pass" for n in doc["nodes"]) and doc["summary"]["exit_code"] == 0
    # a job whose validation finds a failed node ends with validate's exit code, 1
    bad = [a if a != "checks=[gpu]" else "checks=[gpu.ecc]" for a in args]
    bad[bad.index("--nodes") + 1] = "3"  # gpu-003 has uncorrectable ECC errors
    p = ck(cluster, "slurm", "submit", *bad, "--wait", "--wait-timeout", "120", "--json")
    job = json.loads(p.stdout)
    assert p.returncode == 1 and job["state"] == "FAILED" and job["exit_code"] == 1, (p.stdout, p.stderr)


def test_via_slurm_step_refused_names_every_node(cluster: Any) -> None:
    # more GPUs per node than any node has: srun refuses the allocation, no task ever starts
    p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--via", "slurm", "--slurm-gres", "gpu:9",
           "--checks", "gpu", "--timeout", "30", "--json")
    doc = report(p)
    assert p.returncode == 3 and doc["summary"]["unreachable"] == 8, p.stderr
    for n in doc["nodes"]:
        assert n["status"] == "unreachable" and n["cause"].startswith("srun task never started"), n
        assert "Requested node configuration is not available" in n["error"], n["error"]


def test_hold_with_reservation_keeps_failed_nodes_releases_the_rest(cluster: Any) -> None:
    try:
        p = ck(cluster, "validate", "--sim", "--partition", "gpu", "--via", "slurm", "--checks", "gpu", "--drain",
               "--drain-limit", "2", "--hold-with-reservation", "--json")
        assert p.returncode == 1, p.stderr
        acts = {a["node"]: a for a in report(p)["actions"]}
        assert {n for n, a in acts.items() if a["action"] == "hold"} == set(BAD)
        assert all(a["outcome"] == "applied" for a in acts.values()), acts
        assert {n for n, a in acts.items() if a["action"] == "release"} == \
            {f"gpu-{i:03d}" for i in (1, 2, 4, 5, 7, 8)}
        res = cluster.run(["scontrol", "-o", "show", "reservation", "clusterkit_hold"], check=True).stdout
        assert "Nodes=gpu-[003,006]" in res and "MAINT" in res
        assert all("DRAIN" not in st for st, _ in cluster.node_states().values())  # held, not drained
    finally:
        cluster.run(["scontrol", "delete", "ReservationName=clusterkit_hold"])


# ----------------------------------------------------------------------------- HealthCheckProgram
def test_healthcheck_program_drains_and_resumes_its_own_node(slurm_cluster_factory: Any) -> None:
    """slurmd itself runs `clusterkit node-check --healthcheck` (HealthCheckProgram): the node
    with a hard fault drains itself, an error changes nothing, an operator's drain stays, and
    the node resumes itself once its hardware is healthy again."""
    d = Path(tempfile.mkdtemp(prefix="ck-hc-"))
    os.chmod(d, 0o755)
    fleet = d / "fleet.yaml"
    faulty = ("name: hc\nprofile: h100-sxm\nnodes: gpu-[001-004]\nfaults:\n"
              "  - {node: gpu-002, gpu: 5, kind: ecc_uncorrectable, value: 2}\n"
              "  - {node: gpu-003, kind: nvml_unavailable}\n")
    fleet.write_text(faulty)
    script = d / "healthcheck"
    conf = d / "slurm.conf.path"
    script.write_text(
        "#!/bin/sh\n"
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n"
        f'SLURM_CONF=$(cat "{conf}"); export SLURM_CONF\n'
        f'CLUSTERKIT_SIM="{fleet}"; export CLUSTERKIT_SIM\n'
        f'CLUSTERKIT_STATE_DIR="{d}/state-$SLURMD_NODENAME"; export CLUSTERKIT_STATE_DIR\n'
        f'exec "{sys.executable}" -m clusterkit node-check --healthcheck >>"{d}/hc-$SLURMD_NODENAME.log" 2>&1\n')
    script.chmod(0o755)
    conf.write_text("")  # filled in once the cluster's conf path is known (slurmd runs it at start)
    cluster = slurm_cluster_factory(4, healthcheck_program=str(script), healthcheck_interval=3)
    try:
        conf.write_text(cluster.env["SLURM_CONF"])
        cluster.run(["scontrol", "update", "nodename=gpu-004", "state=drain", "reason=RMA 77"], check=True)
        state, reason = cluster.wait_node_state("gpu-002", lambda st, r: "DRAIN" in st and r.startswith("clusterkit:"),
                                                timeout=60)
        assert reason.startswith("clusterkit: gpu.ecc.uncorrectable: gpu5: ")
        time.sleep(4)  # at least one more round: the error node and the operator's drain stay as they are
        assert "DRAIN" not in cluster.node_state("gpu-003")[0]
        assert cluster.node_state("gpu-004")[1] == "RMA 77"
        assert "DRAIN" not in cluster.node_state("gpu-001")[0]
        # repaired: the node resumes itself; the operator's drain stays
        fleet.write_text("name: hc\nprofile: h100-sxm\nnodes: gpu-[001-004]\n")
        cluster.wait_node_state("gpu-002", lambda st, r: "DRAIN" not in st and r == "", timeout=60)
        assert cluster.node_state("gpu-004")[1] == "RMA 77"
        log = (d / "hc-gpu-002.log").read_text()
        assert "drained" in log and "resume" in log, log
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(d, ignore_errors=True)
