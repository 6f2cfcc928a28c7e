"""The storage domain: mount tables in the kernel's formats, stat -f in child processes (a hung
mount costs only its own path, within the deadline), the real metadata helper in a temp dir,
real fio and a real O_DIRECT weights read, the simulator's storage view, and total judges."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from clusterkit.models import Status
from clusterkit.profiles import MountRule, Profile, StorageProfile, load_profile, parse_profile
from clusterkit.errors import ConfigError
from clusterkit.validate import storage
from clusterkit.validate.context import ProbeContext
from clusterkit.validate.storage import (FioRun, MetadataRun, MountEntry, MountState, StatFs, StorageMeasurement,
                                         WeightsRun)

FIO = shutil.which("fio")

# Real lines: proc(5)'s example, an NFSv4.1 mount, a Lustre client, a mount point with a space.
MOUNTINFO = r"""22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
25 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
30 22 0:26 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,inode64
412 22 0:58 / /mnt/data rw,relatime shared:230 - nfs4 10.20.0.2:/export/data rw,vers=4.1,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.20.0.11,local_lock=none,addr=10.20.0.2
433 22 0:61 / /lustre rw,relatime shared:241 - lustre 10.0.0.1@o2ib:/fs1 rw,flock,lazystatfs,encrypt
450 22 0:70 / /mnt/my\040data rw,relatime shared:250 - xfs /dev/md1 rw,attr2,inode64,noquota
451 22 0:71 / /mnt/data rw,relatime shared:251 - nfs4 10.20.0.3:/export/over rw,vers=4.2,hard
"""

PROC_MOUNTS = """/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0
10.20.0.2:/export/data /mnt/data nfs4 rw,relatime,vers=4.1,hard,proto=tcp 0 0
"""


def write_proc(root: Path, mounts: list[tuple[str, str]], *, extra: str = "") -> Path:
    """A procfs root whose self/mountinfo lists ``mounts`` (mount point, fstype)."""
    lines = [f"{30 + i} 1 0:{40 + i} / {mp.replace(' ', chr(92) + '040')} rw,relatime shared:{i} - {fs} src{i} rw"
             for i, (mp, fs) in enumerate(mounts)]
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "self" / "mountinfo").write_text("\n".join(lines) + "\n" + extra)
    return root


def profile_with(**storage_kw: Any) -> Profile:
    return Profile(name="t", storage=StorageProfile(**storage_kw))


def ctx_for(tmp: Path, procfs: Path, *, opt_in: frozenset[str] = frozenset(), deadline_s: float = 60.0,
            tool_path: Optional[list[str]] = None) -> ProbeContext:
    return ProbeContext.around(procfs_root=str(procfs), state_dir=str(tmp / "state"), deadline_s=deadline_s,
                               opt_in=opt_in, tool_path=tool_path or [])


def results(m: StorageMeasurement, p: Profile) -> dict[tuple[str, Optional[str]], Any]:
    return {(r.check, r.subject): r for r in storage.judge(m, p)}


# ------------------------------------------------------------------------------ mount tables
def test_mountinfo_real_lines_are_read_field_by_field():
    entries = storage.parse_mountinfo(MOUNTINFO)
    assert [e.mount_point for e in entries] == ["/", "/mnt/parent", "/proc", "/dev/shm", "/mnt/data", "/lustre",
                                                "/mnt/my data", "/mnt/data"]
    parent = entries[1]
    assert (parent.fstype, parent.source, parent.options, parent.super_options) == (
        "ext3", "/dev/root", ["rw", "noatime"], ["rw", "errors=continue"])
    nfs = storage.find_mount(entries, "/mnt/data/")  # the later mount hides the earlier one
    assert nfs is not None and nfs.source == "10.20.0.3:/export/over" and "vers=4.2" in nfs.super_options
    lustre = storage.find_mount(entries, "/lustre")
    assert lustre is not None and lustre.fstype == "lustre" and lustre.source == "10.0.0.1@o2ib:/fs1"
    assert storage.find_mount(entries, "/mnt/my data") is not None
    assert storage.find_mount(entries, "/mnt") is None
    assert storage.parse_mountinfo("garbage\n\n1 2 3\n") == []


def test_proc_mounts_is_the_fallback(tmp_path):
    (tmp_path / "mounts").write_text(PROC_MOUNTS)
    entries, source, error = storage.read_mount_table(ctx_for(tmp_path, tmp_path))
    assert error is None and source == str(tmp_path / "mounts")
    data = storage.find_mount(entries or [], "/mnt/data")
    assert data is not None and data.options[-1] == "proto=tcp"
    entries, source, error = storage.read_mount_table(ctx_for(tmp_path, tmp_path / "nowhere"))
    assert entries is None and "No such file" in (error or "")


def test_the_real_proc_is_read_when_there_is_one(tmp_path):
    if not os.path.exists("/proc/self/mountinfo"):
        pytest.skip("no /proc/self/mountinfo on this system")
    entries, source, error = storage.read_mount_table(ctx_for(tmp_path, Path("/proc")))
    assert error is None and source == "/proc/self/mountinfo"
    assert entries is not None and storage.find_mount(entries, "/") is not None


def test_fstype_and_option_matching():
    assert storage.fstype_matches("nfs4", ["nfs"]) and storage.fstype_matches("nfs", ["nfs"])
    assert not storage.fstype_matches("nfs", ["nfs4"]) and not storage.fstype_matches("ext4", ["lustre", "gpfs"])
    assert storage.fstype_matches("wekafs", [])
    e = MountEntry(mount_point="/m", fstype="nfs4", options=["rw"], super_options=["vers=4.1", "hard"])
    assert storage.missing_options(e, ["rw", "hard", "vers=4.1"]) == []
    assert storage.missing_options(e, ["ro", "vers=4.2", "noatime"]) == ["ro", "vers=4.2", "noatime"]


# ------------------------------------------------------------------------------ probe on real paths
def test_real_mounts_stat_in_child_processes_and_pass(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b c"
    a.mkdir()
    b.mkdir()
    proc = write_proc(tmp_path / "proc", [(str(a), "ext4"), (str(b), "xfs")])
    p = profile_with(mounts=[MountRule(path=str(a), fstype=["ext4", "xfs"], inodes_free_pct_min=1, free_gib_min=0.001),
                             MountRule(path=str(b), fstype="xfs", options=["rw", "relatime"]),
                             MountRule(path=str(tmp_path / "gone"), fstype="nfs")])
    m = storage.probe(ctx_for(tmp_path, proc), p)
    r = results(m, p)
    assert r["storage.mount", str(a)].status is Status.PASS and r["storage.mount", str(b)].status is Status.PASS
    assert r["storage.free", str(a)].status is Status.PASS and r["storage.free", str(a)].unit == "GiB"
    assert r["storage.inodes", str(a)].status is Status.PASS
    gone = r["storage.mount", str(tmp_path / "gone")]
    assert gone.status is Status.FAIL and gone.message.startswith("not mounted (expected nfs")
    assert ("storage.free", str(tmp_path / "gone")) not in r  # the parent's figures would mislead
    st = m.mounts[0].stat
    assert st is not None and st.total_bytes and st.avail_bytes is not None and st.files
    assert not any(x.status is Status.ERROR for x in r.values())


def stat_that_hangs_on(tools: Path, hung: Path) -> Path:
    """A ``stat`` first on the tool path that blocks on one path, as stat -f does on a hung NFS
    mount, and runs the real stat for every other."""
    tools.mkdir(parents=True, exist_ok=True)
    real = shutil.which("stat") or "/usr/bin/stat"
    script = tools / "stat"
    script.write_text(f"#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = '{hung}' ] && exec sleep 600; done\n"
                      f"exec {real} \"$@\"\n")
    script.chmod(0o755)
    return tools


def test_a_hung_mount_is_error_within_its_timeout_and_the_others_still_report(tmp_path):
    good, hung = tmp_path / "good", tmp_path / "hung"
    good.mkdir()
    hung.mkdir()
    proc = write_proc(tmp_path / "proc", [(str(good), "nfs4"), (str(hung), "nfs4")])
    tools = stat_that_hangs_on(tmp_path / "tools", hung)
    p = profile_with(mounts=[MountRule(path=str(good), fstype="nfs"), MountRule(path=str(hung), fstype="nfs")],
                     stat_timeout_s=1.0)
    started = time.monotonic()
    m = storage.probe(ctx_for(tmp_path, proc, tool_path=[str(tools)]), p)
    took = time.monotonic() - started
    assert took < 4.0, took
    r = results(m, p)
    assert r["storage.mount", str(good)].status is Status.PASS
    bad = r["storage.mount", str(hung)]
    assert bad.status is Status.ERROR and "did not answer within 1s" in bad.message and "hung" in bad.message
    assert r["storage.free", str(hung)].status is Status.ERROR and r["storage.inodes", str(hung)].status is Status.ERROR
    assert r["storage.free", str(good)].status is Status.PASS


def test_a_hung_mount_never_keeps_node_check_past_its_deadline(tmp_path):
    from clusterkit.validate.runner import run_node_check

    hung = tmp_path / "hung"
    hung.mkdir()
    proc = write_proc(tmp_path / "proc", [(str(hung), "nfs4")])
    tools = stat_that_hangs_on(tmp_path / "tools", hung)
    p = profile_with(mounts=[MountRule(path=str(hung), fstype="nfs")], stat_timeout_s=60.0)
    ctx = ctx_for(tmp_path, proc, tool_path=[str(tools)], deadline_s=3.0)
    started = time.monotonic()
    rep = run_node_check(p, ["storage"], ctx)
    assert time.monotonic() - started < 4.0
    by = {(c.check, c.subject): c for c in rep.checks}
    assert by["storage.mount", str(hung)].status is Status.ERROR
    # the stat gets what is left but a second (kept for the report)
    assert re.search(r"did not answer within (1\.\d|2)s", by["storage.mount", str(hung)].message)


def test_no_storage_section_means_no_storage_checks(tmp_path):
    m = storage.probe(ctx_for(tmp_path, tmp_path), Profile(name="t"))
    assert not m.configured and storage.judge(m, Profile(name="t")) == []


# ------------------------------------------------------------------------------ opt-in tests, real
def test_metadata_helper_runs_on_real_files_and_leaves_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-I", "-c", storage.HELPER_SOURCE, "metadata", str(tmp_path), "50", "10"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    doc = json.loads(out.stdout)
    assert doc["files"] == 50 and set(doc["p50_ms"]) == {"create", "stat", "open", "unlink"}
    assert all(0 < doc["p50_ms"][k] <= doc["p99_ms"][k] for k in doc["p50_ms"])
    assert list(tmp_path.iterdir()) == []
    bad = subprocess.run([sys.executable, "-I", "-c", storage.HELPER_SOURCE, "metadata", str(tmp_path / "no"), "5",
                          "1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "No such file or directory" in json.loads(bad.stdout)["error"]


def test_metadata_probe_on_a_real_directory(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    proc = write_proc(tmp_path / "proc", [(str(d), "ext4")])
    p = profile_with(mounts=[MountRule(path=str(d))], metadata_files=40, metadata_p50_ms_max=1000.0,
                     metadata_p99_ms_max=5000.0)
    m = storage.probe(ctx_for(tmp_path, proc, opt_in=frozenset({storage.METADATA})), p)
    r = results(m, p)
    for q in ("p50", "p99"):
        res = r[f"storage.metadata.{q}", str(d)]
        assert res.status is Status.PASS and res.unit == "ms" and isinstance(res.value, float) and res.value > 0
    assert m.metadata[0].files == 40 and not list(d.iterdir())
    # a ceiling no disk meets: fail, naming the slowest operation
    tight = profile_with(mounts=[MountRule(path=str(d))], metadata_files=40, metadata_p50_ms_max=1e-9)
    res = results(m, tight)["storage.metadata.p50", str(d)]
    assert res.status is Status.FAIL and "above 1e-09 ms" in res.message


def test_metadata_on_an_unwritable_mount_is_error_not_fail(tmp_path):
    proc = write_proc(tmp_path / "proc", [("/proc", "proc")])
    p = profile_with(mounts=[MountRule(path="/proc", bench_dir="/proc/sys")])
    m = storage.probe(ctx_for(tmp_path, proc, opt_in=frozenset({storage.METADATA})), p)
    res = results(m, p)["storage.metadata", "/proc"]
    assert res.status is Status.ERROR and res.message.startswith("metadata test: ")


def make_weights(d: Path, files: int = 3, mib: int = 8) -> int:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (d / f"model-{i:05d}-of-{files:05d}.safetensors").write_bytes(os.urandom(1024) * (mib * 1024))
    (d / "config.json").write_text("{}")
    return files * mib * 1024 * 1024 + 2


def test_weights_read_with_o_direct_on_a_real_directory(tmp_path):
    total = make_weights(tmp_path / "w")
    p = profile_with(weights_dir=str(tmp_path / "w"), weights_gbps_min=1e-6, model_size_gib=130)
    m = storage.probe(ctx_for(tmp_path, tmp_path, opt_in=frozenset({storage.WEIGHTS})), p)
    w = m.weights
    assert w is not None and w.error is None and w.bytes == total and w.files == 4
    res = results(m, p)["storage.weights", str(tmp_path / "w")]
    assert res.unit == "GB/s" and res.value and res.value > 0 and "model loads in" in res.message
    if w.method == "direct":
        assert res.status is Status.PASS and "O_DIRECT" in res.message
    else:  # a file system without O_DIRECT: evicted first
        assert w.method == "evict" and res.status is Status.PASS


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK), reason="no writable /dev/shm")
def test_weights_on_tmpfs_evict_first_and_say_so(tmp_path):
    d = Path(os.environ.get("CK_SHM", "/dev/shm")) / f"ck-weights-{os.getpid()}"
    try:
        make_weights(d, files=1, mib=4)
        p = profile_with(weights_dir=str(d))
        m = storage.probe(ctx_for(tmp_path, tmp_path, opt_in=frozenset({storage.WEIGHTS})), p)
        assert m.weights is not None and m.weights.error is None
        assert m.weights.method in ("evict", "direct")  # tmpfs refuses O_DIRECT on most kernels
        msg = results(m, p)["storage.weights", str(d)].message
        assert ("evicted first" in msg) if m.weights.method == "evict" else ("O_DIRECT" in msg)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_weights_without_a_directory_or_files_is_error(tmp_path):
    p = profile_with()
    m = storage.probe(ctx_for(tmp_path, tmp_path, opt_in=frozenset({storage.WEIGHTS})), p)
    res = results(m, p)["storage.weights", None]
    assert res.status is Status.ERROR and "--weights-dir" in res.message
    (tmp_path / "empty").mkdir()
    p = profile_with(weights_dir=str(tmp_path / "empty"))
    m = storage.probe(ctx_for(tmp_path, tmp_path, opt_in=frozenset({storage.WEIGHTS})), p)
    res = results(m, p)["storage.weights", str(tmp_path / "empty")]
    assert res.status is Status.ERROR and "no files to read" in res.message


@pytest.mark.skipif(FIO is None, reason="fio is not installed (apt-get install fio)")
def test_real_fio_in_a_temp_directory(tmp_path):
    d = tmp_path / "fio"
    d.mkdir()
    proc = write_proc(tmp_path / "proc", [(str(d), "ext4")])
    p = profile_with(mounts=[MountRule(path=str(d))], fio_runtime_s=1, fio_size_mib=16, fio_read_mibps_min=0.001,
                     fio_write_mibps_min=0.001, fio_randread_iops_min=0.001)
    m = storage.probe(ctx_for(tmp_path, proc, opt_in=frozenset({storage.FIO})), p)
    run = m.fio[0]
    assert run.error is None, run.error
    assert run.read_mibps and run.write_mibps and run.randread_iops
    assert run.version and run.version.startswith("fio-")
    r = results(m, p)
    assert {r[c, str(d)].status for c in ("storage.fio.read_bw", "storage.fio.write_bw",
                                         "storage.fio.randread_iops")} == {Status.PASS}
    assert r["storage.fio.randread_iops", str(d)].unit == "IOPS"
    assert not list(d.iterdir())  # the test file is gone


@pytest.mark.skipif(FIO is None, reason="fio is not installed (apt-get install fio)")
def test_real_fio_where_o_direct_is_refused_runs_buffered_and_says_so(tmp_path):
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    d = Path("/dev/shm") / f"ck-fio-{os.getpid()}"
    d.mkdir()
    try:
        proc = write_proc(tmp_path / "proc", [(str(d), "tmpfs")])
        p = profile_with(mounts=[MountRule(path=str(d))], fio_runtime_s=1, fio_size_mib=8)
        m = storage.probe(ctx_for(tmp_path, proc, opt_in=frozenset({storage.FIO})), p)
        run = m.fio[0]
        assert run.error is None, run.error
        res = results(m, p)["storage.fio.read_bw", str(d)]
        if run.direct is False:
            assert "buffered" in res.message
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_fio_argv_is_time_boxed_json_with_the_three_jobs():
    argv = storage.fio_argv("/mnt/data", "f", size_mib=64, runtime_s=2, direct=True)
    assert argv[:2] == ["fio", "--output-format=json"] and "--time_based" in argv and "--runtime=2" in argv
    assert [a for a in argv if a.startswith("--name=")] == ["--name=seqwrite", "--name=seqread", "--name=randread"]
    assert argv.count("--bs=1M") == 2 and "--bs=4k" in argv and "--direct=1" in argv


# ------------------------------------------------------------------------------ the simulator
def test_sim_view_mounts_the_fault_paths_and_applies_the_faults(tmp_path):
    from clusterkit.sim import Fault, SimHardware, SimNode
    from clusterkit.sim.context import mountinfo_text, storage_view

    faults = [Fault(node="n1", kind="mount_missing", path="/mnt/a"),
              Fault(node="n1", kind="mount_wrong_fs", path="/mnt/b", value="xfs"),
              Fault(node="n1", kind="mount_hang", path="/mnt/c"),
              Fault(node="n1", kind="metadata_slow", path="/mnt/d", value=40),
              Fault(node="n1", kind="fio_slow", value=4), Fault(node="n1", kind="weights_slow", value=0.5)]
    view = storage_view(SimNode("n1", SimHardware(), faults), str(tmp_path))
    entries = storage.parse_mountinfo(mountinfo_text(view))
    assert storage.find_mount(entries, "/mnt/a") is None
    fstypes = {mp: getattr(storage.find_mount(entries, mp), "fstype", None) for mp in ("/mnt/b", "/mnt/c", "/")}
    assert fstypes == {"/mnt/b": "xfs", "/mnt/c": "nfs4", "/": "ext4"} and view["hung"] == ["/mnt/c"]
    assert view["metadata_ms"] == {"/mnt/d": 40.0} and view["weights_gbps"] == 0.5
    assert view["fio"]["read_mibps"] == 2000.0


# ------------------------------------------------------------------------------ judges
def test_judges_are_total_over_unread_fields():
    """Every combination of unread figures gives error/skip/pass, never a crash, never a fail."""
    p = load_profile("h100-sxm")
    p = p.model_copy(update={"storage": StorageProfile(
        mounts=[MountRule(path="/m", fstype="nfs", free_gib_min=1, free_pct_min=1, inodes_free_pct_min=1)],
        metadata_p50_ms_max=1, metadata_p99_ms_max=1, fio_read_mibps_min=1, fio_write_mibps_min=1,
        fio_randread_iops_min=1, weights_gbps_min=1, model_size_gib=1)})
    entry = MountEntry(mount_point="/m", fstype="nfs4")
    stats = [None, StatFs(), StatFs(error="x"), StatFs(hung=True, error="did not answer within 5s"),
             StatFs(total_bytes=None, avail_bytes=1, files=None, files_free=None),
             StatFs(total_bytes=10 * 2**30, avail_bytes=5 * 2**30, files=None, files_free=None),
             StatFs(total_bytes=None, avail_bytes=None, files=0, files_free=0)]
    for st, meta, fio, w, table_err in itertools.product(
            stats, [MetadataRun(path="/m"), MetadataRun(path="/m", error="e"),
                    MetadataRun(path="/m", files=3, p50_ms={"create": None}, p99_ms={})],
            [FioRun(path="/m"), FioRun(path="/m", error="e")],
            [None, WeightsRun(path="/w"), WeightsRun(path="/w", bytes=5, seconds=0.0), WeightsRun(path="/w", error="e")],
            [None, "unreadable"]):
        m = StorageMeasurement(configured=True, mounts=[MountState(path="/m", entry=None if table_err else entry,
                                                                    stat=st)],
                               mount_table_error=table_err, metadata_requested=True, metadata=[meta],
                               fio_requested=True, fio=[fio], weights_requested=True, weights=w)
        out = storage.judge(m, p)
        assert out, (st, meta, fio, w)
        assert all(r.status is not Status.FAIL for r in out if r.check != "storage.mount"), out
        assert all(r.check in storage.CHECKS for r in out)


def test_judge_floors_and_messages():
    p = Profile(name="t", storage=StorageProfile(
        mounts=[MountRule(path="/m", fstype=["lustre"], free_gib_min=100, inodes_free_pct_min=10),
                MountRule(path="/n", options=["hard"], free_pct_min=20)],
        fio_read_mibps_min=1000, weights_gbps_min=2, model_size_gib=130))
    gib = 2**30
    m = StorageMeasurement(configured=True, mounts=[
        MountState(path="/m", entry=MountEntry(mount_point="/m", fstype="nfs4", source="s:/e"),
                   stat=StatFs(total_bytes=1000 * gib, avail_bytes=50 * gib, files=100, files_free=5)),
        MountState(path="/n", entry=MountEntry(mount_point="/n", fstype="nfs4", super_options=["soft"]),
                   stat=StatFs(total_bytes=100 * gib, avail_bytes=10 * gib, files=0, files_free=0))],
        fio_requested=True, fio=[FioRun(path="/m", direct=True, read_mibps=500, write_mibps=10, randread_iops=5)],
        weights_requested=True, weights=WeightsRun(path="/w", files=2, bytes=3 * 10**9, seconds=1.0,
                                                   method="buffered"))
    r = results(m, p)
    assert r["storage.mount", "/m"].status is Status.FAIL
    assert r["storage.mount", "/m"].message == "mounted as nfs4 from s:/e, expected lustre"
    assert r["storage.mount", "/n"].status is Status.FAIL and "without option(s) hard" in r["storage.mount", "/n"].message
    assert r["storage.free", "/m"].status is Status.FAIL and "below 100 GiB" in r["storage.free", "/m"].message
    assert r["storage.free", "/n"].status is Status.FAIL and "10.0% free" in r["storage.free", "/n"].message
    assert r["storage.inodes", "/m"].status is Status.FAIL and r["storage.inodes", "/m"].value == 5.0
    assert r["storage.inodes", "/n"].status is Status.SKIP
    assert r["storage.fio.read_bw", "/m"].status is Status.FAIL
    assert r["storage.fio.write_bw", "/m"].status is Status.PASS  # no floor
    w = r["storage.weights", "/w"]
    assert w.status is Status.WARN and "page cache may have served it" in w.message and w.value == 3.0
    assert "loads in ~47s" in w.message


def test_profile_storage_section_is_checked():
    text = ("name: x\nstorage:\n  mounts:\n    - {path: /mnt/data, fstype: [nfs, nfs4], options: [hard]}\n"
            "    - {path: /mnt/data}\n")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_profile(text, "x.yaml")
    with pytest.raises(ConfigError):
        parse_profile("name: x\nstorage:\n  mounts:\n    - {path: relative}\n", "x.yaml")
    ok = parse_profile("name: x\nstorage:\n  mounts:\n    - {path: /lustre, fstype: lustre}\n", "x.yaml")
    assert ok.storage is not None and ok.storage.mounts[0].fstype == "lustre"
    builtin = load_profile("h100-sxm").storage
    assert builtin is not None and [r.path for r in builtin.mounts] == ["/"] and not builtin.mounts[0].bench


def test_opt_in_flags_and_named_checks():
    assert storage.opt_in(False, None, None) == set()
    assert storage.opt_in(True, None, None) == {storage.METADATA, storage.FIO}
    assert storage.opt_in(False, "/w", None) == {storage.WEIGHTS}
    assert storage.opt_in(False, None, ["storage.fio.read_bw"]) == {storage.FIO}
    assert storage.opt_in(False, None, ["storage"]) == set()
    p = storage.with_weights_dir(Profile(name="t"), "/models")
    assert p.storage is not None and p.storage.weights_dir == "/models"
