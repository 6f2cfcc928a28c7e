"""Parsers for perftest's ``ib_write_bw`` and ``ib_write_lat`` (and their read/send siblings).

What is read, in any order and with any white space (perftest mixes tabs and spaces):

* the test title (``RDMA_Write BW Test``) and the settings block between dashed rules
  (``Device : mlx5_3``, ``Transport type : IB``, ``Mtu : 4096[B]``, ``Link type : Ethernet``...);
* ``local address:`` / ``remote address:`` lines, each with the ``GID:`` line after it;
* the result table: its header says which columns follow and in which unit;
* warnings (``WARNING: BW peak won't be measured in this run.``, ``Conflicting CPU
  frequency ...``), CUDA / DMA-BUF set-up lines (``--use_cuda``), and failure messages
  (``Couldn't connect to ...``, ``Failed to ...``, ``Unable to ...``, ``Completion with
  error ...``), which go to ``error`` -- rows measured before a failure are kept.

Units. Bandwidth is reported in Gb/s (``bw_*_gbps``, 1 Gb = 10^9 bits). perftest prints
``[Gb/sec]`` with ``--report_gbits`` (it divides bytes/s by 125,000,000) and otherwise
``[MB/sec]`` (older releases) or ``[MiB/sec]`` (newer), both computed by dividing bytes/s by
0x100000 = 1,048,576: such values are multiplied by 1,048,576 x 8 / 10^9 = 0.008388608.
Message rate stays in Mpps (10^6 messages/s), latencies in microseconds (``*_us``).
"""

from __future__ import annotations

import re
from typing import Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines

MIB_PER_SEC_TO_GBPS = 1_048_576 * 8 / 1e9


# --------------------------------------------------------------------------- models


class Endpoint(Record):
    """One ``local address:`` / ``remote address:`` line (and its ``GID:`` line)."""

    model_config = ConfigDict(extra="forbid")

    lid: Optional[int] = None
    qpn: Optional[str] = None
    psn: Optional[str] = None
    rkey: Optional[str] = None
    vaddr: Optional[str] = None
    gid: Optional[str] = None


class BwRow(Record):
    model_config = ConfigDict(extra="forbid")

    bytes: int
    iterations: Optional[int] = None
    bw_peak_gbps: Optional[float] = None
    bw_avg_gbps: Optional[float] = None
    msg_rate_mpps: Optional[float] = None
    sl: Optional[int] = None
    bw_port1_gbps: Optional[float] = None
    msg_rate_port1_mpps: Optional[float] = None
    bw_port2_gbps: Optional[float] = None
    msg_rate_port2_mpps: Optional[float] = None
    cpu_util_pct: Optional[float] = None


class LatRow(Record):
    model_config = ConfigDict(extra="forbid")

    bytes: int
    iterations: Optional[int] = None
    t_min_us: Optional[float] = None
    t_max_us: Optional[float] = None
    t_typical_us: Optional[float] = None
    t_avg_us: Optional[float] = None
    t_stdev_us: Optional[float] = None
    t_p99_us: Optional[float] = None
    t_p99_9_us: Optional[float] = None
    tps_avg: Optional[float] = Field(default=None, description="transactions/s (-D runs)")
    cpu_util_pct: Optional[float] = None


class _PerftestRun(ParsedOutput):
    """What every perftest output says besides its table."""

    test: Optional[str] = Field(default=None, description="title, e.g. 'RDMA_Write BW Test'")
    device: Optional[str] = None
    transport: Optional[str] = None
    connection_type: Optional[str] = None
    link_type: Optional[str] = None
    mtu: Optional[int] = Field(default=None, description="bytes")
    gid_index: Optional[int] = None
    num_qps: Optional[int] = None
    settings: dict[str, str] = Field(default_factory=dict, description="the settings block")
    local: list[Endpoint] = Field(default_factory=list)
    remote: list[Endpoint] = Field(default_factory=list)
    server: bool = Field(default=False, description="server side ('Waiting for client')")
    use_cuda: bool = False
    use_dmabuf: bool = False
    cuda_device: Optional[int] = None
    gpu_name: Optional[str] = None
    complete: bool = Field(default=False, description="the table was closed by a dashed rule")
    truncated: bool = Field(default=False, description="the last row was cut off")
    error: Optional[str] = Field(default=None, description="first failure message")
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def _head(self) -> list[str]:
        what = self.test or "perftest"
        where = ", ".join(x for x in (
            self.device and f"device {self.device}",
            self.link_type and f"link {self.link_type}",
            self.mtu and f"MTU {self.mtu}",
            self.use_cuda and ("CUDA (DMA-BUF)" if self.use_dmabuf else "CUDA"),
        ) if x)
        return [f"{what}: {where}" if where else what]

    def _tail(self) -> list[str]:
        out = []
        if self.error:
            out.append(f"error: {self.error}")
        elif not self.complete:
            out.append("incomplete: table not closed (stream cut off?)")
        for w in self.warnings[:3]:
            out.append(f"warning: {w}")
        return out


class PerftestBw(_PerftestRun):
    """A bandwidth test (``ib_write_bw``, ``ib_read_bw``, ``ib_send_bw``)."""

    report_unit: Optional[str] = Field(default=None, description="unit printed, e.g. 'Gb/sec'")
    peak_measured: bool = True
    rows: list[BwRow] = Field(default_factory=list)
    max_bw_avg_gbps: Optional[float] = None

    def summary(self) -> str:
        lines = self._head()
        if self.rows:
            sizes = sorted({r.bytes for r in self.rows})
            best = max(self.rows, key=lambda r: r.bw_avg_gbps or 0.0)
            lines.append(
                f"{len(self.rows)} rows, sizes {sizes[0]}..{sizes[-1]} B; best average "
                f"{best.bw_avg_gbps if best.bw_avg_gbps is not None else '?'} Gb/s "
                f"at {best.bytes} B"
            )
        else:
            lines.append("no results")
        return "\n".join(lines + self._tail())


class PerftestLat(_PerftestRun):
    """A latency test (``ib_write_lat``, ``ib_read_lat``, ``ib_send_lat``)."""

    rows: list[LatRow] = Field(default_factory=list)

    def summary(self) -> str:
        lines = self._head()
        for r in self.rows[:8]:
            lines.append(
                f"{r.bytes} B: min {r.t_min_us} / typical {r.t_typical_us} / avg {r.t_avg_us}"
                f" / 99.9% {r.t_p99_9_us} usec"
            )
        if len(self.rows) > 8:
            lines.append(f"... {len(self.rows) - 8} more rows")
        if not self.rows:
            lines.append("no results")
        return "\n".join(lines + self._tail())


# --------------------------------------------------------------------------- line classes

_RULE = re.compile(r"^-{10,}$")
_ELISION = re.compile(r"^(\[?\s*(\.{3,}|…)\s*\]?|\[\s*(snip|truncated|elided|cut)\s*\])$", re.I)
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_NAN = {"nan", "-nan", "+nan", "inf", "-inf", "+inf"}
_INT = re.compile(r"^\d+$")

_ERR_START = (
    "couldn't", "couldnt", "could not", "failed", "fail to", "unable", "error", "cannot",
    "can't", "no ib devices", "problems", "completion with error",
)
_ERR_IN = (
    "completion with error", " failed", "couldn't", "could not", "unable to", "not found",
    "error:", " error ", "failed status",
)
# Messages only perftest prints: enough to recognise a run that died before any header.
_PERFTEST_FAILURE = re.compile(
    r"Couldn't connect to \S+:\d+|Unable to open file descriptor for socket connection|"
    r"Unable to init the socket connection|IB device \S+ not found|"
    r"Unable to find the Infiniband/RoCE device|Couldn't get context for|"
    r"Failed to create QP|Completion with error at|Failed status \d+: wr_id|"
    r"Failed to exchange data between server and clients|Couldn't allocate MR|"
    r"Failed to modify QP|Unable to perform rdma_client function|Couldn't post send|"
    r"ethernet_(read|write)_keys|Unable to create the resources needed by comm struct",
    re.I,
)


def _is_error(low: str) -> bool:
    return low.startswith(_ERR_START) or any(p in low for p in _ERR_IN)


def _is_warning(low: str) -> bool:
    return (low.startswith("warning") or "warning:" in low
            or low.startswith("conflicting cpu frequency")
            or low.startswith("requested mtu is higher"))


def _header_columns(s: str) -> list[str]:
    """Column titles of a table header, which contain blanks themselves.

    '#bytes #iterations  BW peak[Gb/sec] ...' -> ['#bytes', '#iterations', 'BW peak[Gb/sec]', ...]
    """
    cols: list[str] = []
    buf: list[str] = []
    for w in s.split():
        if w.startswith("#") and not buf:
            cols.append(w)
            continue
        buf.append(w)
        if w.endswith("]") or (len(buf) == 2 and buf[0].lower() == "tps"
                               and w.lower() == "average"):
            cols.append(" ".join(buf))
            buf = []
    if buf:
        cols.append(" ".join(buf))
    return cols


def _split_unit(col: str) -> tuple[str, Optional[str]]:
    name, sep, rest = col.partition("[")
    unit = rest[:-1] if sep and rest.endswith("]") else None
    return " ".join(name.lower().split()), unit


_BW_KEYS = {
    "#bytes": "bytes", "#iterations": "iterations", "#sl": "sl",
    "bw peak": "bw_peak_gbps", "bw average": "bw_avg_gbps", "msgrate": "msg_rate_mpps",
    "bw port1": "bw_port1_gbps", "msgrate port1": "msg_rate_port1_mpps",
    "bw port2": "bw_port2_gbps", "msgrate port2": "msg_rate_port2_mpps",
    "cpu_util": "cpu_util_pct",
}
_LAT_KEYS = {
    "#bytes": "bytes", "#iterations": "iterations",
    "t_min": "t_min_us", "t_max": "t_max_us", "t_typical": "t_typical_us",
    "t_avg": "t_avg_us", "t_stdev": "t_stdev_us", "99% percentile": "t_p99_us",
    "99.9% percentile": "t_p99_9_us", "tps average": "tps_avg", "cpu_util": "cpu_util_pct",
}
_BW_UNITS = {"gb/sec": 1.0, "mb/sec": MIB_PER_SEC_TO_GBPS, "mib/sec": MIB_PER_SEC_TO_GBPS}


class _Table:
    """The column layout of one result-table header."""

    def __init__(self, kind: str, keys: list[Optional[str]], factors: list[float],
                 unit: Optional[str]) -> None:
        self.kind = kind
        self.keys = keys
        self.factors = factors
        self.unit = unit


def _table_from_header(tool: str, s: str, i: int, raw: str) -> _Table:
    cols = _header_columns(s)
    names = [_split_unit(c) for c in cols]
    plain = {n for n, _ in names}
    if "bw peak" in plain or "bw average" in plain:
        kind, keymap = "bw", _BW_KEYS
    elif plain & {"t_min", "t_typical", "t_avg", "tps average"}:
        kind, keymap = "lat", _LAT_KEYS
    else:
        raise fail(tool, "unknown result table header", i + 1, raw)
    keys: list[Optional[str]] = []
    factors: list[float] = []
    bw_unit: Optional[str] = None
    for name, unit in names:
        key = keymap.get(name)
        factor = 1.0
        if key and key.startswith("bw_"):
            if unit is None or unit.lower() not in _BW_UNITS:
                raise fail(tool, f"unknown bandwidth unit {unit!r}", i + 1, raw)
            factor = _BW_UNITS[unit.lower()]
            bw_unit = unit
        elif key and key.startswith("t_") and (unit or "").lower() != "usec":
            raise fail(tool, f"latency unit {unit!r} is not supported (only usec)", i + 1, raw)
        keys.append(key)
        factors.append(factor)
    if keys[:1] != ["bytes"]:
        raise fail(tool, "result table header does not start with #bytes", i + 1, raw)
    return _Table(kind, keys, factors, bw_unit)


def _settings_pairs(s: str) -> list[tuple[str, str]]:
    """' Dual-port       : OFF          Device         : mlx5_3' -> [('Dual-port','OFF'), ...]."""
    pairs: list[tuple[str, str]] = []
    pending: Optional[str] = None
    for seg in re.split(r"\s{2,}|\t", s):
        seg = seg.strip()
        if not seg:
            continue
        if seg.startswith(":"):
            if pending is not None:
                pairs.append((pending, seg[1:].strip()))
                pending = None
            continue
        if ":" in seg:
            k, _, v = seg.partition(":")
            if v.strip():
                pairs.append((k.strip(), v.strip()))
                pending = None
            else:
                pending = k.strip()
            continue
        if pending is None:
            pending = seg
        else:
            pairs.append((pending, seg))
            pending = None
    return pairs


def _endpoint(rest: str) -> Endpoint:
    toks = rest.split()
    ep = Endpoint()
    for k, v in zip(toks[0::2], toks[1::2]):
        k = k.lower()
        if k == "lid":
            try:
                ep.lid = int(v, 16)
            except ValueError:
                ep.lid = None
        elif k in ("qpn", "psn", "rkey", "vaddr"):
            setattr(ep, k, v)
    return ep


def _lead_int(v: str) -> Optional[int]:
    m = re.match(r"^(\d+)", v.strip())
    return int(m.group(1)) if m else None


def _apply_setting(run: _PerftestRun, key: str, value: str) -> None:
    run.settings[key] = value
    k = " ".join(key.lower().split())
    if k == "device":
        run.device = value
    elif k == "transport type":
        run.transport = value
    elif k == "connection type":
        run.connection_type = value
    elif k == "link type":
        run.link_type = value
    elif k == "mtu":
        run.mtu = _lead_int(value)
    elif k == "gid index":
        run.gid_index = _lead_int(value)
    elif k == "number of qps":
        run.num_qps = _lead_int(value)


def _parse(tool: str, text: str, want: str):
    if not isinstance(text, str):
        raise fail(tool, "input is not text")
    lines = split_lines(text)
    run: _PerftestRun = PerftestBw() if want == "bw" else PerftestLat()
    rows: list[dict] = []
    table: Optional[_Table] = None
    table_open = False
    failed_in_table = False
    in_settings = False
    marker = False
    first: Optional[int] = None
    last_content = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    last_ep: Optional[Endpoint] = None
    peak_measured = True

    for i, raw in enumerate(lines):
        s = raw.strip()
        if not s or _ELISION.match(s):
            continue
        if first is None:
            first = i
        low = s.lower()
        if _RULE.match(s):
            in_settings = False
            if table_open:
                table_open = False
                run.complete = True
            continue
        if s.startswith("*"):
            if "waiting for client" in low:
                run.server = True
                marker = True
            continue
        words = s.split()
        if (len(words) >= 3 and words[-1].lower() == "test" and ":" not in s
                and words[-2].lower() in ("bw", "latency", "lat")):
            run.test = " ".join(words)
            kind = "bw" if words[-2].lower() == "bw" else "lat"
            if kind != want:
                raise fail(tool, f"this is a {'bandwidth' if kind == 'bw' else 'latency'} "
                                 "test output", i + 1, raw)
            marker = True
            in_settings = True
            continue
        if s.startswith("#bytes") and len(s) < 400:
            table = _table_from_header(tool, s, i, raw)
            if table.kind != want:
                raise fail(tool, f"this is a {'bandwidth' if table.kind == 'bw' else 'latency'} "
                                 "test output", i + 1, raw)
            if table.unit and isinstance(run, PerftestBw):
                run.report_unit = table.unit
            table_open = True
            failed_in_table = False
            run.complete = False
            marker = True
            in_settings = False
            continue
        if low.startswith(("local address:", "remote address:")):
            ep = _endpoint(s.partition(":")[2])
            (run.local if low.startswith("local") else run.remote).append(ep)
            last_ep = ep
            marker = True
            in_settings = False
            continue
        if low.startswith("gid:"):
            if last_ep is not None and last_ep.gid is None:
                last_ep.gid = s.partition(":")[2].strip() or None
            continue
        if _is_warning(low):
            run.warnings.append(s)
            if "peak" in low and ("won't be measured" in low or "not be measured" in low):
                peak_measured = False
            continue
        toks = words
        if table_open and table is not None and _INT.match(toks[0]) and not failed_in_table:
            # (after a failure, provider hex dumps such as '00000000 00008813 ...' follow)
            if len(toks) != len(table.keys) or not all(
                _NUMBER.match(t) or t.lower() in _NAN for t in toks
            ):
                if i == last_content:
                    run.truncated = True
                    continue
                raise fail(tool, f"result row does not match the {len(table.keys)} columns "
                                 "of the table header", i + 1, raw)
            row: dict = {}
            for key, factor, tok in zip(table.keys, table.factors, toks):
                if key is None:
                    continue
                if key in ("bytes", "iterations", "sl"):
                    row[key] = int(tok) if _INT.match(tok) else None
                elif tok.lower() in _NAN:
                    row[key] = None
                else:
                    row[key] = round(float(tok) * factor, 6)
            if row.get("bytes") is None:
                raise fail(tool, "result row without a byte count", i + 1, raw)
            rows.append(row)
            continue
        if _is_error(low):
            failed_in_table = failed_in_table or table_open
            run.errors.append(s)
            if run.error is None:
                run.error = s
            if _PERFTEST_FAILURE.search(s):
                marker = True
            continue
        if "cuda" in low or "gpu buffer" in low or "dmabuf" in low or "dma-buf" in low:
            run.use_cuda = True
            if "dmabuf" in low or "dma-buf" in low:
                run.use_dmabuf = True
            dm = re.search(r"device name = \[([^\]]*)\]", s)
            if dm:
                run.gpu_name = dm.group(1).strip() or None
            continue
        pm = re.match(r"^Picking device No\.\s*(\d+)", s)
        if pm:
            run.cuda_device = int(pm.group(1))
            continue
        dm = re.search(r"device name = \[([^\]]*)\]", s)
        if dm:
            run.gpu_name = dm.group(1).strip() or None
            continue
        if in_settings and ":" in s:
            for k, v in _settings_pairs(s):
                _apply_setting(run, k, v)
            continue
        # anything else (notes such as 'Max msg size in RawEth is MTU 1518') is ignored

    if not marker:
        if first is None:
            raise fail(tool, f"empty input: no {tool} output")
        raise fail(tool, f"not {tool} output (no perftest header, table or message)",
                   first + 1, lines[first])
    if isinstance(run, PerftestBw):
        bw = run
        bw.peak_measured = peak_measured
        for r in rows:
            if not peak_measured:
                r["bw_peak_gbps"] = None
            bw.rows.append(BwRow(**r))
        avgs = [r.bw_avg_gbps for r in bw.rows if r.bw_avg_gbps is not None]
        bw.max_bw_avg_gbps = max(avgs) if avgs else None
    elif isinstance(run, PerftestLat):
        for r in rows:
            run.rows.append(LatRow(**r))
    return run


def parse_ib_write_bw(text: str) -> PerftestBw:
    """Parse the output of ``ib_write_bw`` (any perftest bandwidth test), client or server."""
    return _parse("ib_write_bw", text, "bw")


def parse_ib_write_lat(text: str) -> PerftestLat:
    """Parse the output of ``ib_write_lat`` (any perftest latency test), client or server."""
    return _parse("ib_write_lat", text, "lat")
