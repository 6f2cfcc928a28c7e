"""The storage domain as a user meets it: validate on a simulated fleet with every storage
fault (and the opt-in flags), node-check on this machine's real directories (real stat -f,
real fio, a real O_DIRECT read), and a hung mount that costs only its own path."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import ck, one_error_line

PROFILE = """\
name: storage-test
storage:
  mounts:
    - {path: /, inodes_free_pct_min: 5, bench: false}
    - {path: /mnt/data, fstype: [nfs, lustre], options: [hard], free_gib_min: 100, inodes_free_pct_min: 5}
  stat_timeout_s: 2
  metadata_files: 30
  metadata_p50_ms_max: 10
  metadata_p99_ms_max: 100
  fio_runtime_s: 1
  fio_size_mib: 16
  fio_read_mibps_min: 1000
  fio_write_mibps_min: 500
  fio_randread_iops_min: 10000
  weights_read_s: 2
  weights_gbps_min: 1.0
  model_size_gib: 130
"""

FLEET = """\
name: storage-faults
nodes: [healthy, missing, wrong-fs, hang, meta-slow, fio-slow, weights-slow]
faults:
  - {node: missing, kind: mount_missing, path: /mnt/data}
  - {node: wrong-fs, kind: mount_wrong_fs, path: /mnt/data, value: xfs}
  - {node: hang, kind: mount_hang, path: /mnt/data}
  - {node: meta-slow, kind: metadata_slow, path: /mnt/data, value: 150}
  - {node: fio-slow, kind: fio_slow, value: 20}
  - {node: weights-slow, kind: weights_slow, value: 0.5}
"""


def bad_of(doc: dict) -> set[tuple[str, str, str | None, str]]:
    return {(n["node"], c["check"], c["subject"], c["status"])
            for n in doc["nodes"] for c in n["checks"] if c["status"] not in ("pass", "skip")}


def test_validate_sim_flags_every_storage_fault_with_the_opt_in_flags(tmp_path):
    (tmp_path / "fleet.yaml").write_text(FLEET)
    (tmp_path / "profile.yaml").write_text(PROFILE)
    env = {"CLUSTERKIT_SIM_ROOT": str(tmp_path / "sim")}
    started = time.monotonic()
    p = ck("validate", "--sim", str(tmp_path / "fleet.yaml"), "--profile", str(tmp_path / "profile.yaml"),
           "--checks", "storage", "--storage-bench", "--weights-dir", "/models/llama-70b", "--json", env=env)
    took = time.monotonic() - started
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert bad_of(doc) == {
        ("missing", "storage.mount", "/mnt/data", "fail"),
        ("wrong-fs", "storage.mount", "/mnt/data", "fail"),
        ("hang", "storage.mount", "/mnt/data", "error"),
        ("hang", "storage.free", "/mnt/data", "error"),
        ("hang", "storage.inodes", "/mnt/data", "error"),
        ("meta-slow", "storage.metadata.p50", "/mnt/data", "fail"),
        ("meta-slow", "storage.metadata.p99", "/mnt/data", "fail"),
        ("fio-slow", "storage.fio.read_bw", "/mnt/data", "fail"),
        ("fio-slow", "storage.fio.write_bw", "/mnt/data", "fail"),
        ("fio-slow", "storage.fio.randread_iops", "/mnt/data", "fail"),
        ("weights-slow", "storage.weights", "/models/llama-70b", "fail"),
    }
    assert took < 60, took  # the hung mount cost its 2 s stat timeout, not node-check's deadline
    by = {(n["node"], c["check"], c["subject"]): c for n in doc["nodes"] for c in n["checks"]}
    assert by["wrong-fs", "storage.mount", "/mnt/data"]["message"].startswith("mounted as xfs")
    assert "did not answer within 2s" in by["hang", "storage.mount", "/mnt/data"]["message"]
    assert by["missing", "storage.mount", "/mnt/data"]["message"].startswith("not mounted (expected nfs/lustre")
    assert by["healthy", "storage.mount", "/mnt/data"]["message"].startswith("nfs4 from 10.20.0.2:/export/mnt/data")
    assert by["healthy", "storage.fio.read_bw", "/mnt/data"]["value"] == 8000.0
    assert by["fio-slow", "storage.fio.read_bw", "/mnt/data"]["value"] == 400.0
    assert by["healthy", "storage.weights", "/models/llama-70b"]["value"] == 5.0
    slow = by["weights-slow", "storage.weights", "/models/llama-70b"]
    assert slow["value"] == 0.5 and "loads in ~279s" in slow["message"] and "O_DIRECT" in slow["message"]
    assert by["meta-slow", "storage.metadata.p50", "/mnt/data"]["value"] >= 150
    assert by["healthy", "storage.metadata.p99", "/mnt/data"]["value"] < 100
    # no bench on a mount that is not there or does not answer
    assert not any(k for k in by if k[0] in ("missing", "hang") and k[1].startswith(("storage.fio", "storage.meta")))
    # the default run: cheap and read-only, no opt-in check
    p = ck("validate", "--sim", str(tmp_path / "fleet.yaml"), "--profile", str(tmp_path / "profile.yaml"),
           "--checks", "storage", "--nodes", "healthy,fio-slow,weights-slow,meta-slow", "--json", env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert {c["check"] for n in doc["nodes"] for c in n["checks"]} == {"storage.mount", "storage.free",
                                                                      "storage.inodes"}


def test_the_builtin_fleet_and_profile_pass_the_default_storage_checks(tmp_path):
    p = ck("validate", "--sim", "--nodes", "gpu-001", "--checks", "storage", "--json",
           env={"CLUSTERKIT_SIM_ROOT": str(tmp_path / "sim")})
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert {(c["check"], c["subject"], c["status"]) for c in doc["nodes"][0]["checks"]} == {
        ("storage.mount", "/", "pass"), ("storage.free", "/", "pass"), ("storage.inodes", "/", "pass")}


def real_setup(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A procfs root whose mountinfo lists a real temp directory as an ext4 mount."""
    data = tmp_path / "data"
    data.mkdir()
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        f"22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        f"40 22 252:1 / {data} rw,relatime shared:2 - ext4 /dev/vda1 rw,errors=remount-ro\n")
    prof = tmp_path / "p.yaml"
    prof.write_text(f"name: real\nstorage:\n  mounts:\n    - {{path: {data}, fstype: ext4, options: [rw]}}\n"
                    f"    - {{path: {tmp_path / 'lustre'}, fstype: lustre}}\n"
                    "  fio_runtime_s: 1\n  fio_size_mib: 16\n  metadata_files: 20\n  weights_read_s: 2\n")
    return data, {"CLUSTERKIT_PROCFS_ROOT": str(proc), "CLUSTERKIT_STATE_DIR": str(tmp_path / "state")}, prof


def test_node_check_on_real_directories_with_real_fio_and_a_real_weights_read(tmp_path):
    if shutil.which("fio") is None:
        pytest.skip("fio is not installed (apt-get install fio)")
    data, env, prof = real_setup(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(os.urandom(1 << 20) * 8)
    p = ck("node-check", "--profile", str(prof), "--checks", "storage", "--storage-bench", "--weights-dir",
           str(weights), "--json", env=env)
    doc = json.loads(p.stdout)
    by = {(c["check"], c["subject"]): c for c in doc["checks"]}
    assert p.returncode == 1, p.stdout  # the lustre mount is not there
    assert by["storage.mount", str(tmp_path / "lustre")]["status"] == "fail"
    assert by["storage.mount", str(data)]["status"] == "pass"
    for check in ("storage.free", "storage.inodes", "storage.metadata.p50", "storage.metadata.p99",
                  "storage.fio.read_bw", "storage.fio.write_bw", "storage.fio.randread_iops"):
        assert by[check, str(data)]["status"] == "pass", by[check, str(data)]
    w = by["storage.weights", str(weights)]
    assert w["status"] == "pass" and w["value"] > 0 and w["unit"] == "GB/s"
    assert doc["measurements"]["storage"]["weights"]["bytes"] == 8 << 20
    assert not list(data.iterdir())  # fio's file and the metadata directory are gone


def test_node_check_names_an_opt_in_check_to_ask_for_it(tmp_path):
    data, env, prof = real_setup(tmp_path)
    p = ck("node-check", "--profile", str(prof), "--checks", "storage.metadata", "--json", env=env)
    doc = json.loads(p.stdout)
    assert {c["check"] for c in doc["checks"] if c["status"] != "error"} == {"storage.metadata.p50",
                                                                              "storage.metadata.p99"}
    p = ck("node-check", "--profile", str(prof), "--checks", "storage.weights", "--json", env=env)
    doc = json.loads(p.stdout)
    w = [c for c in doc["checks"] if c["check"] == "storage.weights"]
    assert p.returncode == 3 and w[0]["status"] == "error" and "--weights-dir" in w[0]["message"]


def test_node_check_with_a_hung_mount_ends_by_its_deadline(tmp_path):
    (tmp_path / "fleet.yaml").write_text("nodes: 'n[1-2]'\nfaults:\n"
                                         "  - {node: n1, kind: mount_hang, path: /mnt/data}\n")
    (tmp_path / "p.yaml").write_text("name: x\nstorage:\n  mounts:\n    - {path: /mnt/data, fstype: nfs}\n"
                                     "  stat_timeout_s: 60\n")
    env = {"CLUSTERKIT_SIM": str(tmp_path / "fleet.yaml"), "CLUSTERKIT_NODE": "n1",
           "CLUSTERKIT_SIM_ROOT": str(tmp_path / "sim")}
    started = time.monotonic()
    p = ck("node-check", "--profile", str(tmp_path / "p.yaml"), "--checks", "storage", "--deadline", "6", "--json",
           env=env)
    assert time.monotonic() - started < 15
    assert p.returncode == 3, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    mount = next(c for c in doc["checks"] if c["check"] == "storage.mount")
    assert mount["status"] == "error" and "did not answer within" in mount["message"]


def test_validate_refuses_a_relative_weights_dir(tmp_path):
    p = ck("validate", "--sim", "--weights-dir", "models/x")
    assert p.returncode == 2
    assert one_error_line(p).endswith("--weights-dir models/x: give an absolute path (it is read on the nodes)")


def test_storage_checks_are_listed():
    doc = json.loads(ck("checks", "--json").stdout)
    assert {"storage.mount", "storage.free", "storage.inodes", "storage.metadata.p50", "storage.metadata.p99",
            "storage.fio.read_bw", "storage.fio.write_bw", "storage.fio.randread_iops",
            "storage.weights"} <= set(doc["domains"]["storage"]["checks"])
