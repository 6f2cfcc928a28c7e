"""The simulator's probe context: the same surfaces a real node offers, made from the fleet file.

:func:`sim_context` gives a :class:`~clusterkit.validate.context.ProbeContext` whose

- ``nvml()`` is :class:`~clusterkit.sim.nvml.SimNVML` (nvidia-ml-py's calls and errors);
- ``psutil()`` is :class:`SimPsutil` (psutil's calls and return shapes: ``cpu_count``,
  ``virtual_memory``, ``getloadavg``, ``disk_usage``);
- ``sysfs_root`` is a generated tree in the real formats (``class/infiniband/mlx5_*/ports/1/
  state`` = ``4: ACTIVE`` …);
- tool path holds stand-in executables (``nvidia-smi``, ``dmesg``, ``ib_write_bw``, ``stat``, …)
  that print the real formats, run through the real tool runner (``stat`` is a shell script:
  the storage domain runs it on every node-check, and a Python start per mount would dominate);
- ``kernel_log_text`` is the kernel log the stand-in ``dmesg -T`` prints, given as text so
  that no process is started for it (on a node ``dmesg`` is a small C program);
- ``state_dir`` is a per-node directory, so counters compared between runs work as on a node.

Generated files live under ``$CLUSTERKIT_SIM_ROOT`` (default: ``<tmp>/clusterkit-sim-<uid>``),
one directory per fleet content and node, written once and reused. What changes from run to run
(``ib_flap``: ``link_downed`` grows by its value on every node-check) is rewritten when the
context is made, from a run counter kept in the node's state directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections import namedtuple
from typing import Any, Optional

from clusterkit.sim import SimNode
from clusterkit.sim.tools import write_stress_stand_ins

ENV_SIM_ROOT = "CLUSTERKIT_SIM_ROOT"
TOOLS = ("nvidia-smi", "dmesg")
_LAYOUT = "7"  # bump when the generated tree changes shape

#: the node's RDMA devices as the ``ib_write_bw`` stand-in reads them (in the node's directory)
IB_DATA = "sim-ib.json"
#: node-check runs seen by a node with ``ib_flap`` (in its state directory)
IB_RUNS_FILE = "sim-ib-runs"
#: what a simulated HGX node's RDMA stack reports besides the fleet's ``hardware.ib``
OFED_VERSION = "23.10-1.1.9"  # module/mlx5_core/version of an MLNX_OFED 23.10 build
RAIL_HCA = ("MT4129", "MT_0000000838")  # ConnectX-7 (hca_type, board_id)
STORAGE_HCA = ("MT4125", "MT_0000000359", "22.39.1002", 100.0)  # ConnectX-6 Dx 100GbE: + fw, rate
#: ib_write_bw loopback per port as a share of its rate: AzNHC's H100 sample, 390.98 of 400 Gb/s
WRITE_BW_EFFICIENCY = 390.98 / 400

_VMem = namedtuple("_VMem", "total available percent used free")
_Disk = namedtuple("_Disk", "total used free percent")


class SimPsutil:
    """Drop-in for the parts of ``psutil`` the probes use, for one simulated node."""

    def __init__(self, node: SimNode) -> None:
        self._facts = node.system_facts()

    def cpu_count(self, logical: bool = True) -> int:
        n = int(self._facts["cpus"])
        return n if logical else max(1, n // 2)

    def virtual_memory(self) -> Any:
        total = int(self._facts["memory_gib"] * 1024**3)
        free = total // 2
        return _VMem(total=total, available=free, percent=50.0, used=total - free, free=free)

    def getloadavg(self) -> tuple[float, float, float]:
        load = float(self._facts["load1"])
        return (load, load, load)

    def disk_usage(self, path: str) -> Any:
        d = self._facts["disks"].get(path)
        if d is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        total = int(d["total_gib"] * 1024**3)
        free = int(d["free_gib"] * 1024**3)
        used = total - free
        return _Disk(total=total, used=used, free=free,
                     percent=round(100.0 * used / total, 1) if total else 0.0)


def sim_root() -> str:
    env = os.environ.get(ENV_SIM_ROOT)
    if env:
        return env
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"clusterkit-sim-{uid}")


def node_dir(node: SimNode, fleet_key: str) -> str:
    """The node's generated directory (sys/, tools/, state/), created once."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node.name)[:80] or "node"
    digest = hashlib.sha256(f"{_LAYOUT}\0{fleet_key}\0{node.name}\0{sys.executable}".encode()).hexdigest()[:12]
    path = os.path.join(sim_root(), f"{safe}-{digest}")
    if not os.path.isfile(os.path.join(path, ".complete")):
        _generate(node, path)
    return path


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _generate(node: SimNode, path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".gen-", dir=os.path.dirname(path))
    try:
        _sysfs(node, os.path.join(tmp, "sys"))
        _write(os.path.join(tmp, IB_DATA), json.dumps(ib_view(node), indent=1) + "\n")
        _storage(node, tmp, path)
        _tools(os.path.join(tmp, "tools"), os.path.join(path, IB_DATA), os.path.join(path, STORAGE_DATA))
        write_stress_stand_ins(node, tmp, path)  # clusterkit-stress-worker, dcgmi, gpu_burn
        os.makedirs(os.path.join(tmp, "state"), mode=0o755)
        _write(os.path.join(tmp, ".complete"), "")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    from clusterkit.fsutil import publish_dir

    publish_dir(tmp, path)  # another process generated it first: theirs stays


_LANES = ((2.5, "SDR"), (5.0, "DDR"), (10.0, "QDR"), (14.0, "FDR"), (25.0, "EDR"), (50.0, "HDR"),
          (100.0, "NDR"), (200.0, "XDR"))


def rate_text(gbps: float) -> str:
    """A port rate as the kernel's ``ports/N/rate`` prints it: 400 -> '400 Gb/sec (4X NDR)'."""
    shown = f"{int(gbps)}" if float(gbps).is_integer() else f"{gbps:g}"
    for width in (4, 1, 2, 8, 12):
        for lane, name in _LANES:
            if abs(width * lane - gbps) < 1e-9:
                return f"{shown} Gb/sec ({width}X {name})"
    return f"{shown} Gb/sec (4X)"


def _device_fault(node: SimNode, kind: str, device: str) -> Any:
    for f in node.faults:
        if f.kind == kind and f.device == device:
            return f
    return None


def ib_view(node: SimNode) -> dict[str, Any]:
    """The node's RDMA devices with its faults applied: what the generated sysfs tree and the
    ``ib_write_bw`` stand-in say. Rails are ``hardware.ib.prefix`` + index (``ib_missing``
    keeps the first ``value``), then the storage NIC's Ethernet ports
    (:meth:`~clusterkit.sim.SimIbSpec.device_names`); rail *i* sits on its GPU's NUMA node
    (GPU *i*; the first half of the GPUs on node 0), ``nic_far`` moves it to the other one."""
    ib = node.hardware.ib
    missing = node.fault("ib_missing")
    rails = ib.rail_names(int(missing.value) if missing is not None else None)
    gpus = node.hardware.gpu.count
    split = (gpus + 1) // 2
    devices: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(rails):
        g = i % gpus if gpus else 0
        fw = _device_fault(node, "ib_fw", name)
        devices[name] = {"rail": True, "link_layer": ib.link_layer, "rate_gbps": float(ib.rate_gbps),
                         "fw_ver": str(fw.value) if fw is not None else ib.fw_ver, "hca_type": RAIL_HCA[0],
                         "board_id": RAIL_HCA[1], "numa_node": 0 if g < split else 1}
    for name in ib.storage_names():
        devices[name] = {"rail": False, "link_layer": "Ethernet", "rate_gbps": STORAGE_HCA[3],
                         "fw_ver": STORAGE_HCA[2], "hca_type": STORAGE_HCA[0], "board_id": STORAGE_HCA[1],
                         "numa_node": 0}
    for name, d in devices.items():
        d.update(state="4: ACTIVE", phys_state="5: LinkUp", symbol_error=0, flap=0)
        if _device_fault(node, "ib_port_down", name):
            d.update(state="1: DOWN", phys_state="3: Disabled")
        elif _device_fault(node, "ib_port_polling", name):
            d.update(state="1: DOWN", phys_state="2: Polling")
        rate = _device_fault(node, "ib_rate", name)
        if rate is not None:
            d["rate_gbps"] = float(rate.value)
        errors = _device_fault(node, "ib_errors", name)
        if errors is not None:
            d["symbol_error"] = min(int(errors.value), 0xFFFF)  # a 16-bit counter: it saturates
        flap = _device_fault(node, "ib_flap", name)
        if flap is not None:
            d["flap"] = int(flap.value) if flap.value is not None else 1
        if _device_fault(node, "nic_far", name):
            d["numa_node"] = 1 - d["numa_node"]
        active = d["state"].endswith("ACTIVE")
        slow = _device_fault(node, "ib_bw_slow", name)
        d["bw_gbps"] = (float(slow.value) if slow is not None else
                        round(d["rate_gbps"] * WRITE_BW_EFFICIENCY, 2)) if active else None
    peermem = node.fault("peermem_missing") is None
    return {"devices": devices, "peermem": peermem,
            # without peermem the fault means no dma-buf either: the proprietary nvidia module
            "dmabuf": peermem, "gpu_name": node.hardware.gpu.name,
            "driver_version": node.driver_version}


def _sysfs(node: SimNode, root: str) -> None:
    """class/infiniband for the node's RDMA devices and module/ for its drivers, in the kernel's
    formats (``4: ACTIVE``, ``5: LinkUp``, ``400 Gb/sec (4X NDR)``, ``InfiniBand``)."""
    from clusterkit.profiles import IB_COUNTERS

    view = ib_view(node)
    for name, d in view["devices"].items():
        dev = os.path.join(root, "class", "infiniband", name)
        _write(os.path.join(dev, "fw_ver"), f"{d['fw_ver']}\n")
        _write(os.path.join(dev, "board_id"), f"{d['board_id']}\n")
        _write(os.path.join(dev, "hca_type"), f"{d['hca_type']}\n")
        _write(os.path.join(dev, "device", "numa_node"), f"{d['numa_node']}\n")
        port = os.path.join(dev, "ports", "1")
        _write(os.path.join(port, "state"), f"{d['state']}\n")
        _write(os.path.join(port, "phys_state"), f"{d['phys_state']}\n")
        _write(os.path.join(port, "rate"), rate_text(d["rate_gbps"]) + "\n")
        _write(os.path.join(port, "link_layer"), f"{d['link_layer']}\n")
        for counter in IB_COUNTERS:
            value = d["symbol_error"] if counter == "symbol_error" else 0
            _write(os.path.join(port, "counters", counter), f"{value}\n")
    module = os.path.join(root, "module")
    driver = node.driver_version
    # the open nvidia kernel module taints the kernel O (out of tree) and E (unsigned); the
    # proprietary one adds P: with peermem_missing it is the proprietary one (no dma-buf either)
    _write(os.path.join(module, "nvidia", "version"), f"{driver}\n")
    _write(os.path.join(module, "nvidia", "taint"), ("OE" if view["dmabuf"] else "POE") + "\n")
    if view["peermem"]:
        _write(os.path.join(module, "nvidia_peermem", "version"), f"{driver}\n")
    _write(os.path.join(module, "mlx5_core", "version"), f"{OFED_VERSION}\n")
    _write(os.path.join(module, "ib_core", "refcnt"), "4\n")


def _advance_flaps(node: SimNode, base: str, state_dir: str) -> None:
    """``ib_flap``: one more node-check run, so ``link_downed`` = value x runs (8 bits: it
    saturates at 255), written into the node's generated tree."""
    flaps = [f for f in node.faults if f.kind == "ib_flap"]
    if not flaps:
        return
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    runs_path = os.path.join(state_dir, IB_RUNS_FILE)
    try:
        with open(runs_path, encoding="utf-8") as fh:
            runs = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        runs = 0
    runs += 1
    _replace(runs_path, f"{runs}\n")
    for f in flaps:
        path = os.path.join(base, "sys", "class", "infiniband", str(f.device), "ports", "1", "counters",
                            "link_downed")
        if os.path.isdir(os.path.dirname(path)):
            step = int(f.value) if f.value is not None else 1
            _replace(path, f"{min(255, step * runs)}\n")


def _replace(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _tools(root: str, ib_data: Optional[str] = None, storage_data: Optional[str] = None) -> None:
    """Stand-in executables: each runs ``clusterkit.sim.tools`` with this interpreter.

    ``ib_write_bw`` runs 2 x 8 times per node with ``--ib-bw``: it loads ``tools.py`` on its own
    (only the standard library, not the package) and reads the node's RDMA devices
    from ``ib_data`` (:data:`IB_DATA`, written with the tree), so each start stays cheap."""
    os.makedirs(root, mode=0o755, exist_ok=True)
    scripts = {tool: (f"#!{sys.executable}\n"
                      "import sys\n"
                      "from clusterkit.sim.tools import main\n"
                      f"sys.exit(main({tool!r}, sys.argv[1:]))\n") for tool in TOOLS}
    if ib_data is not None:
        tools_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools.py")
        scripts["ib_write_bw"] = (f"#!{sys.executable}\n"
                                  "import importlib.util, sys\n"
                                  "spec = importlib.util.spec_from_file_location(\n"
                                  f"    'clusterkit_sim_tools', {tools_py!r})\n"
                                  "mod = importlib.util.module_from_spec(spec)\n"
                                  "spec.loader.exec_module(mod)\n"
                                  f"sys.exit(mod.ib_write_bw(sys.argv[1:], {ib_data!r}))\n")
    if storage_data is not None:
        scripts.update(_storage_tools(storage_data))
    for tool, script in scripts.items():
        p = os.path.join(root, tool)
        _write(p, script, 0o755)
        os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def sim_context(node: SimNode, fleet_key: str, *, deadline: float, kernel_log_file: str | None = None,
                state_dir: str | None = None) -> Any:
    """The probe context of a simulated node. Its kernel log is handed over as text (what the
    stand-in ``dmesg -T`` prints), read without starting a process, as ``dmesg`` is on a node."""
    from clusterkit.sim.nvml import SimNVML
    from clusterkit.sim.tools import kernel_log
    from clusterkit.validate.context import ProbeContext

    base = node_dir(node, fleet_key)
    kernel = node.hardware.system.kernel
    state = state_dir or os.path.join(base, "state")
    _advance_flaps(node, base, state)
    return ProbeContext(
        node=node.name,
        deadline=deadline,
        sysfs_root=os.path.join(base, "sys"),
        procfs_root=os.path.join(base, "proc"),
        state_dir=state,
        kernel_log_file=kernel_log_file,
        kernel_log_text=kernel_log(node, human=True),
        tool_path=[os.path.join(base, "tools")],
        tool_env={"CLUSTERKIT_NODE": node.name},
        nvml_factory=lambda: SimNVML(node, state_dir=state),  # its run counter lives there
        psutil_factory=lambda: SimPsutil(node),
        kernel_release_fn=lambda: kernel,
        simulated=True,
    )


# ------------------------------------------------------------------------------- storage
#: the node's mounts and storage figures as the stand-ins read them (in the node's directory)
STORAGE_DATA = "sim-storage.json"
#: fault kinds on a path: any of them in the fleet makes that path a mount of every node
STORAGE_PATH_KINDS = ("mount_missing", "mount_wrong_fs", "mount_hang", "metadata_slow")
#: a healthy simulated shared file system (NFSv4.1 over the storage NIC) as one node sees it
SIM_FIO = {"read_mibps": 8000.0, "write_mibps": 4000.0, "randread_iops": 100000.0}
SIM_WEIGHTS_GBPS = 5.0
#: how long a call on a ``mount_hang`` path blocks (the caller's timeout ends it first)
HANG_S = 3600.0
SIM_SHARED = {"total_tib": 500.0, "free_tib": 300.0, "files": 4_000_000_000, "ffree": 3_000_000_000}
_NFS_SUPER = ("rw,vers=4.1,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,"
              "sec=sys,clientaddr=10.20.0.11,local_lock=none,addr=10.20.0.2")


def _fleet_storage_paths(node: SimNode) -> set[str]:
    """Every path a storage fault names anywhere in the node's fleet (healthy nodes mount it too),
    or the node's own when the fleet is not at hand."""
    from clusterkit import sim

    paths = {str(f.path) for f in node.faults if f.kind in STORAGE_PATH_KINDS and f.path}
    spec = os.environ.get(sim.ENV_SIM)
    if spec:
        try:
            fleet = sim.load_fleet(spec)
        except Exception:  # noqa: BLE001 - the node's own faults still say enough
            return paths
        paths |= {str(f.path) for f in fleet.faults if f.kind in STORAGE_PATH_KINDS and f.path}
    return paths


def storage_view(node: SimNode, base: str) -> dict[str, Any]:
    """The node's mounts (mountinfo fields), ``stat -f`` figures per mount point, and what the
    storage faults change: hung paths, metadata latency, fio slow-down, weights read rate."""
    facts = node.system_facts()
    gib = 1024**3
    mounts: list[dict[str, str]] = [
        {"mp": "/", "fstype": "ext4", "source": "/dev/md0", "opts": "rw,relatime", "super": "rw,errors=remount-ro"},
        {"mp": "/dev", "fstype": "devtmpfs", "source": "udev", "opts": "rw,nosuid,relatime",
         "super": "rw,size=1056525112k,nr_inodes=264131278,mode=755"},
        {"mp": "/proc", "fstype": "proc", "source": "proc", "opts": "rw,nosuid,nodev,noexec,relatime", "super": "rw"},
        {"mp": "/sys", "fstype": "sysfs", "source": "sysfs", "opts": "rw,nosuid,nodev,noexec,relatime", "super": "rw"},
        {"mp": "/run", "fstype": "tmpfs", "source": "tmpfs", "opts": "rw,nosuid,nodev,noexec,relatime",
         "super": "rw,size=211305024k,mode=755"},
        {"mp": "/dev/shm", "fstype": "tmpfs", "source": "tmpfs", "opts": "rw,nosuid,nodev", "super": "rw"},
    ]
    statfs: dict[str, dict[str, Any]] = {}

    def local(total_gib: float, free_gib: float) -> dict[str, Any]:
        files = int(total_gib * 65536)  # ext4/xfs: one inode per 16 KiB
        return {"bsize": 4096, "blocks": int(total_gib * gib // 4096), "bfree": int(free_gib * gib // 4096),
                "bavail": int(free_gib * gib // 4096), "files": files,
                # inodes are not bytes: a disk filled by a few big files (disk_free_gib)
                # still has most of its inodes free
                "ffree": int(files * 0.9)}

    for k, (mp, d) in enumerate(sorted(facts["disks"].items())):
        if mp != "/":
            mounts.append({"mp": mp, "fstype": "xfs", "source": f"/dev/md{k + 1}", "opts": "rw,relatime",
                           "super": "rw,attr2,inode64,noquota"})
        statfs[mp] = local(float(d["total_gib"]), float(d["free_gib"]))
    shm = float(facts["memory_gib"]) / 2
    statfs["/dev/shm"] = local(shm, shm)
    missing = {f.path for f in node.faults if f.kind == "mount_missing"}
    wrong = {f.path: str(f.value) for f in node.faults if f.kind == "mount_wrong_fs"}
    for i, mp in enumerate(sorted(_fleet_storage_paths(node))):
        if mp in missing:
            continue
        fstype = wrong.get(mp, "nfs4")
        mounts = [m for m in mounts if m["mp"] != mp]
        nfs = fstype.startswith("nfs")
        mounts.append({"mp": mp, "fstype": fstype, "source": f"10.20.0.2:/export{mp}" if nfs else f"storage{i}",
                       "opts": "rw,relatime", "super": _NFS_SUPER if nfs else "rw"})
        if mp not in statfs:
            s = SIM_SHARED
            statfs[mp] = {"bsize": 1048576, "blocks": int(s["total_tib"] * 1024 * 1024),
                          "bfree": int(s["free_tib"] * 1024 * 1024), "bavail": int(s["free_tib"] * 1024 * 1024),
                          "files": int(s["files"]), "ffree": int(s["ffree"])}
    for m in mounts:
        if m["mp"] in statfs:
            statfs[m["mp"]]["type"] = m["fstype"]
    fio_slow = node.fault("fio_slow")
    weights = node.fault("weights_slow")
    return {
        "mounts": mounts,
        "statfs": statfs,
        "hung": sorted(str(f.path) for f in node.faults if f.kind == "mount_hang" and f.path),
        "hang_s": HANG_S,
        "metadata_ms": {str(f.path): float(f.value) for f in node.faults if f.kind == "metadata_slow" and f.path},
        "fio": {k: v / (float(fio_slow.value) if fio_slow is not None else 1.0) for k, v in SIM_FIO.items()},
        "weights_gbps": float(weights.value) if weights is not None else SIM_WEIGHTS_GBPS,
        "scratch": os.path.join(base, "scratch"),
    }


def _escape_mount(path: str) -> str:
    return (path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
            .replace("\n", "\\012"))


def mountinfo_text(view: dict[str, Any]) -> str:
    """``/proc/self/mountinfo`` lines (proc(5)) for the view's mounts."""
    lines = []
    for i, m in enumerate(view["mounts"]):
        mid = 24 + i
        parent = 1 if m["mp"] == "/" else 24
        lines.append(f"{mid} {parent} 0:{21 + i} / {_escape_mount(m['mp'])} {m['opts']} shared:{i + 1} - "
                     f"{m['fstype']} {m['source']} {m['super']}")
    return "\n".join(lines) + "\n"


def _storage(node: SimNode, tmp: str, final: str) -> None:
    """proc/self/mountinfo, proc/mounts and the stand-ins' data file, in the node's tree."""
    view = storage_view(node, final)
    _write(os.path.join(tmp, STORAGE_DATA), json.dumps(view, indent=1) + "\n")
    _write(os.path.join(tmp, "proc", "self", "mountinfo"), mountinfo_text(view))
    _write(os.path.join(tmp, "proc", "mounts"),
           "".join(f"{m['source']} {_escape_mount(m['mp'])} {m['fstype']} {m['super']} 0 0\n"
                   for m in view["mounts"]))
    os.makedirs(os.path.join(tmp, "scratch"), mode=0o755, exist_ok=True)
    _statfs_tree(view, os.path.join(tmp, STATFS_DIR))


#: ``stat -f`` figures per mount point, read by the shell stand-in ``stat``: ``<dir>/m<mount
#: point>/.fs`` holds ``%S %b %f %a %c %d %T``, ``.hung`` marks a hung mount
STATFS_DIR = "statfs"
#: the Python ``stat`` stand-in, for what the shell one does not answer itself (in ``tools/``)
STAT_PY = ".stat-py"


def _statfs_tree(view: dict[str, Any], root: str) -> None:
    """Each mount's figures as :func:`clusterkit.sim.tools.stat_tool` prints them, so that the
    shell stand-in answers ``stat -f`` without starting a Python (the storage domain runs one
    ``stat`` per mount on every node-check)."""
    from clusterkit.sim.tools import STAT_DEFAULT, stat_type

    os.makedirs(os.path.join(root, "m"), mode=0o755, exist_ok=True)  # no mount at all: the default
    _write(os.path.join(root, "default"), _fs_line(STAT_DEFAULT, stat_type))
    for m in view["mounts"]:
        d = os.path.join(root, "m" + m["mp"].rstrip("/"))
        _write(os.path.join(d, ".fs"), _fs_line(view["statfs"].get(m["mp"]) or STAT_DEFAULT, stat_type))
        if m["mp"] in view.get("hung", []):
            _write(os.path.join(d, ".hung"), "")


def _fs_line(fs: dict[str, Any], stat_type: Any) -> str:
    typ = stat_type(str(fs.get("type", "ext4")))
    return " ".join(str(fs[k]) for k in ("bsize", "blocks", "bfree", "bavail", "files", "ffree")) + f" {typ}\n"


# ``stat -f -c FORMAT [--] PATH`` in POSIX sh (GNU stat's file-system mode, %S %s %b %f %a %c %d
# %T %t %n %%), from the figures of the mount holding PATH; every other use, and a path that is
# not plain (relative, ``.``/``..``, ``//``), goes to the Python stand-in.
_STAT_SH = r"""#!/bin/sh
# stat stand-in of a simulated node (clusterkit sim), generated
V=@STATFS@
PY=@PY@
if [ "$#" -eq 5 ] && [ "$1" = -f ] && [ "$2" = -c ] && [ "$4" = -- ]; then fmt=$3; p=$5
elif [ "$#" -eq 4 ] && [ "$1" = -f ] && [ "$2" = -c ]; then fmt=$3; p=$4
else exec "$PY" "$@"; fi
case $p in /*) ;; *) exec "$PY" "$@" ;; esac
case $p in *//*|*/./*|*/../*|*/.|*/..) exec "$PY" "$@" ;; esac
n=$p
[ "$p" = / ] || p=${p%/}
m=$p
while :; do
  if [ -f "$V/m$m/.fs" ]; then f=$V/m$m/.fs; break; fi
  if [ -z "$m" ]; then f=$V/default; break; fi
  m=${m%/*}
done
if [ -f "$V/m$m/.hung" ]; then exec sleep @HANG@; fi
read -r S b fr a c d T < "$f"
out=
rest=$fmt
while [ -n "$rest" ]; do
  ch=${rest%"${rest#?}"}; rest=${rest#?}
  if [ "$ch" = % ] && [ -n "$rest" ]; then
    k=${rest%"${rest#?}"}; rest=${rest#?}
    case $k in
      S|s) out=$out$S ;; b) out=$out$b ;; f) out=$out$fr ;; a) out=$out$a ;; c) out=$out$c ;;
      d) out=$out$d ;; T) out=$out$T ;; t) out=${out}6969 ;; n) out=$out$n ;; %) out=$out% ;;
      *) out=$out? ;;
    esac
  else
    out=$out$ch
  fi
done
printf '%s\n' "$out"
"""


def _storage_tools(data: str) -> dict[str, str]:
    """Stand-ins ``stat``, ``fio`` and the storage helper: ``tools.py`` loaded on its own (only
    the standard library), reading the node's storage view from ``data``; ``stat`` is a shell
    script in front of that (:data:`STAT_PY`) that answers the storage domain's ``stat -f``."""
    import shlex

    tools_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools.py")
    base = os.path.dirname(data)
    out = {"stat": (_STAT_SH.replace("@STATFS@", shlex.quote(os.path.join(base, STATFS_DIR)))
                    .replace("@PY@", shlex.quote(os.path.join(base, "tools", STAT_PY)))
                    .replace("@HANG@", str(int(HANG_S))))}
    for tool, fn in ((STAT_PY, "stat_tool"), ("fio", "fio_tool"), ("clusterkit-storage-helper", "storage_helper")):
        out[tool] = (f"#!{sys.executable}\n"
                     "import importlib.util, sys\n"
                     "spec = importlib.util.spec_from_file_location(\n"
                     f"    'clusterkit_sim_tools', {tools_py!r})\n"
                     "mod = importlib.util.module_from_spec(spec)\n"
                     "spec.loader.exec_module(mod)\n"
                     f"sys.exit(mod.{fn}(sys.argv[1:], {data!r}))\n")
    return out
