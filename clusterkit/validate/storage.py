"""Storage domain: mounts, free space and inodes, and (opt-in) metadata latency, fio and the
read rate of a model-weights directory.

Nothing here touches a storage path in-process. A hung NFS or Lustre mount blocks ``stat()``
in the kernel, and a thread stuck there cannot be stopped: node-check would reach Slurm's 60 s
kill. So:

* the mount table is read from ``<procfs_root>/self/mountinfo`` (kernel memory: it never
  blocks), falling back to ``<procfs_root>/mounts``;
* free space and inodes come from ``stat -f`` run through ``ctx.run_tool``, one child process
  per path, all at once, each bounded by ``storage.stat_timeout_s`` and the deadline: a hung
  path costs only that path ("did not answer within 5 s"), and the others still report;
* the metadata test and the weights read run :data:`HELPER_SOURCE` (standard library only) in a
  child interpreter (``python -I -c``), and fio is the real ``fio``; all through the tool runner.

A tool named :data:`HELPER_TOOL` on the context's tool path replaces the built-in helper: that
is how the simulator's stand-in injects latency; on a real node there is none and the helper
runs. Check ids follow the fleet figures (``storage.fio.read_bw[/mnt/data]``): every figure
has the path as subject.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from typing import TYPE_CHECKING, Any, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import Profile
from clusterkit.validate.subjects import on_path

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.profiles import MountRule, StorageProfile
    from clusterkit.validate.context import ProbeContext

NAME = "storage"
DOC = "storage: expected mounts and their type, free space and inodes; opt-in metadata latency, fio, weights read"
CHECKS: dict[str, str] = {
    "storage.mount": "an expected mount missing, of another type or without its options (fail); "
                     "its stat hangs or the mount table is unreadable (error)",
    "storage.free": "free space on a mount below the profile's floor (fail)",
    "storage.inodes": "free inodes on a mount below the profile's floor (fail)",
    "storage.metadata": "opt-in (--storage-bench): the metadata test could not run (error)",
    "storage.metadata.p50": "opt-in (--storage-bench): median small-file create/stat/open/unlink latency above the "
                            "ceiling (fail)",
    "storage.metadata.p99": "opt-in (--storage-bench): p99 small-file create/stat/open/unlink latency above the "
                            "ceiling (fail)",
    "storage.fio": "opt-in (--storage-bench): fio could not run (error)",
    "storage.fio.read_bw": "opt-in (--storage-bench): fio sequential read, 1 MiB blocks, below the floor (fail)",
    "storage.fio.write_bw": "opt-in (--storage-bench): fio sequential write, 1 MiB blocks, below the floor (fail)",
    "storage.fio.randread_iops": "opt-in (--storage-bench): fio random read, 4 KiB blocks, below the floor (fail)",
    "storage.weights": "opt-in (--weights-dir): model-weights read rate below the floor (fail); the page cache may "
                       "have served it (warn)",
}

#: what ``ctx.opt_in`` holds for the opt-in checks
METADATA = "storage.metadata"
FIO = "storage.fio"
WEIGHTS = "storage.weights"
#: a tool of this name on the tool path replaces the built-in helper (the simulator's stand-in)
HELPER_TOOL = "clusterkit-storage-helper"
#: ``stat -f`` format: fundamental block size, blocks, free, available, inodes, free inodes, type
STAT_FORMAT = "%S %b %f %a %c %d %T"

GIB = 1024**3
MIB = 1024**2

# The helper: run as ``python -I -c HELPER_SOURCE OP ARGS...`` (standard library only, so it
# starts in milliseconds and needs nothing installed). Prints one JSON object.
HELPER_SOURCE = r'''
import json, math, mmap, os, sys, time

def _pct(xs, q):
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(math.ceil(q / 100.0 * len(s))) - 1))]

def metadata(root, n, max_s):
    """create (O_CREAT|O_EXCL, empty), stat, open+close, unlink of n files in a fresh directory."""
    clock = time.perf_counter
    d = os.path.join(root, ".clusterkit-meta-%s-%d" % (os.uname().nodename.split(".")[0], os.getpid()))
    os.mkdir(d, 0o700)
    lat = {"create": [], "stat": [], "open": [], "unlink": []}
    start = clock()
    try:
        for i in range(n):
            if clock() - start > max_s:
                break
            p = os.path.join(d, "f%06d" % i)
            t0 = clock()
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            t1 = clock()
            os.stat(p)
            t2 = clock()
            os.close(os.open(p, os.O_RDONLY))
            t3 = clock()
            os.unlink(p)
            t4 = clock()
            for op, a, b in (("create", t0, t1), ("stat", t1, t2), ("open", t2, t3), ("unlink", t3, t4)):
                lat[op].append((b - a) * 1000.0)
    finally:
        for name in os.listdir(d):
            try:
                os.unlink(os.path.join(d, name))
            except OSError:
                pass
        os.rmdir(d)
    return {"dir": d, "files": len(lat["create"]), "seconds": round(clock() - start, 3),
            "p50_ms": {op: _pct(v, 50) for op, v in lat.items()},
            "p99_ms": {op: _pct(v, 99) for op, v in lat.items()}}

def _files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            try:
                st = os.stat(p)  # follows links: a Hugging Face snapshot links to its blobs
            except OSError:
                continue
            if st.st_size > 0 and (st.st_mode & 0o170000) == 0o100000:
                out.append((p, st.st_size))
    return out

def weights(root, max_s, max_bytes):
    """Read every file under root (up to max_s seconds or max_bytes) with O_DIRECT; where the
    file system refuses O_DIRECT, evict the file's pages first (POSIX_FADV_DONTNEED)."""
    if not os.path.isdir(root):
        raise OSError(2, "not a directory", root)
    files = _files(root)
    if not files:
        return {"error": "no files to read in %s" % root}
    clock = time.perf_counter
    buf = mmap.mmap(-1, 16 * 1024 * 1024)  # page-aligned, as O_DIRECT needs
    methods = set()
    total, nfiles, start = 0, 0, clock()
    for path, size in files:
        fd, method = None, "direct"
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
            if not getattr(os, "O_DIRECT", 0):
                raise OSError(22, "no O_DIRECT")
            n = os.readv(fd, [buf])
        except OSError as e:
            if fd is not None:
                os.close(fd)
            if e.errno != 22:  # EINVAL: this file system does not do O_DIRECT
                raise
            fd = os.open(path, os.O_RDONLY)
            method = "evict"
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except (AttributeError, OSError):
                method = "buffered"
            n = os.readv(fd, [buf])
        methods.add(method)
        nfiles += 1
        try:
            while n > 0:
                total += n
                if clock() - start >= max_s or (max_bytes and total >= max_bytes):
                    break
                n = os.readv(fd, [buf])
        finally:
            os.close(fd)
        if clock() - start >= max_s or (max_bytes and total >= max_bytes):
            break
    seconds = clock() - start
    method = "buffered" if "buffered" in methods else ("evict" if "evict" in methods else "direct")
    return {"dir": root, "files": nfiles, "files_total": len(files), "bytes": total,
            "seconds": round(seconds, 4), "method": method}

def _main(argv):
    try:
        if argv[:1] == ["metadata"] and len(argv) == 4:
            out = metadata(argv[1], int(argv[2]), float(argv[3]))
        elif argv[:1] == ["weights"] and len(argv) == 4:
            out = weights(argv[1], float(argv[2]), int(argv[3]))
        else:
            sys.stderr.write("usage: helper metadata DIR FILES MAX_S | weights DIR MAX_S MAX_BYTES\n")
            return 2
    except OSError as e:
        where = e.filename if e.filename else argv[1]
        print(json.dumps({"error": "%s: %s" % (where, e.strerror or e)}))
        return 1
    print(json.dumps(out))
    return 1 if "error" in out else 0

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
'''


# ------------------------------------------------------------------------------- the model
class MountEntry(Record):
    """One line of the mount table."""

    model_config = ConfigDict(extra="forbid")

    mount_point: str
    fstype: str
    source: Optional[str] = None
    options: list[str] = Field(default_factory=list)  # per-mount options (rw, noatime, …)
    super_options: list[str] = Field(default_factory=list)  # the file system's (vers=4.1, hard, …)


class StatFs(Record):
    """``stat -f`` of one path: bytes and inodes; None where it could not be read."""

    model_config = ConfigDict(extra="forbid")

    total_bytes: Optional[int] = None
    avail_bytes: Optional[int] = None  # what non-root users can still write (f_bavail)
    files: Optional[int] = None
    files_free: Optional[int] = None
    fstype: Optional[str] = None  # as stat names it (nfs, ext2/ext3, …)
    seconds: Optional[float] = None
    hung: bool = False  # did not answer within timeout_s
    timeout_s: Optional[float] = None
    error: Optional[str] = None


class MountState(Record):
    model_config = ConfigDict(extra="forbid")

    path: str
    entry: Optional[MountEntry] = None  # None: not in the mount table
    stat: Optional[StatFs] = None  # None: not stat'ed (not mounted)


class MetadataRun(Record):
    model_config = ConfigDict(extra="forbid")

    path: str
    files: Optional[int] = None
    seconds: Optional[float] = None
    p50_ms: dict[str, Optional[float]] = Field(default_factory=dict)
    p99_ms: dict[str, Optional[float]] = Field(default_factory=dict)
    error: Optional[str] = None


class FioRun(Record):
    model_config = ConfigDict(extra="forbid")

    path: str
    direct: Optional[bool] = None  # O_DIRECT (False: fio ran buffered, the file system refused direct=1)
    runtime_s: Optional[float] = None
    read_mibps: Optional[float] = None
    write_mibps: Optional[float] = None
    randread_iops: Optional[float] = None
    version: Optional[str] = None
    error: Optional[str] = None


class WeightsRun(Record):
    model_config = ConfigDict(extra="forbid")

    path: str
    files: Optional[int] = None
    bytes: Optional[int] = None
    seconds: Optional[float] = None
    #: direct: O_DIRECT (no page cache); evict: POSIX_FADV_DONTNEED then buffered reads;
    #: buffered: neither was possible, the page cache may have served it
    method: Optional[str] = None
    bytes_per_s: Optional[float] = None
    #: the profile's model_size_gib at that rate
    model_load_s: Optional[float] = None
    error: Optional[str] = None

    @property
    def gbps(self) -> Optional[float]:
        if self.bytes is None or not self.seconds or self.seconds <= 0:
            return None
        return self.bytes / self.seconds / 1e9


class StorageMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    configured: bool = False  # the profile has a storage section
    mount_table: Optional[str] = None  # the file it was read from
    mount_table_error: Optional[str] = None
    mounts: list[MountState] = Field(default_factory=list)
    metadata_requested: bool = False
    metadata: list[MetadataRun] = Field(default_factory=list)
    fio_requested: bool = False
    fio: list[FioRun] = Field(default_factory=list)
    weights_requested: bool = False
    weights: Optional[WeightsRun] = None
    weights_error: Optional[str] = None  # asked for without a directory


Measurement = StorageMeasurement


# ------------------------------------------------------------------------------- mount table
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in paths as \\040, \\011, \\012, \\134."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """``/proc/<pid>/mountinfo`` (proc(5)): ``36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 -
    ext3 /dev/root rw,errors=continue``. Lines it cannot read are left out."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        a, b = left.split(), right.split()
        if len(a) < 6 or len(b) < 2:
            continue
        out.append(MountEntry(mount_point=_unescape(a[4]), fstype=b[0], source=_unescape(b[1]),
                              options=[o for o in a[5].split(",") if o],
                              super_options=[o for o in (b[2].split(",") if len(b) > 2 else []) if o]))
    return out


def parse_proc_mounts(text: str) -> list[MountEntry]:
    """``/proc/mounts`` (fstab format): ``server:/export /mnt/data nfs4 rw,vers=4.1,hard 0 0``."""
    out: list[MountEntry] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        out.append(MountEntry(mount_point=_unescape(f[1]), fstype=f[2], source=_unescape(f[0]),
                              options=[o for o in f[3].split(",") if o]))
    return out


def read_mount_table(ctx: "ProbeContext") -> tuple[Optional[list[MountEntry]], str, Optional[str]]:
    """(entries, source, error): the mount table under the context's procfs root."""
    root = getattr(ctx, "procfs_root", "/proc")
    why = []
    for name, parse in (("self/mountinfo", parse_mountinfo), ("mounts", parse_proc_mounts)):
        path = os.path.join(root, name)
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                text = fh.read()
        except OSError as e:
            why.append(f"{path}: {e.strerror or e}")
            continue
        entries = parse(text)
        if entries:
            return entries, path, None
        why.append(f"{path}: no mount lines")
    return None, os.path.join(root, "self/mountinfo"), "; ".join(why)


def find_mount(entries: list[MountEntry], path: str) -> Optional[MountEntry]:
    """The mount on exactly ``path``; the last one listed wins (it hides those below it)."""
    want = os.path.normpath(path)
    hit = None
    for e in entries:
        if os.path.normpath(e.mount_point) == want:
            hit = e
    return hit


def fstype_matches(found: str, expected: list[str]) -> bool:
    """``nfs`` also accepts ``nfs4`` (the kernel names NFSv4 mounts so)."""
    if not expected:
        return True
    return any(found == e or (e == "nfs" and found == "nfs4") for e in expected)


def missing_options(entry: MountEntry, expected: list[str]) -> list[str]:
    have = set(entry.options) | set(entry.super_options)
    return [o for o in expected if o not in have]


# ------------------------------------------------------------------------------- probe
def _rules(profile: Optional[Profile]) -> Optional["StorageProfile"]:
    return getattr(profile, "storage", None) if profile is not None else None


def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> StorageMeasurement:
    """Read the mount table, ``stat -f`` every expected mount at once, then the opt-in tests.
    Never raises; never touches a storage path in this process."""
    p = _rules(profile)
    m = StorageMeasurement()
    if p is None:
        return m
    m.configured = True
    entries, m.mount_table, m.mount_table_error = read_mount_table(ctx)
    for rule in p.mounts:
        st = MountState(path=rule.path, entry=find_mount(entries, rule.path) if entries else None)
        m.mounts.append(st)
    to_stat = [s for s in m.mounts if s.entry is not None or entries is None]
    _stat_all(ctx, to_stat, float(p.stat_timeout_s))
    answered = {s.path for s in m.mounts if s.stat is not None and s.stat.error is None}
    bench = [r for r in p.mounts if r.bench and r.path in answered]
    m.metadata_requested = METADATA in ctx.opt_in
    m.fio_requested = FIO in ctx.opt_in
    m.weights_requested = WEIGHTS in ctx.opt_in
    if m.metadata_requested:
        for rule in bench:
            m.metadata.append(_metadata(ctx, rule, p))
    if m.fio_requested:
        for rule in bench:
            m.fio.append(_fio(ctx, rule, p))
    if m.weights_requested:
        if not p.weights_dir:
            m.weights_error = "no model-weights directory: pass --weights-dir DIR (or set storage.weights_dir)"
        else:
            m.weights = _weights(ctx, p)
    return m


def _stat_all(ctx: "ProbeContext", states: list[MountState], timeout_s: float) -> None:
    """``stat -f`` every path in its own child, all at once; a child that does not answer in
    time is killed and its path reported as hung, without waiting for it any longer."""
    limit = max(0.1, round(min(timeout_s, ctx.time_left() - 1.0), 1))
    results: dict[str, StatFs] = {}
    lock = threading.Lock()

    def one(path: str) -> None:
        r = ctx.run_tool(["stat", "-f", "-c", STAT_FORMAT, "--", path], timeout=limit)
        st = _parse_stat(r, limit)
        with lock:
            results[path] = st

    threads = [threading.Thread(target=one, args=(s.path,), name=f"ck-stat-{i}", daemon=True)
               for i, s in enumerate(states)]
    import time

    for t in threads:
        t.start()
    end = time.monotonic() + limit + 1.0
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    with lock:
        for s in states:
            s.stat = results.get(s.path) or StatFs(hung=True, timeout_s=round(limit, 1),
                                                    error=f"did not answer within {limit:g}s")


def _parse_stat(r: Any, limit: float) -> StatFs:
    if r.missing:
        return StatFs(error="stat not found on PATH (coreutils)")
    if r.timed_out:
        return StatFs(hung=True, timeout_s=round(limit, 1), seconds=r.duration_s,
                      error=f"did not answer within {limit:g}s")
    if r.rc != 0:
        tail = (r.stderr or r.stdout or "").strip().splitlines()
        return StatFs(seconds=r.duration_s, error=(tail[-1] if tail else f"stat exit {r.rc}")[:300])
    f = r.stdout.split()
    try:
        frsize, blocks, _bfree, bavail, files, ffree = (int(x) for x in f[:6])
    except ValueError:
        return StatFs(seconds=r.duration_s, error=f"unreadable stat output: {r.stdout.strip()[:120]!r}")
    return StatFs(total_bytes=frsize * blocks, avail_bytes=frsize * bavail, files=files, files_free=ffree,
                  fstype=" ".join(f[6:]) or None, seconds=r.duration_s)


def _helper_argv(ctx: "ProbeContext", *args: str) -> list[str]:
    stand_in = ctx.which(HELPER_TOOL)
    if stand_in:
        return [stand_in, *args]
    return [sys.executable, "-I", "-c", HELPER_SOURCE, *args]


def _run_helper(ctx: "ProbeContext", args: list[str], timeout: float) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    r = ctx.run_tool(_helper_argv(ctx, *args), timeout=timeout)
    if r.timed_out:
        return None, f"did not finish within {timeout:.0f}s"
    if r.missing:
        return None, f"the helper could not start: {r.stderr.strip()[:200]}"
    doc = None
    for line in reversed(r.stdout.splitlines()):
        if line.strip().startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            break
    if not isinstance(doc, dict):
        tail = (r.stderr or r.stdout or "").strip().splitlines()
        return None, f"no result (exit {r.rc}): {tail[-1][:200] if tail else 'no output'}"
    if doc.get("error"):
        return None, str(doc["error"])[:300]
    return doc, None


def _budget(ctx: "ProbeContext", want: float, reserve: float = 1.0) -> float:
    return min(want, ctx.time_left() - reserve)


def _metadata(ctx: "ProbeContext", rule: "MountRule", p: "StorageProfile") -> MetadataRun:
    run = MetadataRun(path=rule.path)
    where = rule.bench_dir or rule.path
    limit = _budget(ctx, float(p.metadata_max_s) + 10.0)
    if limit < 3.0:
        run.error = "not enough time left before the deadline (raise --deadline)"
        return run
    doc, err = _run_helper(ctx, ["metadata", where, str(p.metadata_files), f"{max(1.0, limit - 5.0):g}"], limit)
    if err:
        run.error = err
        return run
    assert doc is not None
    run.files = _int(doc.get("files"))
    run.seconds = _float(doc.get("seconds"))
    run.p50_ms = _op_map(doc.get("p50_ms"))
    run.p99_ms = _op_map(doc.get("p99_ms"))
    if not run.files:
        run.error = "no file was created within the time box"
    return run


def _op_map(v: Any) -> dict[str, Optional[float]]:
    if not isinstance(v, dict):
        return {}
    return {str(k): _float(x) for k, x in v.items()}


def _float(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if v == v and abs(v) != float("inf") else None


def _int(v: Any) -> Optional[int]:
    f = _float(v)
    return int(f) if f is not None else None


def fio_argv(directory: str, filename: str, *, size_mib: int, runtime_s: float, direct: bool) -> list[str]:
    """One fio run, three jobs one after the other (stonewall): sequential write then read at
    1 MiB blocks, random read at 4 KiB; each time-boxed (time_based, runtime)."""
    rt = f"{max(1, int(round(runtime_s)))}"
    return ["fio", "--output-format=json", f"--directory={directory}", f"--filename={filename}",
            f"--size={size_mib}M", f"--direct={1 if direct else 0}", "--ioengine=libaio", "--time_based",
            f"--runtime={rt}", "--group_reporting",
            "--name=seqwrite", "--rw=write", "--bs=1M", "--iodepth=16",
            "--name=seqread", "--stonewall", "--rw=read", "--bs=1M", "--iodepth=16",
            "--name=randread", "--stonewall", "--rw=randread", "--bs=4k", "--iodepth=32"]


def _fio(ctx: "ProbeContext", rule: "MountRule", p: "StorageProfile") -> FioRun:
    from clusterkit.errors import ParseError
    from clusterkit.parsers.fio import parse_fio

    run = FioRun(path=rule.path, runtime_s=float(p.fio_runtime_s))
    where = rule.bench_dir or rule.path
    filename = f".clusterkit-fio-{ctx.node}-{os.getpid()}"
    try:
        for direct in (True, False):
            limit = _budget(ctx, 3 * float(p.fio_runtime_s) + 60.0, reserve=3.0)
            if limit < 3 * float(p.fio_runtime_s) + 2.0:
                run.error = "not enough time left before the deadline for fio (raise --deadline)"
                return run
            r = ctx.run_tool(fio_argv(where, filename, size_mib=int(p.fio_size_mib), runtime_s=float(p.fio_runtime_s),
                                      direct=direct), timeout=limit)
            if r.missing:
                run.error = "fio not found on PATH (install fio)"
                return run
            if r.timed_out:
                run.error = f"fio did not finish within {limit:.0f}s"
                return run
            try:
                out = parse_fio(r.stdout + ("\n" + r.stderr if r.stderr else ""))
            except (ParseError, ValueError) as e:
                tail = (r.stderr or r.stdout or "").strip().splitlines()
                run.error = f"fio gave no result (exit {r.rc}): {tail[-1][:200] if tail else e}"
                return run
            text = " ".join(out.messages).lower()
            if direct and (not out.ok or r.rc != 0) and ("direct" in text or "err=22" in (out.error or "")
                                                         or "invalid argument" in text):
                continue  # the file system refuses O_DIRECT (tmpfs, some FUSE): once more, buffered
            run.direct, run.version = direct, out.version
            if not out.ok or r.rc != 0:
                run.error = f"fio failed (exit {r.rc}): {out.error or (out.messages[-1] if out.messages else '')}"[:300]
                return run
            jobs = {j.name: j for j in out.jobs}
            w, rd, rr = jobs.get("seqwrite"), jobs.get("seqread"), jobs.get("randread")
            run.write_mibps = _mib(w.write_bw_bytes) if w else None
            run.read_mibps = _mib(rd.read_bw_bytes) if rd else None
            run.randread_iops = round(rr.read_iops, 1) if rr and rr.read_iops is not None else None
            return run
        run.error = "fio failed with direct=1 and buffered"
        return run
    finally:
        # the test file must not stay on shared storage; rm in a child (the mount may hang)
        ctx.run_tool(["rm", "-f", "--", os.path.join(where, filename)], timeout=max(0.5, min(5.0, ctx.time_left())))


def _mib(v: Optional[float]) -> Optional[float]:
    return round(v / MIB, 1) if v is not None else None


def _weights(ctx: "ProbeContext", p: "StorageProfile") -> WeightsRun:
    d = str(p.weights_dir)
    run = WeightsRun(path=d)
    limit = _budget(ctx, float(p.weights_read_s) + 10.0)
    if limit < 3.0:
        run.error = "not enough time left before the deadline (raise --deadline)"
        return run
    max_bytes = int(p.weights_max_gib * GIB) if p.weights_max_gib else 0
    doc, err = _run_helper(ctx, ["weights", d, f"{max(1.0, min(float(p.weights_read_s), limit - 5.0)):g}",
                                 str(max_bytes)], limit)
    if err:
        run.error = err
        return run
    assert doc is not None
    run.files, run.bytes, run.seconds = _int(doc.get("files")), _int(doc.get("bytes")), _float(doc.get("seconds"))
    method = doc.get("method")
    run.method = method if method in ("direct", "evict", "buffered") else None
    rate = run.gbps
    if rate:
        run.bytes_per_s = round(rate * 1e9, 1)
        if p.model_size_gib:
            run.model_load_s = round(p.model_size_gib * GIB / run.bytes_per_s, 1)
    return run


# ------------------------------------------------------------------------------- judge
def _gib(v: Optional[int]) -> Optional[float]:
    return round(v / GIB, 2) if v is not None else None


def _expected_types(rule: Optional["MountRule"]) -> list[str]:
    if rule is None or rule.fstype is None:
        return []
    return [rule.fstype] if isinstance(rule.fstype, str) else list(rule.fstype)


def judge(m: StorageMeasurement, profile: Profile) -> list[CheckResult]:
    p = _rules(profile)
    if not m.configured and p is None:
        return []
    rules = {r.path: r for r in (p.mounts if p is not None else [])}
    out: list[CheckResult] = []
    for s in m.mounts:
        out.extend(_judge_mount(s, rules.get(s.path), m))
    if m.metadata_requested:
        out.extend(r for run in m.metadata for r in _judge_metadata(run, p))
    if m.fio_requested:
        out.extend(r for run in m.fio for r in _judge_fio(run, p))
    if m.weights_requested:
        out.extend(_judge_weights(m, p))
    return out


def _judge_mount(s: MountState, rule: Optional["MountRule"], m: StorageMeasurement) -> list[CheckResult]:
    out: list[CheckResult] = []
    want = _expected_types(rule)
    st, e = s.stat, s.entry
    shown_want = "/".join(want) or "any type"
    if m.mount_table_error is not None and e is None:
        out.append(CheckResult(check="storage.mount", **on_path(s.path), status=Status.ERROR,
                               message=f"mount table unreadable: {m.mount_table_error}"))
    elif e is None:
        out.append(CheckResult(check="storage.mount", **on_path(s.path), status=Status.FAIL, value=None,
                               threshold=shown_want,
                               message=f"not mounted (expected {shown_want}; {m.mount_table or 'mount table'})"))
        return out  # free space and inodes would be the parent file system's: not reported
    else:
        where = f"{e.fstype} from {e.source}" if e.source else e.fstype
        lacking = missing_options(e, list(rule.options) if rule is not None else [])
        if not fstype_matches(e.fstype, want):
            out.append(CheckResult(check="storage.mount", **on_path(s.path), status=Status.FAIL, value=e.fstype,
                                   threshold=shown_want, message=f"mounted as {where}, expected {shown_want}"))
        elif lacking:
            out.append(CheckResult(check="storage.mount", **on_path(s.path), status=Status.FAIL, value=e.fstype,
                                   threshold=shown_want,
                                   message=f"{where} without option(s) {', '.join(lacking)}"))
        elif st is not None and st.hung:
            out.append(CheckResult(check="storage.mount", **on_path(s.path), status=Status.ERROR, value=e.fstype,
                                   message=f"{where}: stat -f {st.error}: a hung server or network path?"))
        elif st is not None and st.error:
            out.append(CheckResult(check="storage.mount", **on_path(s.path), status=Status.ERROR, value=e.fstype,
                                   message=f"{where}: stat -f failed: {st.error}"))
        else:
            out.append(CheckResult(check="storage.mount", **on_path(s.path), status=Status.PASS, value=e.fstype,
                                   threshold=shown_want if want else None, message=where))
    out.extend(_judge_space(s, rule))
    return out


def _judge_space(s: MountState, rule: Optional["MountRule"]) -> list[CheckResult]:
    st = s.stat
    if st is None:
        return []
    if st.error or st.total_bytes is None or st.avail_bytes is None:
        why = f"no figures: {st.error or 'stat -f gave none'}"
        return [CheckResult(check="storage.free", **on_path(s.path), status=Status.ERROR, message=why),
                CheckResult(check="storage.inodes", **on_path(s.path), status=Status.ERROR, message=why)]
    out: list[CheckResult] = []
    free, total = _gib(st.avail_bytes) or 0.0, _gib(st.total_bytes) or 0.0
    gmin = rule.free_gib_min if rule is not None else None
    pmin = rule.free_pct_min if rule is not None else None
    status, why = Status.PASS, f"{free:g} GiB free of {total:g} GiB"
    if gmin is not None and free < gmin:
        status, why = Status.FAIL, f"only {free:g} GiB free of {total:g} GiB, below {gmin:g} GiB"
    elif pmin is not None and total > 0 and 100.0 * free / total < pmin:
        status, why = Status.FAIL, f"only {100.0 * free / total:.1f}% free ({free:g} GiB), below {pmin:g}%"
    out.append(CheckResult(check="storage.free", **on_path(s.path), status=status, value=free, threshold=gmin,
                           unit="GiB", message=why))
    imin = rule.inodes_free_pct_min if rule is not None else None
    if st.files is None or st.files_free is None:
        out.append(CheckResult(check="storage.inodes", **on_path(s.path), status=Status.ERROR,
                               message="no inode figures from stat -f"))
    elif st.files == 0:
        out.append(CheckResult(check="storage.inodes", **on_path(s.path), status=Status.SKIP,
                               message="the file system reports no inode counts (allocated on demand)"))
    else:
        pct = round(100.0 * st.files_free / st.files, 2)
        ok = imin is None or pct >= imin
        msg = f"{pct:g}% of {st.files:,} inodes free" + ("" if ok else f", below {imin:g}%")
        out.append(CheckResult(check="storage.inodes", **on_path(s.path), status=Status.PASS if ok else Status.FAIL,
                               value=pct, threshold=imin, unit="%", message=msg))
    return out


def _worst(d: dict[str, Optional[float]]) -> tuple[Optional[str], Optional[float]]:
    vals = [(v, k) for k, v in d.items() if v is not None]
    if not vals:
        return None, None
    v, k = max(vals)
    return k, v


def _judge_metadata(run: MetadataRun, p: Optional["StorageProfile"]) -> list[CheckResult]:
    if run.error:
        return [CheckResult(check="storage.metadata", **on_path(run.path), status=Status.ERROR,
                            message=f"metadata test: {run.error}")]
    out: list[CheckResult] = []
    for q, table in (("p50", run.p50_ms), ("p99", run.p99_ms)):
        ceiling = getattr(p, f"metadata_{q}_ms_max", None) if p is not None else None
        op, worst = _worst(table)
        if worst is None:
            out.append(CheckResult(check=f"storage.metadata.{q}", **on_path(run.path), status=Status.ERROR,
                                   message="the metadata test gave no latencies"))
            continue
        each = ", ".join(f"{k} {v:.3g}" for k, v in table.items() if v is not None)
        ok = ceiling is None or worst <= ceiling
        msg = (f"{q} {each} ms over {run.files} files" if ok else
               f"{op} {q} {worst:.3g} ms, above {ceiling:g} ms ({each} ms over {run.files} files)")
        out.append(CheckResult(check=f"storage.metadata.{q}", **on_path(run.path),
                               status=Status.PASS if ok else Status.FAIL, value=round(worst, 4),
                               threshold=ceiling, unit="ms", message=msg))
    return out


def _judge_fio(run: FioRun, p: Optional["StorageProfile"]) -> list[CheckResult]:
    if run.error:
        return [CheckResult(check="storage.fio", **on_path(run.path), status=Status.ERROR, message=run.error)]
    how = "" if run.direct else " (buffered: the file system refused O_DIRECT, the page cache may have helped)"
    out: list[CheckResult] = []
    for check, value, floor_key, unit, what in (
            ("storage.fio.read_bw", run.read_mibps, "fio_read_mibps_min", "MiB/s", "sequential read, 1 MiB"),
            ("storage.fio.write_bw", run.write_mibps, "fio_write_mibps_min", "MiB/s", "sequential write, 1 MiB"),
            ("storage.fio.randread_iops", run.randread_iops, "fio_randread_iops_min", "IOPS", "random read, 4 KiB")):
        floor = getattr(p, floor_key, None) if p is not None else None
        if value is None:
            out.append(CheckResult(check=check, **on_path(run.path), status=Status.ERROR,
                                   message=f"fio reported no {what} figure"))
            continue
        ok = floor is None or value >= floor
        msg = f"{value:g} {unit} {what}{how}" + ("" if ok else f", below {floor:g} {unit}")
        out.append(CheckResult(check=check, **on_path(run.path), status=Status.PASS if ok else Status.FAIL,
                               value=value, threshold=floor, unit=unit, message=msg))
    return out


def _judge_weights(m: StorageMeasurement, p: Optional["StorageProfile"]) -> list[CheckResult]:
    if m.weights is None:
        return [CheckResult(check="storage.weights", status=Status.ERROR,
                            message=m.weights_error or "the weights read did not run")]
    w = m.weights
    if w.error:
        return [CheckResult(check="storage.weights", **on_path(w.path), status=Status.ERROR,
                            message=f"weights read: {w.error}")]
    rate = w.gbps
    if rate is None:
        return [CheckResult(check="storage.weights", **on_path(w.path), status=Status.ERROR,
                            message="the weights read gave no figure")]
    floor = getattr(p, "weights_gbps_min", None) if p is not None else None
    size = getattr(p, "model_size_gib", None) if p is not None else None
    gb = (w.bytes or 0) / 1e9
    text = f"{rate:.3g} GB/s ({gb:.3g} GB from {w.files} file(s) in {w.seconds:g}s"
    text += {"direct": ", O_DIRECT)", "evict": ", page cache evicted first)",
             "buffered": ", buffered: the page cache may have served it)"}.get(w.method or "", ")")
    if size:
        text += f"; a {size:g} GiB model loads in ~{size * GIB / (rate * 1e9):.0f}s"
    ok = floor is None or rate >= floor
    if not ok:
        status = Status.FAIL
        text += f"; below {floor:g} GB/s"
    elif w.method not in ("direct", "evict"):
        status = Status.WARN  # a pass the page cache may have faked
    else:
        status = Status.PASS
    return [CheckResult(check="storage.weights", **on_path(w.path), status=status, value=round(rate, 3),
                        threshold=floor, unit="GB/s", message=text)]


def facts(m: StorageMeasurement) -> dict[str, Any]:
    return {}


# ------------------------------------------------------------------------------- options
def opt_in(storage_bench: bool, weights_dir: Optional[str], filters: Optional[list[str]]) -> set[str]:
    """What ``node-check --storage-bench`` / ``--weights-dir`` (or naming the checks) ask for."""
    out: set[str] = set()
    named = filters or []

    def asked(cid: str) -> bool:
        from clusterkit.validate.registry import matches

        return any(matches(f, cid) for f in named)

    if storage_bench or asked(METADATA):
        out.add(METADATA)
    if storage_bench or asked(FIO):
        out.add(FIO)
    if weights_dir or asked(WEIGHTS):
        out.add(WEIGHTS)
    return out


def with_weights_dir(profile: Profile, weights_dir: str) -> Profile:
    """The profile with ``storage.weights_dir`` set (``--weights-dir`` wins over the profile's)."""
    from clusterkit.profiles import StorageProfile

    current = getattr(profile, "storage", None) or StorageProfile()
    return profile.model_copy(update={"storage": current.model_copy(update={"weights_dir": weights_dir})})
