"""fio output: ``--output-format=json`` (also ``json+``) and the default text ("normal") output.

Bandwidths are bytes per second:

* JSON: ``bw_bytes`` when present (fio >= 3.x), else ``bw`` (KiB/s) x 1024.
* text, fio 3.x: ``BW=11.0MiB/s (12.6MB/s)`` -> the parenthesised SI figure (12.6e6). fio 3.1
  printed the binary figure with a rounding bug (a true 11.99 MiB/s shows as "11.0MiB/s"), so
  the SI figure is the better of the two; both carry three significant digits.
* text, fio 2.x (no parenthesised figure): ``bw=41855KB/s`` where fio 2 meant KiB -> x 1024.

Latencies are microseconds (``lat``: submission + completion, mean). A job that reports an
error (``err=N`` in the text header, ``"error": N`` in JSON, or a ``fio: pid=..., err=N/...``
line) has ``errors`` >= 1, ``error_code`` N and an ``error`` string; such output still parses.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from clusterkit.record import ConfigDict, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines, not_recognised

TOOL = "fio"


class FioJob(Record):
    """One fio job (or one group, with ``group_reporting``)."""

    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = None
    group_id: Optional[int] = None
    pid: Optional[int] = None
    rw: Optional[str] = None
    ioengine: Optional[str] = None
    iodepth: Optional[int] = None
    block_size: Optional[str] = None
    read_bw_bytes: Optional[float] = None
    write_bw_bytes: Optional[float] = None
    trim_bw_bytes: Optional[float] = None
    read_iops: Optional[float] = None
    write_iops: Optional[float] = None
    trim_iops: Optional[float] = None
    read_io_bytes: Optional[int] = None
    write_io_bytes: Optional[int] = None
    read_runtime_ms: Optional[int] = None
    write_runtime_ms: Optional[int] = None
    read_lat_mean_us: Optional[float] = None
    write_lat_mean_us: Optional[float] = None
    read_clat_p99_us: Optional[float] = None
    write_clat_p99_us: Optional[float] = None
    errors: int = 0
    error_code: Optional[int] = None
    error: Optional[str] = None


class FioDisk(Record):
    """One line of "Disk stats" / one ``disk_util`` entry."""

    model_config = ConfigDict(extra="forbid")

    name: str
    read_ios: Optional[int] = None
    write_ios: Optional[int] = None
    util_pct: Optional[float] = None


class FioOutput(ParsedOutput):
    """A parsed fio run."""

    format: str  # "json" | "text"
    version: Optional[str] = None
    jobs: list[FioJob] = []
    disks: list[FioDisk] = []
    messages: list[str] = []  # 'fio: ...' lines (warnings and errors), as printed
    error: Optional[str] = None  # the first job error, if any
    ok: bool = True  # no job reported an error

    def summary(self) -> str:
        head = f"fio ({self.format}{', ' + self.version if self.version else ''}): " \
               f"{len(self.jobs)} job(s), {'OK' if self.ok else 'ERROR'}"
        lines = [head]
        for j in self.jobs:
            parts = []
            for d in ("read", "write"):
                bw = getattr(j, f"{d}_bw_bytes")
                iops = getattr(j, f"{d}_iops")
                if bw or iops:
                    parts.append(f"{d} {(bw or 0) / 1e6:.1f} MB/s {iops or 0:.0f} IOPS")
            text = ", ".join(parts) or "no I/O"
            if j.errors:
                text += f"; error: {j.error}"
            lines.append(f"  {j.name or '?'}: {text}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- shared helpers
_ERR_LINE = re.compile(
    r"^fio: pid=(\d{1,18}), err=(\d{1,18})/(?:file:([^,]*), )?(?:func=([^,]*), )?error=(.*)$"
)


def _error_line(line: str) -> Optional[tuple[int, int, str]]:
    """(pid, err, message) of a 'fio: pid=..., err=N/file:..., func=..., error=...' line."""
    m = _ERR_LINE.match(line.strip())
    if not m:
        return None
    pid, err, where, func, text = m.groups()
    parts = (f"func={func}" if func else "", f"file:{where}" if where else "")
    detail = ", ".join(p for p in parts if p)
    msg = f"err={err}: {text.strip()}" + (f" ({detail})" if detail else "")
    return int(pid), int(err), msg


def _attach_errors(out: FioOutput, errors: list[tuple[int, int, str]]) -> None:
    """Attach 'fio: pid=..., err=...' lines to their job (by pid, else by error code)."""
    for pid, err, msg in errors:
        target = next((j for j in out.jobs if j.pid == pid), None)
        if target is None:
            cands = [j for j in out.jobs if j.error_code == err and j.pid is None]
            target = cands[0] if len(cands) == 1 else None
        if target is None:
            target = FioJob(pid=pid)
            out.jobs.append(target)
        target.pid = pid
        target.error_code = err
        target.errors = max(target.errors, 1)
        target.error = msg
    for j in out.jobs:
        if j.error_code and not j.errors:
            j.errors = 1
        if j.errors and not j.error:
            j.error = f"err={j.error_code}"
    bad = [j for j in out.jobs if j.errors]
    out.ok = not bad
    out.error = bad[0].error if bad else None


def _scan_messages(lines: list[str], out: FioOutput, errors: list) -> None:
    for ln in lines:
        s = ln.strip()
        if s.startswith("fio: "):
            out.messages.append(s)
            e = _error_line(s)
            if e:
                errors.append(e)


# --------------------------------------------------------------------------- JSON
def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


def _int(v: Any) -> Optional[int]:
    f = _num(v)
    if f is None:
        if isinstance(v, str) and v.strip().isdecimal() and len(v.strip()) < 19:
            return int(v.strip())
        return None
    return int(f) if abs(f) < 1e18 else None


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _json_dir(job: FioJob, d: str, sec: Any) -> None:
    if not isinstance(sec, dict):
        return
    bw = _num(sec.get("bw_bytes"))
    if bw is None:
        kib = _num(sec.get("bw"))
        bw = kib * 1024 if kib is not None else None
    setattr(job, f"{d}_bw_bytes", bw)
    setattr(job, f"{d}_iops", _num(sec.get("iops")))
    if d == "trim":
        return
    io = _int(sec.get("io_bytes"))
    if io is None:
        kb = _int(sec.get("io_kbytes"))
        io = kb * 1024 if kb is not None else None
    setattr(job, f"{d}_io_bytes", io)
    setattr(job, f"{d}_runtime_ms", _int(sec.get("runtime")))
    total = _num(sec.get("total_ios"))
    # fio >= 3: *_ns in nanoseconds; fio 2.x: lat/clat in microseconds.
    for key, scale in (("lat_ns", 1e-3), ("lat", 1.0)):
        lat = sec.get(key)
        if isinstance(lat, dict):
            n = _num(lat.get("N"))
            mean = _num(lat.get("mean"))
            if mean is not None and (n or (n is None and total)):
                setattr(job, f"{d}_lat_mean_us", mean * scale)
            break
    for key, scale in (("clat_ns", 1e-3), ("clat", 1.0)):
        clat = sec.get(key)
        if isinstance(clat, dict):
            p = clat.get("percentile")
            if isinstance(p, dict):
                v = _num(p.get("99.000000"))
                if v is not None:
                    setattr(job, f"{d}_clat_p99_us", v * scale)
            break


def _parse_json(text: str, start: int, lines_before: list[str], first_line_no: int) -> FioOutput:
    all_lines = text.split("\n")
    try:
        data, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as e:
        n = min(max(e.lineno, 1), len(all_lines))
        raise fail(TOOL, f"invalid JSON: {e.msg}", n, all_lines[n - 1]) from None
    except (ValueError, RecursionError):
        raise fail(TOOL, "invalid JSON", first_line_no, all_lines[first_line_no - 1]) from None
    jobs = data.get("jobs", data.get("client_stats")) if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        raise fail(TOOL, "JSON without a 'jobs' list: not fio --output-format=json", first_line_no,
                   all_lines[first_line_no - 1])
    version = data.get("fio version")
    out = FioOutput(format="json", version=version if isinstance(version, str) else None)
    raw_gopts = data.get("global options")
    gopts = raw_gopts if isinstance(raw_gopts, dict) else {}
    for raw in jobs:
        if not isinstance(raw, dict):
            continue
        raw_opts = raw.get("job options")
        opts = raw_opts if isinstance(raw_opts, dict) else {}

        def opt(key: str) -> Optional[str]:
            v = opts.get(key, gopts.get(key))
            return v if isinstance(v, str) else None

        name = raw.get("jobname")
        job = FioJob(
            name=name if isinstance(name, str) else None,
            group_id=_int(raw.get("groupid")),
            rw=opt("rw") or opt("readwrite"),
            ioengine=opt("ioengine"),
            iodepth=_int(opt("iodepth")),
            block_size=opt("bs") or opt("blocksize"),
            error_code=_int(raw.get("error")),
        )
        for d in ("read", "write", "trim"):
            _json_dir(job, d, raw.get(d))
        out.jobs.append(job)
    du = data.get("disk_util")
    if isinstance(du, list):
        for disk in du:
            if isinstance(disk, dict) and isinstance(disk.get("name"), str):
                out.disks.append(FioDisk(name=disk["name"], read_ios=_int(disk.get("read_ios")),
                                         write_ios=_int(disk.get("write_ios")),
                                         util_pct=_num(disk.get("util"))))
    errors: list = []
    _scan_messages(lines_before, out, errors)
    _scan_messages(split_lines(text[end:]), out, errors)
    _attach_errors(out, errors)
    return out


# --------------------------------------------------------------------------- text
_NUM = r"\d+(?:\.\d+)?"
_BINARY = {"": 1, "B": 1, "K": 1024, "KI": 1024, "M": 1024**2, "MI": 1024**2, "G": 1024**3,
           "GI": 1024**3, "T": 1024**4, "TI": 1024**4, "P": 1024**5, "PI": 1024**5}
_SI = {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}

_JOB_DEF = re.compile(r"^(?P<name>\S.*?): \(g=(?P<g>\d+)\): (?P<rest>.*)$")
_RESULT = re.compile(
    r"^(?P<name>\S.*?): \(groupid=(?P<g>\d{1,18}), jobs=(?P<n>\d{1,18})\): err=\s*(?P<err>\d{1,18})\b"
)
_PID = re.compile(r": pid=(\d{1,18})\b")
_DIR = re.compile(r"^\s*(read|write|trim)\s*:\s*(.*)$")
_FIO3 = re.compile(
    rf"IOPS=(?P<iops>{_NUM})(?P<isfx>[kKMG]?), BW=(?P<bw>{_NUM})(?P<bwu>[KMGTP]?i?B?)/s"
    rf"(?: \((?P<si>{_NUM})(?P<siu>[kKMGTP]?B?)/s\))?"
    rf"(?:\((?P<io>{_NUM})(?P<iou>[KMGTP]?i?B?)/(?P<rt>\d{{1,18}})msec\))?"
)
_FIO2_BW = re.compile(rf"\bbw=(?P<bw>{_NUM})(?P<u>[KMGTP]?i?B?)/s")
_FIO2_IOPS = re.compile(rf"\biops=(?P<iops>{_NUM})(?P<sfx>[kKM]?)")
_FIO2_IO = re.compile(rf"\bio=(?P<io>{_NUM})(?P<u>[KMGTP]?i?B?)")
_FIO2_RT = re.compile(r"\brunt=\s*(\d{1,18})msec")
_LAT = re.compile(rf"^\s*(slat|clat|lat)\s*\((nsec|usec|msec)\):\s*min=.*?avg=\s*({_NUM})")
_PCT_HEAD = re.compile(r"^\s*clat percentiles \((nsec|usec|msec)\):")
_PCT = re.compile(r"(\d+\.\d+)th=\[\s*(\d+)\]")
_DISK = re.compile(r"^\s*(\S+): ios=(\d{1,18})/(\d{1,18})\b.*?(?:util=(" + _NUM + r")%)?$")
_VERSION = re.compile(r"^fio-\d+\.\d+\S*$")
_SCALE_US = {"nsec": 1e-3, "usec": 1.0, "msec": 1e3}


def _unit_mult(unit: str, si: bool) -> float:
    u = unit.upper().rstrip("B").rstrip("/")
    table = _SI if si else _BINARY
    if si:
        u = u.rstrip("I")
    return table.get(u, 1)


def _bytes(value: str, mult: float) -> Optional[int]:
    v = float(value) * mult
    return int(v) if v < 1e18 else None


def _iops(value: str, sfx: str) -> float:
    return float(value) * {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}.get(sfx, 1)


def _opts(rest: str) -> dict[str, str]:
    """'rw=read, bs=(R) 4096B-4096B, ..., ioengine=libaio, iodepth=4' -> dict (first bs range)."""
    res: dict[str, str] = {}
    for part in rest.split(", "):
        k, sep, v = part.partition("=")
        if sep and k.strip() and k.strip() not in res:
            res[k.strip()] = v.strip()
    bs = res.get("bs", "")
    if bs.startswith("(R) "):
        res["bs"] = bs[4:].split(",")[0].strip()
    return res


def _parse_text(lines: list[str]) -> FioOutput:
    out = FioOutput(format="text")
    defs: dict[str, dict[str, str]] = {}
    errors: list = []
    job: Optional[FioJob] = None
    direction: Optional[str] = None
    pct_dir: Optional[tuple[str, float]] = None
    in_disks = False
    recognised = 0
    for ln in lines:
        s = ln.strip()
        if not s:
            pct_dir = None
            continue
        if s.startswith("fio: "):
            recognised += 1
            out.messages.append(s)
            e = _error_line(s)
            if e:
                errors.append(e)
            continue
        if _VERSION.match(s):
            recognised += 1
            out.version = s
            continue
        if s.startswith("Run status group"):
            recognised += 1
            job, direction, pct_dir, in_disks = None, None, None, False
            continue
        if s.startswith("Disk stats"):
            recognised += 1
            job, direction, pct_dir, in_disks = None, None, None, True
            continue
        m = _RESULT.match(ln)
        if m:
            recognised += 1
            in_disks = False
            name = m.group("name")
            d = defs.get(name, {})
            job = FioJob(name=name, group_id=int(m.group("g")), error_code=int(m.group("err")),
                         rw=d.get("rw"), ioengine=d.get("ioengine"), block_size=d.get("bs"),
                         iodepth=_int(d.get("iodepth")))
            tail = ln[m.end():]
            if job.error_code:
                job.errors = 1
                if tail.startswith(" (") and "): pid=" in tail:
                    job.error = f"err={job.error_code}: " + tail[2:tail.index("): pid=")]
            pm = _PID.search(tail)
            if pm:
                job.pid = int(pm.group(1))
            out.jobs.append(job)
            direction, pct_dir = None, None
            continue
        m = _JOB_DEF.match(ln)
        if m:
            recognised += 1
            defs.setdefault(m.group("name"), _opts(m.group("rest")))
            continue
        if in_disks:
            m = _DISK.match(ln)
            if m:
                out.disks.append(FioDisk(name=m.group(1).rstrip(":"), read_ios=int(m.group(2)),
                                         write_ios=int(m.group(3)),
                                         util_pct=float(m.group(4)) if m.group(4) else None))
            continue
        if job is None:
            continue
        m = _DIR.match(ln)
        if m:
            direction, pct_dir = m.group(1), None
            body = m.group(2)
            m3 = _FIO3.search(body)
            if m3:
                recognised += 1
                setattr(job, f"{direction}_iops", _iops(m3.group("iops"), m3.group("isfx")))
                if m3.group("si") is not None:
                    bw = float(m3.group("si")) * _unit_mult(m3.group("siu"), si=True)
                else:
                    bw = float(m3.group("bw")) * _unit_mult(m3.group("bwu"), si=False)
                setattr(job, f"{direction}_bw_bytes", bw)
                if direction != "trim" and m3.group("io") is not None:
                    setattr(job, f"{direction}_io_bytes",
                            _bytes(m3.group("io"), _unit_mult(m3.group("iou"), si=False)))
                    setattr(job, f"{direction}_runtime_ms", int(m3.group("rt")))
                continue
            mb = _FIO2_BW.search(body)
            mi = _FIO2_IOPS.search(body)
            if mb or mi:
                recognised += 1
                if mb:
                    setattr(job, f"{direction}_bw_bytes",
                            float(mb.group("bw")) * _unit_mult(mb.group("u"), si=False))
                if mi:
                    setattr(job, f"{direction}_iops", _iops(mi.group("iops"), mi.group("sfx")))
                if direction != "trim":
                    mio = _FIO2_IO.search(body)
                    if mio:
                        setattr(job, f"{direction}_io_bytes",
                                _bytes(mio.group("io"), _unit_mult(mio.group("u"), si=False)))
                    mrt = _FIO2_RT.search(body)
                    if mrt:
                        setattr(job, f"{direction}_runtime_ms", int(mrt.group(1)))
            continue
        if direction in ("read", "write"):
            m = _LAT.match(ln)
            if m:
                if m.group(1) == "lat":
                    us = float(m.group(3)) * _SCALE_US[m.group(2)]
                    setattr(job, f"{direction}_lat_mean_us", us)
                continue
            m = _PCT_HEAD.match(ln)
            if m:
                pct_dir = (direction, _SCALE_US[m.group(1)])
                continue
            if pct_dir and s.startswith("|"):
                for p, v in _PCT.findall(s):
                    if p == "99.00":
                        setattr(job, f"{pct_dir[0]}_clat_p99_us", float(v) * pct_dir[1])
                continue
            pct_dir = None
    if not recognised:
        raise not_recognised(TOOL, lines, "no fio job, result or error line found: not fio output")
    _attach_errors(out, errors)
    return out


# --------------------------------------------------------------------------- entry point
def parse_fio(text: str) -> FioOutput:
    """Parse fio output (JSON or text); raises ParseError on anything that is not fio's."""
    lines = split_lines(text)
    if not any(ln.strip() for ln in lines):
        raise fail(TOOL, "empty output")
    # JSON (possibly after 'fio: ...' warnings): the first line that opens an object.
    offset = 0
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("{"):
            norm = "\n".join(lines)
            start = offset + (len(ln) - len(ln.lstrip()))
            return _parse_json(norm, start, lines[:i], i + 1)
        offset += len(ln) + 1
    return _parse_text(lines)
