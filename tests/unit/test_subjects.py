"""A check result's subject as structured fields (gpu, peer_gpu, device, port, link, path), so
that telemetry tags points without parsing ``subject``: every domain sets them where it makes the
result, they always agree with the subject text, and an older report without them still loads."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Optional

import pytest

from clusterkit import sim
from clusterkit.models import CheckResult, FleetReport, Status
from clusterkit.profiles import MountRule, StorageProfile, load_profile
from clusterkit.sim.context import sim_context
from clusterkit.validate import ib, registry, storage, stress
from clusterkit.validate.runner import run_node_check
from clusterkit.validate.subjects import on_device, on_gpu, on_link, on_pair, on_path, on_port

H100 = load_profile("h100-sxm")
FIELDS = ("gpu", "peer_gpu", "device", "port", "link", "path")

# One node with a fault in every domain that names a subject, and every opt-in check asked for.
FLEET = """\
name: subjects
nodes: [n1]
faults:
  - {node: n1, gpu: 1, kind: nvlink_speed, value: 20}
  - {node: n1, gpu: 5, kind: nvlink_errors, value: 1000}
  - {node: n1, gpu: 2, kind: p2p_degraded}
  - {node: n1, device: mlx5_3, kind: nic_far}
  - {node: n1, device: mlx5_1, kind: ib_rate, value: 200}
  - {node: n1, device: mlx5_2, kind: ib_fw, value: "28.36.1010"}
  - {node: n1, device: mlx5_0, kind: ib_bw_slow, value: 250}
  - {node: n1, gpu: 4, kind: xid, value: 79}
  - {node: n1, kind: sxid, value: 24007}
  - {node: n1, gpu: 0, kind: ecc_uncorrectable, value: 2}
  - {node: n1, kind: metadata_slow, path: /mnt/data, value: 150}
  - {node: n1, gpu: 3, kind: gemm_slow, value: 2}
  - {node: n1, gpu: 6, kind: dcgm_fail, value: Memory}
"""


def expected_fields(subject: Optional[str]) -> Optional[dict[str, Any]]:
    """What the structured fields must hold for a subject of a known form (None: not one)."""
    blank: dict[str, Any] = dict.fromkeys(FIELDS)
    if subject is None:
        return blank
    if m := re.fullmatch(r"gpu(\d+)", subject):
        return {**blank, "gpu": int(m[1])}
    if m := re.fullmatch(r"gpu(\d+)/link(\d+)", subject):
        return {**blank, "gpu": int(m[1]), "link": int(m[2])}
    if m := re.fullmatch(r"gpu(\d+)-gpu(\d+)", subject):
        return {**blank, "gpu": int(m[1]), "peer_gpu": int(m[2])}
    if m := re.fullmatch(r"(mlx5_\d+)/(\d+)", subject):
        return {**blank, "device": m[1], "port": int(m[2])}
    if re.fullmatch(r"mlx5_\d+", subject):
        return {**blank, "device": subject}
    if subject.startswith("/"):
        return {**blank, "path": subject}
    return None


@pytest.fixture(scope="module")
def checks(tmp_path_factory) -> list[CheckResult]:
    root = tmp_path_factory.mktemp("subjects")
    mp = pytest.MonkeyPatch()
    fleet_file = root / "fleet.yaml"
    fleet_file.write_text(FLEET)
    mp.setenv("CLUSTERKIT_SIM_ROOT", str(root / "sim"))
    mp.setenv("CLUSTERKIT_SIM", str(fleet_file))  # the stand-in tools (nvidia-smi topo -m) read it
    try:
        fleet = sim.load_fleet(str(fleet_file))
        prof = H100.model_copy(update={"storage": StorageProfile(
            mounts=[MountRule(path="/", inodes_free_pct_min=5, bench=False),
                    MountRule(path="/mnt/data", fstype=["nfs", "lustre"], free_gib_min=100)],
            stat_timeout_s=2, metadata_files=30, fio_runtime_s=1, fio_size_mib=16, weights_read_s=2,
            metadata_p50_ms_max=10, fio_read_mibps_min=1000, weights_gbps_min=1.0)})
        prof = storage.with_weights_dir(prof, "/models/llama-70b")
        ctx = sim_context(fleet.node("n1"), "subjects", deadline=time.monotonic() + 90)
        ctx.opt_in = frozenset({ib.WRITE_BW, storage.METADATA, storage.FIO, storage.WEIGHTS, *stress.opt_in(True, None)})
        report = run_node_check(prof, None, ctx, deadline_s=90)
    finally:
        mp.undo()
    assert not report.error, report.error
    return report.checks


def test_every_domain_sets_the_fields_its_subject_names(checks):
    unknown = []
    for r in checks:
        want = expected_fields(r.subject)
        got = {f: getattr(r, f) for f in FIELDS}
        if want is None:  # a subject of no known form (a PCI address, a NIC without a legend name)
            unknown.append(r.subject)
            assert got == dict.fromkeys(FIELDS), (r.check, r.subject, got)
        else:
            assert got == want, (r.check, r.subject, got)  # a GPU subject without `gpu` fails here
    # every domain with subjects produced some, of every form
    by_domain = {r.check.split(".", 1)[0] for r in checks if r.subject is not None}
    assert by_domain == set(registry.DOMAINS), by_domain
    forms = {next(k for k in ("link", "peer_gpu", "port", "device", "gpu", "path") if getattr(r, k) is not None)
             for r in checks if expected_fields(r.subject) not in (None, dict.fromkeys(FIELDS))}
    assert forms == {"gpu", "link", "peer_gpu", "port", "device", "path"}
    assert unknown and all(re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d", s or "") for s in unknown), unknown


def test_the_faults_are_tagged_where_they_are(checks):
    bad = {(r.check, r.subject): r for r in checks if r.status not in (Status.PASS, Status.SKIP)}
    assert bad["gpu.ecc.uncorrectable", "gpu0"].gpu == 0
    speed = [r for (c, _), r in bad.items() if c == "nvlink.speed"]
    assert speed and {(r.gpu, r.subject) for r in speed} == {(1, f"gpu1/link{r.link}") for r in speed}
    errs = [r for (c, _), r in bad.items() if c == "nvlink.errors"]
    assert errs and all(r.gpu == 5 and r.link is not None for r in errs)
    p2p = [r for (c, _), r in bad.items() if c == "topo.p2p"]
    assert p2p and all(2 in (r.gpu, r.peer_gpu) and r.gpu < r.peer_gpu for r in p2p)  # type: ignore[operator]
    nic = bad["topo.nic_affinity", "mlx5_3"]
    assert (nic.device, nic.gpu, nic.port) == ("mlx5_3", None, None)  # about the NIC, not its nearest GPU
    assert (bad["ib.port.rate", "mlx5_1/1"].device, bad["ib.port.rate", "mlx5_1/1"].port) == ("mlx5_1", 1)
    assert bad["ib.firmware", "mlx5_2"].device == "mlx5_2"
    assert (bad["ib.write_bw", "mlx5_0/1"].device, bad["ib.write_bw", "mlx5_0/1"].port) == ("mlx5_0", 1)
    assert bad["xid.events", "gpu4"].gpu == 4
    sx = [r for (c, _), r in bad.items() if c == "xid.sxid"]
    assert sx and all(r.gpu is None and r.device is None for r in sx)  # an NVSwitch's PCI address
    assert bad["storage.metadata.p50", "/mnt/data"].path == "/mnt/data"
    assert bad["stress.gemm", "gpu3"].gpu == 3 and bad["stress.dcgm", "gpu6"].gpu == 6
    weights = next(r for r in checks if r.check == "storage.weights")
    assert weights.path == weights.subject == "/models/llama-70b"
    disk = next(r for r in checks if r.check == "system.disk.free")
    assert disk.path == disk.subject and disk.path.startswith("/")  # type: ignore[union-attr]


def test_node_wide_checks_carry_no_subject_fields(checks):
    for cid in ("gpu.count", "gpu.driver", "system.memory", "system.cpus", "ib.rails", "ib.gdr", "xid.log"):
        for r in (r for r in checks if r.check == cid and r.subject is None):
            assert all(getattr(r, f) is None for f in FIELDS), (cid, r)
    assert any(r.check == "gpu.count" for r in checks)


def test_the_helpers_spell_the_subjects_as_before():
    assert on_gpu(5) == {"subject": "gpu5", "gpu": 5}
    assert on_link(3, 7) == {"subject": "gpu3/link7", "gpu": 3, "link": 7}
    assert on_pair(2, 5) == {"subject": "gpu2-gpu5", "gpu": 2, "peer_gpu": 5}
    assert on_port("mlx5_2", 1) == {"subject": "mlx5_2/1", "device": "mlx5_2", "port": 1}
    assert on_device("mlx5_2") == {"subject": "mlx5_2", "device": "mlx5_2"}
    assert on_path("/mnt/weights") == {"subject": "/mnt/weights", "path": "/mnt/weights"}
    r = CheckResult(check="nvlink.speed", **on_link(3, 7), status=Status.FAIL)
    assert json.loads(r.model_dump_json())["link"] == 7


# ------------------------------------------------------------------------------ reading old reports
OLD_REPORT = {
    "schema": "clusterkit.report/v1", "clusterkit_version": "0.1.0", "created": "2025-03-04T05:06:07+00:00",
    "source": "sim:builtin", "profile": "h100-sxm",
    "summary": {"nodes": 1, "failed": 1, "checks": {"fail": 1}, "exit_code": 1},
    "nodes": [{"node": "gpu-003", "status": "fail", "checks": [
        {"check": "gpu.ecc.uncorrectable", "subject": "gpu5", "status": "fail", "value": 2, "threshold": 0,
         "unit": "errors", "message": "2 volatile uncorrectable ECC errors since driver load"}]}],
}


def test_an_older_report_without_the_new_fields_still_loads():
    rep = FleetReport.model_validate_json(json.dumps(OLD_REPORT))
    c = rep.nodes[0].checks[0]
    assert (c.check, c.subject, c.status, c.value) == ("gpu.ecc.uncorrectable", "gpu5", Status.FAIL, 2)
    assert all(getattr(c, f) is None for f in FIELDS)  # not made up from the subject text
    assert rep.job_id is None and rep.partition is None
    assert re.fullmatch(r"[0-9a-f]{32}", rep.run_id)


def test_run_id_is_fresh_per_run_and_kept_through_a_saved_report():
    a, b = FleetReport(), FleetReport()
    assert a.run_id != b.run_id and re.fullmatch(r"[0-9a-f]{32}", a.run_id)
    a.job_id, a.partition = "123456", "gpu"
    again = FleetReport.model_validate_json(a.to_json())
    assert (again.run_id, again.job_id, again.partition) == (a.run_id, "123456", "gpu")
    doc = json.loads(a.to_json())
    assert {"run_id", "job_id", "partition"} <= set(doc)
