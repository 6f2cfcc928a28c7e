"""InfiniBand / RDMA domain: the node's compute rails, read from sysfs, and their judges.

Everything comes from ``<sysfs-root>/class/infiniband/*`` (the kernel's RDMA class): per device
``fw_ver``, ``board_id``, ``hca_type``, ``device/numa_node``, and per port ``ports/N/{state,
phys_state, rate, link_layer, counters/*}``; GPUDirect RDMA from ``<sysfs-root>/module/*``.

Rails are discovered, never listed: a rail is a port whose ``link_layer`` is the profile's rail
link layer (``InfiniBand``, or ``Ethernet`` on a RoCE fabric). Device names vary between images
(``mlx5_0``, ``mlx5_ib0``, …) and are used as read. Ports of another link layer — a storage or
frontend NIC beside the rails — are not rails: they are counted in the ``ib.rails`` message and
never fail a rail check. Subjects are the kernel's own names: ``mlx5_3/1`` for a port,
``mlx5_3`` for a device.

A value that cannot be read is unknown, never zero: its check is ``error``. Error counters are
kept between runs in the node's state directory (``ib-counters.json``), so a counter that grew
since the previous node-check — a link that went down and came back between two runs — fails
even when its total is small.

``ib.write_bw`` is opt-in (``node-check --ib-bw``): an ``ib_write_bw`` loopback (server and
client on the same device) per rail, all rails at once, each bounded by the deadline.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import IB_COUNTERS, IbProfile, Profile
from clusterkit.validate.subjects import Subject, on_device, on_port

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.context import ProbeContext

NAME = "ib"
DOC = "InfiniBand / RoCE rails from sysfs: count, port state, rate, error counters, firmware, GPUDirect RDMA"
CHECKS: dict[str, str] = {
    "ib": "the profile expects no InfiniBand rails (skip)",
    "ib.rails": "compute rails (ports of the profile's link layer) vs the profile's count (fail)",
    "ib.port.state": "a rail port not ACTIVE and LinkUp: Down, Disabled, Polling, Init (fail)",
    "ib.port.rate": "a rail port trained below the profile's rate, e.g. 200 Gb/s HDR on an NDR rail (fail)",
    "ib.counters": "error counters over the profile's limits, or grown since the previous run: a flap (fail)",
    "ib.firmware": "a rail's HCA firmware differs from the node's other rails (warn)",
    "ib.gdr": "no GPUDirect RDMA: neither nvidia_peermem loaded nor the dma-buf path (fail)",
    "ib.write_bw": "opt-in (--ib-bw): ib_write_bw loopback below the floor or the node's best rail (fail)",
}

#: What ``ctx.opt_in`` holds when ``node-check --ib-bw`` asked for the loopback test.
WRITE_BW = "ib.write_bw"
#: The state file (in the node's state directory) that keeps counters between runs.
STATE_FILE = "ib-counters.json"
#: Width in bits of each sysfs counter (drivers/infiniband/core/sysfs.c, PORT_PMA_ATTR: the IBA
#: PortCounters attribute). These counters saturate at their maximum instead of wrapping.
COUNTER_BITS: dict[str, int] = {
    "symbol_error": 16, "link_error_recovery": 8, "link_downed": 8, "port_rcv_errors": 16,
    "port_rcv_remote_physical_errors": 16, "port_xmit_discards": 16,
    "local_link_integrity_errors": 4, "excessive_buffer_overrun_errors": 4,
}
#: ib_write_bw message size: 8 MiB, as AzNHC's check_ib_bw_gdr (whose floors the profiles use).
WRITE_BW_SIZE = 8_388_608
WRITE_BW_BASE_PORT = 18515  # perftest's default TCP port; rail i uses this + i
#: The kernel release from which mlx5/ib_core can register dma-buf memory (ib_umem_dmabuf).
DMABUF_KERNEL = (5, 12)

_STATE_HINT = {
    "Disabled": "the port is disabled (administratively, or by the switch side)",
    "Polling": "no link partner: cable unplugged, far end down, or a bad cable or transceiver",
    "Sleep": "the port is asleep",
    "PortConfigurationTraining": "the link is still training",
    "LinkErrorRecovery": "the link is recovering from errors",
}


# ------------------------------------------------------------------------------------ models
class IbPort(Record):
    model_config = ConfigDict(extra="forbid")

    port: int
    link_layer: Optional[str] = None
    state: Optional[str] = None  # as read: "4: ACTIVE"
    phys_state: Optional[str] = None  # as read: "5: LinkUp"
    rate: Optional[str] = None  # as read: "400 Gb/sec (4X NDR)"
    rate_gbps: Optional[float] = None
    #: every counter of IB_COUNTERS; None: could not be read (unknown, never zero)
    counters: dict[str, Optional[int]] = Field(default_factory=dict)
    #: the counters at the previous run on this node (None: no previous run known)
    previous: Optional[dict[str, int]] = None
    previous_age_s: Optional[float] = None


class IbDevice(Record):
    model_config = ConfigDict(extra="forbid")

    name: str
    fw_ver: Optional[str] = None
    board_id: Optional[str] = None
    hca_type: Optional[str] = None
    numa_node: Optional[int] = None
    ports: list[IbPort] = Field(default_factory=list)
    error: Optional[str] = None  # the ports directory could not be listed


class WriteBwRun(Record):
    model_config = ConfigDict(extra="forbid")

    device: str
    port: int
    gbps: Optional[float] = None  # best average bandwidth read by the perftest parser
    use_cuda: Optional[int] = None  # the GPU index given to --use_cuda
    dmabuf: bool = False
    skipped: Optional[str] = None  # why it was not run
    error: Optional[str] = None  # why it gave no bandwidth


class IbMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    path: str = ""  # <sysfs-root>/class/infiniband
    error: Optional[str] = None  # the class directory could not be listed
    rail_link_layer: str = "InfiniBand"
    devices: list[IbDevice] = Field(default_factory=list)
    state_error: Optional[str] = None  # the counter state could not be read or kept
    # GPUDirect RDMA
    module_root: Optional[str] = None  # <sysfs-root>/module, when it could be listed
    peermem: Optional[bool] = None  # nvidia_peermem (or nv_peer_mem) loaded; None: cannot tell
    nvidia_module: Optional[bool] = None
    nvidia_version: Optional[str] = None
    nvidia_taint: Optional[str] = None  # /sys/module/nvidia/taint: "P" marks the proprietary flavour
    kernel: Optional[str] = None
    ofed_version: Optional[str] = None
    ofed_source: Optional[str] = None
    # ib_write_bw (opt-in)
    write_bw_requested: bool = False
    write_bw_error: Optional[str] = None  # the test could not run at all (tool missing, ...)
    write_bw: list[WriteBwRun] = Field(default_factory=list)


Measurement = IbMeasurement


# ------------------------------------------------------------------------------------ helpers
def _natural(name: str) -> tuple[Any, ...]:
    """mlx5_2 before mlx5_10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def state_name(raw: Optional[str]) -> Optional[str]:
    """'4: ACTIVE' -> 'ACTIVE'; '5: LinkUp' -> 'LinkUp'; a bare word is kept."""
    if raw is None:
        return None
    text = raw.strip()
    _, sep, rest = text.partition(":")
    name = rest.strip() if sep else text
    return name or None


def state_number(raw: Optional[str]) -> Optional[int]:
    if raw is None:
        return None
    head = raw.strip().partition(":")[0].strip()
    return int(head) if head.isdigit() else None


def parse_rate(raw: Optional[str]) -> Optional[float]:
    """'400 Gb/sec (4X NDR)' -> 400.0; '2.5 Gb/sec (1X SDR)' -> 2.5; anything else None."""
    if raw is None:
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec\b", raw)
    return float(m.group(1)) if m else None


def port_active(p: IbPort) -> Optional[bool]:
    """True: ACTIVE and LinkUp; False: known to be otherwise; None: not read."""
    st, ph = state_name(p.state), state_name(p.phys_state)
    if st is None or ph is None:
        return None
    st_ok = st.upper() == "ACTIVE" or state_number(p.state) == 4
    ph_ok = ph.lower() == "linkup" or state_number(p.phys_state) == 5
    return st_ok and ph_ok


def _kernel_tuple(release: Optional[str]) -> Optional[tuple[int, int]]:
    m = re.match(r"^\s*(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _version_key(v: str) -> tuple[Any, ...]:
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"[.\-_]", v.strip()))


def _same_layer(a: Optional[str], b: str) -> bool:
    return a is not None and a.strip().casefold() == b.casefold()


def _ago(seconds: Optional[float]) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 120:
        return f" {seconds:.0f} s ago"
    if seconds < 7200:
        return f" {seconds / 60:.0f} min ago"
    return f" {seconds / 3600:.1f} h ago"


# ------------------------------------------------------------------------------------- probe
def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> IbMeasurement:
    """Read every RDMA device and port under the sysfs root. Never raises for what it reads."""
    p = profile.ib if profile is not None else None
    m = IbMeasurement(path=ctx.sysfs("class", "infiniband"),
                      rail_link_layer=p.link_layer if p is not None else "InfiniBand")
    try:
        names = sorted(os.listdir(m.path), key=_natural)
    except FileNotFoundError:
        # like NVML without its driver: the node cannot be judged (error), it is not a count
        m.error = (f"no {m.path}: the RDMA stack is not loaded (ib_core, mlx5_ib), or this is not the "
                   "host's /sys (see --sysfs-root)")
        names = []
    except OSError as e:
        m.error = f"cannot list {m.path}: {e.strerror or e}"
        names = []
    for name in names:
        m.devices.append(_read_device(ctx, name))
    _counter_state(ctx, m)
    _read_gdr(ctx, m)
    _read_ofed(ctx, m)
    if p is not None and WRITE_BW in ctx.opt_in:
        m.write_bw_requested = True
        _write_bw(ctx, m, p, profile)
    return m


def _read_int(ctx: "ProbeContext", *parts: str) -> Optional[int]:
    text = ctx.read_sysfs(*parts)
    if text is None:
        return None
    try:
        return int(text.split()[0]) if text.split() else None
    except ValueError:
        return None


def _read_device(ctx: "ProbeContext", name: str) -> IbDevice:
    base = ("class", "infiniband", name)
    dev = IbDevice(name=name, fw_ver=ctx.read_sysfs(*base, "fw_ver") or None,
                   board_id=ctx.read_sysfs(*base, "board_id") or None,
                   hca_type=ctx.read_sysfs(*base, "hca_type") or None,
                   numa_node=_read_int(ctx, *base, "device", "numa_node"))
    try:
        ports = sorted((p for p in os.listdir(ctx.sysfs(*base, "ports")) if p.isdigit()), key=int)
    except OSError as e:
        dev.error = f"cannot list {ctx.sysfs(*base, 'ports')}: {e.strerror or e}"
        return dev
    for num in ports:
        pb = (*base, "ports", num)
        port = IbPort(port=int(num), link_layer=ctx.read_sysfs(*pb, "link_layer") or None,
                      state=ctx.read_sysfs(*pb, "state") or None,
                      phys_state=ctx.read_sysfs(*pb, "phys_state") or None,
                      rate=ctx.read_sysfs(*pb, "rate") or None)
        port.rate_gbps = parse_rate(port.rate)
        for c in IB_COUNTERS:
            port.counters[c] = _read_int(ctx, *pb, "counters", c)
        dev.ports.append(port)
    return dev


def _counter_state(ctx: "ProbeContext", m: IbMeasurement) -> None:
    """Attach the previous run's counters to each port, then keep this run's (atomically)."""
    try:
        path = ctx.state_path(STATE_FILE)
    except OSError as e:
        m.state_error = f"state directory {ctx.state_dir}: {e.strerror or e}"
        return
    old: dict[str, Any] = {}
    doc, problem = ctx.read_state(path)
    if problem:
        m.state_error = f"{path}: unreadable ({problem}); starting over"
    elif isinstance(doc, dict) and isinstance(doc.get("ports"), dict):
        old = doc
    now = time.time()
    then = old.get("time")
    age = now - then if isinstance(then, (int, float)) else None
    ports_old = old.get("ports", {}) if old else {}
    new_ports: dict[str, dict[str, int]] = {}
    for dev in m.devices:
        for port in dev.ports:
            key = f"{dev.name}/{port.port}"
            prev = ports_old.get(key)
            if isinstance(prev, dict):
                port.previous = {k: v for k, v in prev.items()
                                 if isinstance(v, int) and not isinstance(v, bool)}
                port.previous_age_s = round(age, 1) if age is not None else None
            keep = dict(port.previous or {})  # a counter not read now keeps its last known value
            keep.update({k: v for k, v in port.counters.items() if v is not None})
            new_ports[key] = keep
    problem = ctx.write_state(path, {"version": 1, "time": now, "ports": new_ports})
    if problem:
        m.state_error = f"cannot keep counters in {path}: {problem}"


def _read_gdr(ctx: "ProbeContext", m: IbMeasurement) -> None:
    root = ctx.sysfs("module")
    try:
        mods = set(os.listdir(root))
    except OSError:
        mods = None
    if mods is not None:
        m.module_root = root
        m.peermem = bool(mods & {"nvidia_peermem", "nv_peer_mem"})
        m.nvidia_module = "nvidia" in mods
        if m.nvidia_module:
            m.nvidia_version = ctx.read_sysfs("module", "nvidia", "version") or None
            m.nvidia_taint = ctx.read_sysfs("module", "nvidia", "taint")
    try:
        m.kernel = ctx.kernel_release() or None
    except Exception:  # noqa: BLE001 - an optional fact: unknown
        m.kernel = None


def _read_ofed(ctx: "ProbeContext", m: IbMeasurement) -> None:
    """The MLNX_OFED / DOCA-OFED version: mlx5_core's module version (set by OFED builds, absent
    on inbox drivers), else ``ofed_info -s``; None when neither says."""
    v = ctx.read_sysfs("module", "mlx5_core", "version")
    if v:
        m.ofed_version, m.ofed_source = v, ctx.sysfs("module", "mlx5_core", "version")
        return
    if not m.devices:
        return
    r = ctx.run_tool(["ofed_info", "-s"], timeout=5)
    if r.ok:
        line = next((ln.strip() for ln in r.stdout.splitlines() if ln.strip()), "")
        if line:
            m.ofed_version, m.ofed_source = line.rstrip(":"), "ofed_info -s"


def rails_of(m: IbMeasurement, link_layer: Optional[str] = None) -> list[tuple[IbDevice, IbPort]]:
    layer = link_layer or m.rail_link_layer
    return [(d, p) for d in m.devices for p in d.ports if _same_layer(p.link_layer, layer)]


# ------------------------------------------------------------------------------- ib_write_bw
def _write_bw(ctx: "ProbeContext", m: IbMeasurement, p: IbProfile, profile: Optional[Profile]) -> None:
    """ib_write_bw loopback on every rail at once: a server and a client on the same device."""
    rails = rails_of(m, p.link_layer)
    if not rails:
        return
    helptext = ctx.run_tool(["ib_write_bw", "--help"], timeout=10)
    if helptext.missing:
        m.write_bw_error = "ib_write_bw not found on PATH (install perftest)"
        return
    text = helptext.stdout + helptext.stderr
    # GPU memory when perftest has CUDA and a GPUDirect path is there or may be (AzNHC's policy:
    # peermem when loaded, else dma-buf); host memory when there is none (ib.gdr says so): the
    # rail's bandwidth is still measured.
    cuda = "use_cuda" in text
    dmabuf = False
    if cuda and not m.peermem:
        dmabuf = "use_cuda_dmabuf" in text and dmabuf_path(m)[0] is not False
        cuda = dmabuf
    gpus = profile.gpu.count if profile is not None and profile.gpu is not None else 0
    runs: list[WriteBwRun] = []
    threads = []
    for i, (dev, port) in enumerate(rails):
        run = WriteBwRun(device=dev.name, port=port.port)
        runs.append(run)
        if port_active(port) is False:
            run.skipped = "port not active"
            continue
        if cuda and i < gpus:
            run.use_cuda, run.dmabuf = i, dmabuf
        t = threading.Thread(target=_one_write_bw, args=(ctx, run, WRITE_BW_BASE_PORT + i),
                             name=f"ck-ib-bw-{dev.name}", daemon=True)
        threads.append(t)
        t.start()
    for t in threads:
        t.join(max(0.0, ctx.time_left()) + 1.0)
    m.write_bw = runs


def _one_write_bw(ctx: "ProbeContext", run: WriteBwRun, tcp_port: int) -> None:
    from clusterkit.errors import ParseError
    from clusterkit.parsers.perftest import parse_ib_write_bw

    argv = ["ib_write_bw", "-d", run.device, "-i", str(run.port), "-p", str(tcp_port),
            "-s", str(WRITE_BW_SIZE), "-F", "--report_gbits"]
    if run.use_cuda is not None:
        argv.append(f"--use_cuda={run.use_cuda}")
        if run.dmabuf:
            argv.append("--use_cuda_dmabuf")
    limit = max(1.0, min(60.0, ctx.time_left() - 1.0))
    server: dict[str, Any] = {}

    def serve() -> None:
        server["result"] = ctx.run_tool(argv, timeout=limit)

    st = threading.Thread(target=serve, name=f"ck-ib-bw-server-{run.device}", daemon=True)
    st.start()
    time.sleep(0.3)
    client = None
    while True:
        client = ctx.run_tool([*argv, "localhost"], timeout=max(1.0, min(limit, ctx.time_left() - 0.5)))
        out = client.stdout + client.stderr
        refused = not client.ok and ("couldn't connect" in out.lower() or "unable to init the socket" in out.lower())
        if not (refused and st.is_alive() and ctx.time_left() > 3.0):
            break
        time.sleep(0.5)  # the server is still starting (CUDA initialisation): try again
    st.join(max(0.0, min(5.0, ctx.time_left())))
    if client.missing:
        run.error = "ib_write_bw not found"
        return
    text = client.stdout + ("\n" + client.stderr if client.stderr else "")
    try:
        parsed = parse_ib_write_bw(text)
    except ParseError as e:
        tail = " ".join(text.split())[-200:]
        run.error = f"ib_write_bw gave no result (exit {client.rc}): {tail or e}"
        return
    if parsed.max_bw_avg_gbps is not None:
        run.gbps = parsed.max_bw_avg_gbps
        return
    if client.timed_out:
        run.error = f"ib_write_bw did not finish within {limit:.0f} s"
    else:
        run.error = f"ib_write_bw failed (exit {client.rc}): {parsed.error or 'no result rows'}"


# ------------------------------------------------------------------------------------- judge
def judge(m: IbMeasurement, profile: Profile) -> list[CheckResult]:
    """Pure verdicts on an RDMA measurement against a profile. Total: a value that could not be
    read gives its check ``error``, never a crash and never a ``fail``."""
    p = profile.ib
    if p is None:
        return [CheckResult(check="ib", status=Status.SKIP,
                            message=f"profile {profile.name} expects no InfiniBand rails")]
    out: list[CheckResult] = []
    if m.error:  # nothing to judge the rails on, and GPUDirect RDMA means nothing without them
        return [CheckResult(check="ib.rails", status=Status.ERROR, message=m.error)]
    rails = rails_of(m, p.link_layer)
    out.append(_judge_rails(m, p, profile.name, rails))
    for dev in m.devices:
        if dev.error:
            out.append(CheckResult(check="ib.rails", **on_device(dev.name), status=Status.ERROR, message=dev.error))
    for dev, port in rails:
        at = on_port(dev.name, port.port)
        out.append(_judge_state(at, port))
        out.append(_judge_rate(at, port, p))
        out.append(_judge_counters(at, port, p, m.state_error))
    out.extend(_judge_firmware(rails))
    out.extend(_judge_gdr(m, p))
    out.extend(_judge_write_bw(m, p))
    return out


def _judge_rails(m: IbMeasurement, p: IbProfile, pname: str,
                 rails: list[tuple[IbDevice, IbPort]]) -> CheckResult:
    n = len(rails)
    others = [f"{d.name}/{q.port}" for d in m.devices for q in d.ports
              if q.link_layer is not None and not _same_layer(q.link_layer, p.link_layer)]
    unknown = [f"{d.name}/{q.port}" for d in m.devices for q in d.ports if q.link_layer is None]
    layers = sorted({q.link_layer for d in m.devices for q in d.ports
                     if q.link_layer is not None and not _same_layer(q.link_layer, p.link_layer)})
    note = ""
    if others:
        note += f"; {len(others)} {'/'.join(layers)} port{'s' if len(others) != 1 else ''} not counted"
    if unknown:
        note += f"; link layer unreadable on {', '.join(unknown)}"
    names = ", ".join(f"{d.name}/{q.port}" for d, q in rails)
    kind = f"{p.link_layer} rail{'s' if n != 1 else ''}"
    if n == p.rails:
        return CheckResult(check="ib.rails", status=Status.PASS, value=n, threshold=p.rails,
                           message=f"{n} {kind}" + (f" ({names})" if names else "") + note)
    if unknown and n < p.rails <= n + len(unknown):
        return CheckResult(check="ib.rails", status=Status.ERROR, value=n, threshold=p.rails,
                           message=f"{n} {kind} found, profile {pname} expects {p.rails}, and the link "
                                   f"layer of {len(unknown)} port(s) could not be read{note}")
    where = "" if m.devices else f" (no RDMA device under {m.path})"
    return CheckResult(check="ib.rails", status=Status.FAIL, value=n, threshold=p.rails,
                       message=f"{n} {kind}" + (f" ({names})" if names else "") +
                               f", profile {pname} expects {p.rails}{where}{note}")


def _judge_state(at: Subject, port: IbPort) -> CheckResult:
    active = port_active(port)
    st, ph = state_name(port.state), state_name(port.phys_state)
    if active is None:
        missing = " and ".join(w for w, v in (("state", st), ("phys_state", ph)) if v is None)
        return CheckResult(check="ib.port.state", **at, status=Status.ERROR,
                           message=f"port {missing} could not be read")
    if active:
        return CheckResult(check="ib.port.state", **at, status=Status.PASS, value="ACTIVE",
                           threshold="ACTIVE", message=f"{st}, {ph}")
    hint = _STATE_HINT.get(ph or "")
    if hint is None and (ph or "").lower() == "linkup":
        hint = (f"the physical link is up but the port is {st}: no subnet manager has configured it "
                "(is a subnet manager running on the fabric?)")
    return CheckResult(check="ib.port.state", **at, status=Status.FAIL, value=st, threshold="ACTIVE",
                       message=f"state {st}, physical state {ph}" + (f": {hint}" if hint else ""))


def _judge_rate(at: Subject, port: IbPort, p: IbProfile) -> CheckResult:
    if p.rate_gbps is None:
        return CheckResult(check="ib.port.rate", **at, status=Status.SKIP,
                           message="the profile sets no rate")
    if port_active(port) is False:
        return CheckResult(check="ib.port.rate", **at, status=Status.SKIP,
                           message="port not active: its rate means nothing (see ib.port.state)")
    if port.rate_gbps is None:
        why = "could not be read" if port.rate is None else f"not understood: {port.rate!r}"
        return CheckResult(check="ib.port.rate", **at, status=Status.ERROR, message=f"port rate {why}")
    r = port.rate_gbps
    if r < p.rate_gbps * 0.999:
        return CheckResult(check="ib.port.rate", **at, status=Status.FAIL, value=r, threshold=p.rate_gbps,
                           unit="Gb/s", message=f"{port.rate}, below {p.rate_gbps:g} Gb/s: the link trained down "
                                                "(cable, transceiver, or the far end's port)")
    return CheckResult(check="ib.port.rate", **at, status=Status.PASS, value=r, threshold=p.rate_gbps,
                       unit="Gb/s", message=port.rate or f"{r:g} Gb/s")


def _judge_counters(at: Subject, port: IbPort, p: IbProfile, state_error: Optional[str]) -> CheckResult:
    judged = [c for c in IB_COUNTERS if c in p.counters_max or c in p.counters_delta_max]
    problems: list[tuple[str, int, int, str]] = []  # counter, value, limit, text
    unknown: list[str] = []
    reset = False
    prev = port.previous
    ago = _ago(port.previous_age_s)
    for c in judged:
        cur = port.counters.get(c)
        if cur is None:
            unknown.append(c)
            continue
        top = (1 << COUNTER_BITS[c]) - 1 if c in COUNTER_BITS else None
        sat = " (saturated: the counter stops at its maximum)" if top is not None and cur >= top else ""
        limit = p.counters_max.get(c)
        if limit is not None and cur > limit:
            problems.append((c, cur, limit, f"{c} {cur:,} > {limit:,}{sat}"))
        dlimit = p.counters_delta_max.get(c)
        before = prev.get(c) if prev is not None else None
        if dlimit is None or before is None:
            continue
        if cur < before:
            reset = True
            continue
        delta = cur - before
        if delta > dlimit:
            problems.append((c, cur, dlimit, f"{c} +{delta:,} since the previous run{ago} (now {cur:,})"))
        elif top is not None and cur >= top and before >= top and limit is None:
            problems.append((c, cur, dlimit, f"{c} saturated at {cur:,}: growth since the previous run cannot "
                                             "be seen (clear the port's counters)"))
    if problems:
        c, v, lim, _ = problems[0]
        msg = "; ".join(t for *_, t in problems)
        if unknown:
            msg += f"; unreadable: {', '.join(unknown)}"
        return CheckResult(check="ib.counters", **at, status=Status.FAIL, value=v, threshold=lim,
                           unit="errors", message=msg)
    if unknown:
        return CheckResult(check="ib.counters", **at, status=Status.ERROR,
                           message=f"counters could not be read: {', '.join(unknown)} (unknown, not zero)")
    shown = ", ".join(f"{c} {port.counters.get(c)}" for c in judged if port.counters.get(c))
    msg = "error counters within limits" + (f" ({shown})" if shown else "")
    if prev is None:
        msg += "; first run here: growth is judged from the next run"
        if state_error:
            msg += f" ({state_error})"
    elif reset:
        msg += "; counters went down since the previous run (cleared, or the driver reloaded): growth not judged"
    return CheckResult(check="ib.counters", **at, status=Status.PASS, unit="errors", message=msg)


def _judge_firmware(rails: list[tuple[IbDevice, IbPort]]) -> list[CheckResult]:
    devs: dict[str, IbDevice] = {}
    for d, _ in rails:
        devs.setdefault(d.name, d)
    versions = Counter(d.fw_ver for d in devs.values() if d.fw_ver)
    expected: Optional[str] = None
    if versions:
        top = max(versions.values())
        expected = max((v for v, c in versions.items() if c == top), key=_version_key)
    out = []
    for name, d in devs.items():
        at = on_device(name)
        if not d.fw_ver:
            out.append(CheckResult(check="ib.firmware", **at, status=Status.ERROR,
                                   message="fw_ver could not be read"))
        elif len(versions) > 1 and d.fw_ver != expected:
            out.append(CheckResult(check="ib.firmware", **at, status=Status.WARN, value=d.fw_ver,
                                   threshold=expected, message=f"firmware {d.fw_ver}, the node's other rails run "
                                                               f"{expected}"))
        else:
            out.append(CheckResult(check="ib.firmware", **at, status=Status.PASS, value=d.fw_ver,
                                   threshold=expected, message=f"firmware {d.fw_ver}"))
    return out


def dmabuf_path(m: IbMeasurement) -> tuple[Optional[bool], str]:
    """Whether GPU memory can reach the HCAs through dma-buf, from what sysfs and the kernel
    release tell: (True/False, why) or (None, why not known).

    Needed: a kernel that can register dma-buf memory for RDMA (5.12, ib_umem_dmabuf) and the
    open flavour of the nvidia kernel module (R515 and later; the proprietary module taints the
    kernel ``P`` and cannot export dma-buf to RDMA). The userspace half (rdma-core 36 or later,
    CUDA 11.7 or later) is not visible here: ``--ib-bw`` exercises the whole path.
    """
    k = _kernel_tuple(m.kernel)
    if k is None:
        return None, "the kernel release could not be read"
    if k < DMABUF_KERNEL:
        return False, f"kernel {m.kernel} predates RDMA dma-buf support (5.12)"
    if m.nvidia_module is None:
        return None, "the loaded modules could not be listed"
    if not m.nvidia_module:
        return False, "the nvidia kernel module is not loaded"
    if m.nvidia_taint is None:
        return None, "module/nvidia/taint could not be read (open or proprietary module?)"
    if "P" in m.nvidia_taint:
        return False, (f"the nvidia kernel module{' ' + m.nvidia_version if m.nvidia_version else ''} is the "
                       "proprietary flavour (taint P): dma-buf for RDMA needs the open kernel modules")
    major = re.match(r"^(\d+)", m.nvidia_version or "")
    if major and int(major.group(1)) < 515:
        return False, f"nvidia driver {m.nvidia_version} predates dma-buf export (R515)"
    ver = f" {m.nvidia_version}" if m.nvidia_version else ""
    return True, f"kernel {m.kernel} and the open nvidia kernel module{ver}"


def _judge_gdr(m: IbMeasurement, p: IbProfile) -> list[CheckResult]:
    if not p.gdr_required:
        return []
    if m.peermem:
        return [CheckResult(check="ib.gdr", status=Status.PASS, value="nvidia_peermem",
                            message="nvidia_peermem loaded (GPUDirect RDMA through peer memory)")]
    if m.peermem is None:
        return [CheckResult(check="ib.gdr", status=Status.ERROR,
                            message="cannot tell: the loaded kernel modules (<sysfs-root>/module) could not be listed")]
    ok, why = dmabuf_path(m)
    if ok:
        return [CheckResult(check="ib.gdr", status=Status.PASS, value="dma-buf",
                            message=f"nvidia_peermem not loaded; dma-buf path available: {why} (rdma-core and "
                                    "CUDA not checked: --ib-bw exercises the path)")]
    if ok is None:
        return [CheckResult(check="ib.gdr", status=Status.ERROR,
                            message=f"nvidia_peermem not loaded, and whether the dma-buf path works cannot be "
                                    f"told: {why}")]
    return [CheckResult(check="ib.gdr", status=Status.FAIL, value="none",
                        message=f"no GPUDirect RDMA: nvidia_peermem not loaded and {why}; load it "
                                "(modprobe nvidia_peermem) or use the open nvidia modules on kernel 5.12+")]


def _judge_write_bw(m: IbMeasurement, p: IbProfile) -> list[CheckResult]:
    if not m.write_bw_requested:
        return []
    if m.write_bw_error:
        return [CheckResult(check="ib.write_bw", status=Status.ERROR, message=m.write_bw_error)]
    measured = [r.gbps for r in m.write_bw if r.gbps is not None]
    best = max(measured) if measured else None
    out = []
    for r in m.write_bw:
        at = on_port(r.device, r.port)
        how = " (GPU memory" + (", dma-buf)" if r.dmabuf else ")") if r.use_cuda is not None else " (host memory)"
        if r.skipped:
            out.append(CheckResult(check="ib.write_bw", **at, status=Status.SKIP, message=r.skipped))
            continue
        if r.gbps is None:
            out.append(CheckResult(check="ib.write_bw", **at, status=Status.ERROR,
                                   message=r.error or "no bandwidth measured"))
            continue
        bw = r.gbps
        floor = p.write_bw_gbps_min
        rel = p.write_bw_rel_min * best if best is not None and len(measured) > 1 else None
        if floor is not None and bw < floor:
            out.append(CheckResult(check="ib.write_bw", **at, status=Status.FAIL, value=bw, threshold=floor,
                                   unit="Gb/s", message=f"{bw:g} Gb/s loopback{how}, below the {floor:g} Gb/s floor"))
        elif rel is not None and bw < rel:
            out.append(CheckResult(check="ib.write_bw", **at, status=Status.FAIL, value=bw,
                                   threshold=round(rel, 2), unit="Gb/s",
                                   message=f"{bw:g} Gb/s loopback{how}, below {p.write_bw_rel_min:g} x the node's "
                                           f"best rail ({best:g} Gb/s)"))
        else:
            out.append(CheckResult(check="ib.write_bw", **at, status=Status.PASS, value=bw, threshold=floor,
                                   unit="Gb/s", message=f"{bw:g} Gb/s loopback{how}"))
    return out


# ------------------------------------------------------------------------------------- facts
def facts(m: IbMeasurement) -> dict[str, Any]:
    """Node facts for fleet drift judges: the rails' HCA firmware and the OFED version."""
    out: dict[str, Any] = {}
    rails = rails_of(m)
    fw = sorted({d.fw_ver for d, _ in rails if d.fw_ver}, key=_version_key)
    if fw:
        out["hca_fw"] = ", ".join(fw)
    if m.ofed_version:
        out["ofed_version"] = m.ofed_version
    if not m.error:
        out["ib_rails"] = len(rails)
    return out
