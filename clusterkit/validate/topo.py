"""Topology domain: how GPUs reach each other and their network rails, from ``nvidia-smi topo -m``.

The probe runs ``nvidia-smi topo -m`` through the probe context's tool runner and reads it with
the project's parser (:mod:`clusterkit.parsers.nvidia_smi_topo`). For every NIC of the matrix it
also reads, through the context's sysfs, the link layer of its RDMA device's port 1
(``class/infiniband/<dev>/ports/1/link_layer``) and the device's NUMA node
(``class/infiniband/<dev>/device/numa_node``): only NICs whose link layer is the compute
rails' (the profile's ``ib.link_layer``, else InfiniBand) are judged for affinity, so a storage
or frontend NIC never fails it.

nvidia-smi missing, failing, cut off or printing something unreadable is ``topo.nvidia_smi``
``error``: the topology could not be read, which is never evidence against the node.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.models import CheckResult, Status
from clusterkit.profiles import Profile
from clusterkit.validate.subjects import Subject, on_device, on_pair

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.validate.context import ProbeContext

NAME = "topo"
DOC = "GPU/NIC topology from nvidia-smi topo -m: GPU pairs over NVLink, compute rails next to their GPUs"
CHECKS: dict[str, str] = {
    "topo.nvidia_smi": "nvidia-smi topo -m could not be run or read (error)",
    "topo.p2p": "a GPU pair not connected as the profile's p2p, e.g. NV18 (fail)",
    "topo.nic_affinity": "a compute-rail NIC whose nearest GPU is further than the profile's nic_affinity, "
                         "e.g. SYS or NODE instead of PIX/PXB (fail)",
}
JUDGED = ("topo.p2p", "topo.nic_affinity")
ARGV = ["nvidia-smi", "topo", "-m"]
TOOL_TIMEOUT_S = 30.0

#: how far a connection is, nearest first (SOC is the old name of SYS)
DISTANCE = {"PIX": 0, "PXB": 1, "PHB": 2, "NODE": 3, "SYS": 4, "SOC": 4}
_DEVICE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class TopoNic(Record):
    model_config = ConfigDict(extra="forbid")

    nic: str  # the matrix's name: NIC3
    device: Optional[str] = None  # the RDMA device from the NIC legend: mlx5_3
    link_layer: Optional[str] = None  # sysfs ports/1/link_layer (None: could not be read)
    numa_node: Optional[int] = None  # sysfs device/numa_node (None: unknown or -1)
    nearest_gpu: Optional[int] = None  # the GPU with the nearest connection (lowest index on a tie)
    connection: Optional[str] = None  # that connection: PIX, PXB, PHB, NODE, SYS
    gpu_numa_affinity: Optional[str] = None  # that GPU's NUMA affinity, from the matrix
    gpu_cpu_affinity: Optional[str] = None  # that GPU's CPU affinity, from the matrix


class TopoMeasurement(Record):
    model_config = ConfigDict(extra="forbid")

    error: Optional[str] = None  # nvidia-smi topo -m could not be run or read
    gpus: list[int] = Field(default_factory=list)  # GPU indices of the matrix
    pairs: dict[str, Optional[str]] = Field(default_factory=dict)  # "gpu0-gpu1" -> "NV18"
    nics: list[TopoNic] = Field(default_factory=list)
    cpu_affinity: dict[str, Optional[str]] = Field(default_factory=dict)  # "gpu0" -> "0-55,112-167"
    numa_affinity: dict[str, Optional[str]] = Field(default_factory=dict)  # "gpu0" -> "0"


Measurement = TopoMeasurement


# ------------------------------------------------------------------------------------- probe
def _first_line(text: str) -> str:
    for ln in (text or "").splitlines():
        if ln.strip():
            return " ".join(ln.split())[:200]
    return ""


def probe(ctx: "ProbeContext", profile: Optional[Profile] = None) -> TopoMeasurement:
    """Run and read ``nvidia-smi topo -m``, and each NIC's link layer and NUMA node from sysfs.
    Never raises for a missing or failing tool."""
    from clusterkit.errors import ParseError
    from clusterkit.parsers.nvidia_smi_topo import parse_topo

    if profile is not None and profile.topo is None:
        return TopoMeasurement()  # nothing expected: nothing run
    cmd = " ".join(ARGV)
    r = ctx.run_tool(list(ARGV), timeout=TOOL_TIMEOUT_S)
    if r.missing:
        return TopoMeasurement(error=f"could not run {cmd}: {_first_line(r.stderr) or 'nvidia-smi not found'}")
    if r.timed_out:
        return TopoMeasurement(error=f"{cmd} did not finish in time (after {r.duration_s:.0f}s)")
    try:
        parsed = parse_topo(r.stdout)
    except ParseError as e:
        why = _first_line(r.stderr) if r.rc != 0 else ""
        detail = why or " ".join(str(e).split())[:300]
        return TopoMeasurement(error=f"{cmd} exited {r.rc}: {detail}" if r.rc != 0 else
                               f"could not read {cmd}: {detail}")
    if parsed.error:
        return TopoMeasurement(error=f"{cmd} failed: {parsed.error}")
    if r.rc != 0:
        return TopoMeasurement(error=f"{cmd} exited {r.rc}: {_first_line(r.stderr) or 'no message'}")

    m = TopoMeasurement()
    gpu_names = [d for d in parsed.devices if re.fullmatch(r"GPU\d+", d)]
    m.gpus = [int(d[3:]) for d in gpu_names]
    for d in gpu_names:
        m.cpu_affinity[f"gpu{d[3:]}"] = parsed.cpu_affinity.get(d)
        m.numa_affinity[f"gpu{d[3:]}"] = parsed.numa_affinity.get(d)
    for i, a in enumerate(gpu_names):
        for b in gpu_names[i + 1:]:
            m.pairs[f"gpu{a[3:]}-gpu{b[3:]}"] = _cell(parsed.matrix, a, b)
    for d in parsed.devices:
        if d in gpu_names:
            continue
        nic = TopoNic(nic=d, device=parsed.nic_legend.get(d))
        best: Optional[tuple[int, int, str]] = None
        for g in gpu_names:
            conn = _cell(parsed.matrix, d, g)
            if conn is None or conn not in DISTANCE:
                continue
            cand = (DISTANCE[conn], int(g[3:]), conn)
            if best is None or cand < best:
                best = cand
        if best is not None:
            nic.nearest_gpu, nic.connection = best[1], best[2]
            nic.gpu_numa_affinity = m.numa_affinity.get(f"gpu{best[1]}")
            nic.gpu_cpu_affinity = m.cpu_affinity.get(f"gpu{best[1]}")
        if nic.device and _DEVICE_RE.fullmatch(nic.device):
            nic.link_layer = ctx.read_sysfs("class", "infiniband", nic.device, "ports", "1", "link_layer") or None
            numa = ctx.read_sysfs("class", "infiniband", nic.device, "device", "numa_node")
            if numa is not None and re.fullmatch(r"-?\d{1,4}", numa) and int(numa) >= 0:
                nic.numa_node = int(numa)
        m.nics.append(nic)
    return m


def _cell(matrix: dict[str, dict[str, str]], a: str, b: str) -> Optional[str]:
    """The connection between a and b: a's row, else b's row (the matrix is symmetric)."""
    v = matrix.get(a, {}).get(b) or matrix.get(b, {}).get(a)
    return v if v and v != "X" else None


# ------------------------------------------------------------------------------------- judge
def judge(m: TopoMeasurement, profile: Profile) -> list[CheckResult]:
    """Pure verdicts on the topology against a profile. Total: what could not be read is
    ``error`` or ``skip``, never ``fail``."""
    p = profile.topo
    if p is None:
        return [CheckResult(check=c, status=Status.SKIP, message=f"profile {profile.name} has no topo section")
                for c in JUDGED]
    if m.error:
        return [CheckResult(check="topo.nvidia_smi", status=Status.ERROR, message=m.error)]
    out: list[CheckResult] = []
    if p.p2p:
        out.extend(_judge_p2p(m, p.p2p))
    if p.nic_affinity:
        rail = profile.ib.link_layer if profile.ib is not None else "InfiniBand"
        out.extend(_judge_nics(m, list(p.nic_affinity), rail))
    return out


def _judge_p2p(m: TopoMeasurement, want: str) -> list[CheckResult]:
    if len(m.gpus) < 2:
        why = "no GPUs" if not m.gpus else "a single GPU"
        return [CheckResult(check="topo.p2p", status=Status.SKIP, message=f"{why} in nvidia-smi topo -m: no GPU pairs")]
    out: list[CheckResult] = []
    unread: list[str] = []
    # the pairs' GPUs from the matrix's GPU list, which the probe named the pairs from
    about = {x["subject"]: x for x in (on_pair(a, b) for i, a in enumerate(m.gpus) for b in m.gpus[i + 1:])}
    for pair, conn in m.pairs.items():
        if conn is None:
            unread.append(pair)
        elif conn != want:
            out.append(CheckResult(check="topo.p2p", **about.get(pair, Subject(subject=pair)), status=Status.FAIL,
                                   value=conn, threshold=want,
                                   message=f"{pair} connected through {conn}, expected {want}" + _p2p_hint(conn)))
    if unread:
        out.append(CheckResult(check="topo.p2p", status=Status.ERROR, threshold=want,
                               message=f"no connection shown for {', '.join(unread[:4])}"
                                       + (f" and {len(unread) - 4} more" if len(unread) > 4 else "")))
    elif not out:
        out.append(CheckResult(check="topo.p2p", status=Status.PASS, value=want, threshold=want,
                               message=f"all {len(m.pairs)} GPU pairs {want}"))
    return out


def _p2p_hint(conn: str) -> str:
    if conn.startswith("NV"):
        return " (fewer NVLinks between them)"
    if conn in DISTANCE:
        return " (no NVLink path: peer traffic goes over PCIe)"
    return ""


def _judge_nics(m: TopoMeasurement, allowed: list[str], rail: str) -> list[CheckResult]:
    if not m.nics:
        return [CheckResult(check="topo.nic_affinity", status=Status.SKIP, message="nvidia-smi topo -m shows no NICs")]
    if not m.gpus:
        return [CheckResult(check="topo.nic_affinity", status=Status.SKIP, message="nvidia-smi topo -m shows no GPUs")]
    out: list[CheckResult] = []
    shown = "/".join(allowed)
    others = 0
    for n in m.nics:
        subj = n.device or n.nic
        # the NIC (its RDMA device; the matrix's own name NIC3 when the legend gives none), not
        # its nearest GPU: that GPU is in the message
        at = on_device(n.device) if n.device else Subject(subject=n.nic)
        if n.link_layer is not None and n.link_layer != rail:
            others += 1  # a storage or frontend NIC: not a compute rail
            continue
        if n.connection is None or n.nearest_gpu is None:
            out.append(CheckResult(check="topo.nic_affinity", **at, status=Status.ERROR, threshold=shown,
                                   message=f"{n.nic} has no PCIe connection to any GPU in the matrix"))
            continue
        where = _where(n)
        if n.connection in allowed:
            out.append(CheckResult(check="topo.nic_affinity", **at, status=Status.PASS, value=n.connection,
                                   threshold=shown, message=f"{n.connection} to gpu{n.nearest_gpu}{where}"))
        elif n.link_layer is None:
            out.append(CheckResult(check="topo.nic_affinity", **at, status=Status.ERROR,
                                   value=n.connection, threshold=shown,
                                   message=f"nearest GPU gpu{n.nearest_gpu} through {n.connection}, but the link "
                                           f"layer of {subj} could not be read: cannot tell whether it is a "
                                           "compute rail"))
        else:
            out.append(CheckResult(check="topo.nic_affinity", **at, status=Status.FAIL, value=n.connection,
                                   threshold=shown,
                                   message=f"nearest GPU gpu{n.nearest_gpu} through {n.connection}, expected "
                                           f"{shown}{where}: GPUDirect RDMA crosses the host bridge"
                                           + (" and the CPU interconnect" if n.connection in ("SYS", "SOC") else "")))
    if not out:
        out.append(CheckResult(check="topo.nic_affinity", status=Status.SKIP,
                               message=f"no compute-rail NIC ({rail}) among {others} NIC(s)"))
    return out


def _where(n: TopoNic) -> str:
    parts = []
    if n.gpu_numa_affinity:
        parts.append(f"GPU NUMA {n.gpu_numa_affinity}")
    if n.numa_node is not None:
        parts.append(f"NIC NUMA {n.numa_node}")
    if n.gpu_cpu_affinity:
        parts.append(f"CPUs {n.gpu_cpu_affinity}")
    return f" ({', '.join(parts)})" if parts else ""


def facts(m: TopoMeasurement) -> dict[str, Any]:
    """No facts for fleet judges yet."""
    return {}
