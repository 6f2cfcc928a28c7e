"""Simulated hardware: the only thing ``clusterkit.sim`` replaces is the hardware.

A fleet description (YAML) names the nodes, the hardware every node has (defaults: an HGX H100
node) and the faults injected on some of them. A node reads its own simulated hardware when
``CLUSTERKIT_SIM`` names the fleet file (or ``builtin``) and ``CLUSTERKIT_NODE`` names the node;
the probes then get :class:`SimNVML` instead of ``pynvml`` and simulated host facts instead of
psutil's. Everything above (judges, node-check, transport, reports) is the real code path.

A node name that the fleet does not list is simulated as a healthy node of the fleet's hardware,
so one fleet file serves a hostlist of any size.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Annotated, Any, Literal, Optional, Union

from clusterkit.record import ConfigDict, Field, Invalid, Record, field_validator, model_validator

from clusterkit.config import MAX_CPUS, MAX_GPUS, MAX_PATHS, Int, Num


ENV_SIM = "CLUSTERKIT_SIM"
ENV_NODE = "CLUSTERKIT_NODE"

FaultKind = Literal[
    "ecc_uncorrectable",  # volatile + aggregate uncorrectable ECC = value
    "ecc_aggregate",  # aggregate (lifetime) uncorrectable ECC only = value
    "ecc_disabled",  # ECC mode off
    "remap_pending",  # a row remap waits for a GPU reset
    "remap_failure",  # a row remap failed (bank out of spare rows)
    "remap_uncorrectable",  # rows remapped for uncorrectable errors = value
    "pcie_width",  # current PCIe link width = value
    "pcie_gen_max",  # maximum PCIe generation the link can reach = value
    "temperature",  # GPU temperature (C) = value
    "hw_slowdown",  # HW slowdown clocks-event reason active
    "hw_thermal_slowdown",
    "hw_power_brake",
    "power_limit",  # enforced power limit (W) = value
    "persistence_off",
    "gpu_lost",  # NVML answers GPU_IS_LOST for this GPU
    "gpu_missing",  # only `value` GPUs are visible
    "nvml_unavailable",  # NVML cannot initialise (driver not loaded)
    "driver_version",  # driver version string = value
    "vbios_version",  # VBIOS version of every GPU (or `gpu`) = value
    "memory_gib",  # host memory = value
    "disk_free_gib",  # free space on `path` (default /) = value
    "load",  # 1-minute load average = value
    "hang",  # NVML init blocks `value` seconds (default 3600): a hung driver; the deadline ends it
    # fabric: NVLink / NVSwitch (NVML), topology (nvidia-smi topo -m), InfiniBand (sysfs)
    "nvlink_down",  # gpu; `value` of its links are down (default 1)
    "nvlink_speed",  # gpu; its links run at `value` GB/s
    "nvlink_errors",  # gpu; link 0's error counters read `value` and grow by `value` every run
    "fabric_incomplete",  # GPU fabric registration (Fabric Manager) not completed
    "p2p_degraded",  # gpu; that GPU's pairs read SYS instead of NV18
    "ib_port_down",  # device; port state DOWN, phys_state Disabled
    "ib_port_polling",  # device; port state DOWN, phys_state Polling (no cable / far end down)
    "ib_rate",  # device; the port trained at `value` Gb/s
    "ib_errors",  # device; symbol_error reads `value`
    "ib_flap",  # device; link_downed grows by `value` (default 1) on every run
    "ib_fw",  # device; firmware version `value`
    "ib_missing",  # only `value` compute rails are present
    "peermem_missing",  # nvidia_peermem not loaded and no dma-buf path: no GPUDirect RDMA
    "nic_far",  # device; the device's nearest GPU reads SYS
    "ib_bw_slow",  # device; ib_write_bw over it measures `value` Gb/s
    # storage, kernel log, stress
    "mount_missing",  # path; an expected mount that is not mounted
    "mount_wrong_fs",  # path; mounted with file system type `value` (nfs, lustre, …)
    "mount_hang",  # path; stat() on it blocks (a hung NFS server)
    "metadata_slow",  # path; small-file create/stat/unlink take `value` ms
    "fio_slow",  # fio figures divided by `value`
    "weights_slow",  # model-weights directory reads at `value` GB/s
    "xid",  # gpu; the kernel log holds Xid `value` for that GPU
    "sxid",  # the kernel log holds NVSwitch SXid `value`
    "gemm_slow",  # gpu; bf16 GEMM TFLOPS divided by `value`
    "hbm_slow",  # gpu; device-to-device copy bandwidth divided by `value`
    "dcgm_fail",  # gpu; dcgmi diag fails test `value` on that GPU
    # NCCL (the stand-in nccl-tests and cross-node ib_write_bw: clusterkit.sim.fabric)
    "nccl_slow",  # every NCCL test with this node runs `value` times slower (a slow host, PCIe, …)
    "uplink_degraded",  # switch; tests crossing that leaf switch's uplinks run `value` times slower
    "nccl_hang",  # an NCCL test with this node hangs after its table header
    "nccl_init_fail",  # an NCCL test with this node fails in ncclCommInitRank (names the node)
    "hca_degraded",  # device; that rail carries 1/`value` of its bandwidth across nodes
]


#: Fault kinds that act on GPUs: ``gpu`` picks one, left out the fault is on every GPU.
GPU_KINDS = frozenset({
    "ecc_uncorrectable", "ecc_aggregate", "ecc_disabled", "remap_pending", "remap_failure",
    "remap_uncorrectable", "pcie_width", "pcie_gen_max", "temperature", "hw_slowdown",
    "hw_thermal_slowdown", "hw_power_brake", "power_limit", "persistence_off", "gpu_lost",
    "vbios_version", "nvlink_down", "nvlink_speed", "nvlink_errors", "p2p_degraded",
    "xid", "gemm_slow", "hbm_slow", "dcgm_fail",
})
#: Fault kinds that act on one RDMA device: ``device`` names it (``mlx5_3``), and is required.
DEVICE_KINDS = frozenset({
    "ib_port_down", "ib_port_polling", "ib_rate", "ib_errors", "ib_flap", "ib_fw", "nic_far", "ib_bw_slow",
    "hca_degraded",
})
#: Fault kinds that act on a leaf switch: ``switch`` names it (a key of the fleet's ``switches``),
#: is required, and the fault takes no ``node``.
SWITCH_KINDS = frozenset({"uplink_degraded"})
#: Fault kinds that take a ``path``.
PATH_KINDS = frozenset({"disk_free_gib", "mount_missing", "mount_wrong_fs", "mount_hang", "metadata_slow"})
#: What ``value`` is for each kind: (type, lowest, highest, required, what it means). Kinds not
#: listed take no value. Types: "int" a whole number, "num" any finite number, "str" text.
VALUE_RULES: dict[str, tuple[str, float | None, float | None, bool, str]] = {
    "ecc_uncorrectable": ("int", 1, 2**64 - 1, False, "a number of errors (default 1)"),
    "ecc_aggregate": ("int", 1, 2**64 - 1, False, "a number of errors (default 1)"),
    "remap_uncorrectable": ("int", 1, 2**32 - 1, False, "a number of rows (default 1)"),
    "pcie_width": ("int", 1, 32, True, "a link width in lanes"),
    "pcie_gen_max": ("int", 1, 7, True, "a PCIe generation"),
    "temperature": ("num", 0, 255, True, "a temperature in C (NVML reports 0-255)"),
    "power_limit": ("num", 1, 4_294_967, True, "a power limit in W"),
    "gpu_missing": ("int", 0, MAX_GPUS, True, "the number of GPUs still visible"),
    "driver_version": ("str", 1, 80, True, "a driver version string (quote it: \"550.90.07\")"),
    "vbios_version": ("str", 1, 80, True, "a VBIOS version string (quote it)"),
    "memory_gib": ("num", 0, None, True, "host memory in GiB"),
    "disk_free_gib": ("num", 0, None, True, "free space in GiB"),
    "load": ("num", 0, None, True, "a load average"),
    "hang": ("num", 0, 30 * 86400, False, "seconds (default 3600, at most 30 days)"),
    "nvlink_down": ("int", 1, 64, False, "a number of links (default 1)"),
    "nvlink_speed": ("num", 0, 1000, True, "a per-link speed in GB/s"),
    "nvlink_errors": ("int", 1, 2**32 - 1, True, "an error count"),
    "ib_rate": ("num", 1, 10_000, True, "a port rate in Gb/s"),
    "ib_errors": ("int", 1, 2**32 - 1, True, "a symbol error count"),
    "ib_flap": ("int", 1, 1000, False, "link_downed growth per run (default 1)"),
    "ib_fw": ("str", 1, 40, True, "a firmware version string (quote it: \"28.36.1010\")"),
    "ib_missing": ("int", 0, 64, True, "the number of compute rails still present"),
    "ib_bw_slow": ("num", 0, 10_000, True, "a bandwidth in Gb/s"),
    "mount_wrong_fs": ("str", 1, 40, True, "a file system type (nfs, lustre, wekafs, …)"),
    "metadata_slow": ("num", 0, 600_000, True, "a latency in ms"),
    "fio_slow": ("num", 1, 1_000_000, True, "a slow-down factor (>= 1)"),
    "weights_slow": ("num", 0, 10_000, True, "a read rate in GB/s"),
    "xid": ("int", 1, 1_000, True, "an Xid number"),
    "sxid": ("int", 1, 100_000, True, "an SXid number"),
    "gemm_slow": ("num", 1, 1_000_000, True, "a slow-down factor (>= 1)"),
    "hbm_slow": ("num", 1, 1_000_000, True, "a slow-down factor (>= 1)"),
    "dcgm_fail": ("str", 1, 60, True, "a dcgmi diag test name (e.g. \"Memory\")"),
    "nccl_slow": ("num", 1, 1_000_000, True, "a slow-down factor (>= 1)"),
    "uplink_degraded": ("num", 1, 1_000_000, True, "a slow-down factor (>= 1)"),
    "hca_degraded": ("num", 1, 1_000_000, True, "a slow-down factor (>= 1)"),
}
#: The most faults one fleet file may list (a hostlist puts one fault on many nodes).
MAX_FAULTS = 10_000
#: The most hostlist expressions in a fleet's ``nodes`` list.
MAX_NODE_EXPRS = 10_000
#: The most leaf switches in a fleet's ``switches``.
MAX_SWITCHES = 10_000
#: A leaf switch's name (a key of ``switches``, the ``switch`` of a fault).
SWITCH_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _shown(value: Any) -> str:
    """A value as the YAML file spelt it, more or less: true, not True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_problem(kind: str, value: Any) -> Optional[str]:
    """Why ``value`` does not suit a fault of ``kind``, or None when it does."""
    rule = VALUE_RULES.get(kind)
    if rule is None:
        return None if value is None else f"{kind} takes no value, got {_shown(value)}"
    typ, lo, hi, required, what = rule
    if value is None:
        return f"{kind} needs a value: {what}" if required else None
    if typ == "str":
        ok = isinstance(value, str) and lo <= len(value) <= hi  # type: ignore[operator]
        return None if ok else f"{kind} takes {what}, got {_shown(value)}"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_num = is_int or (isinstance(value, float) and math.isfinite(value))
    ok = is_int if typ == "int" else is_num
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
        return None
    kind_of = "a whole number" if typ == "int" else "a number"
    if lo is None:
        bounds = ""
    else:
        bounds = f" from {_num(lo)} to {_num(hi)}" if hi is not None else f" of at least {_num(lo)}"
    return f"{kind} takes {what}: {kind_of}{bounds}, got {_shown(value)}"


class _Strict(Record):
    model_config = ConfigDict(extra="forbid")


class Fault(_Strict):
    #: a node name or a hostlist expression; required by every kind but the switch kinds
    node: Optional[str] = Field(default=None, min_length=1)
    kind: FaultKind
    gpu: Optional[Int] = Field(default=None, ge=0, lt=MAX_GPUS)
    value: Any = Field(default=None, validate_default=True)  # checked per kind
    path: Optional[str] = Field(default=None, min_length=1)
    device: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,40}$")  # an RDMA device: mlx5_3
    switch: Optional[str] = Field(default=None, pattern=SWITCH_NAME)  # a leaf switch: a key of `switches`

    @model_validator(mode="after")
    def _node_or_switch(self) -> "Fault":
        if self.kind in SWITCH_KINDS:
            if self.node is not None:
                raise Invalid(f"{self.kind} takes no node: it acts on a leaf switch (switch: NAME, a key of "
                              "switches)")
            if self.switch is None:
                raise Invalid(f"{self.kind} needs a switch (a key of the fleet's switches)")
        else:
            if self.node is None:
                raise Invalid(f"{self.kind} needs a node (a node of the fleet, or a hostlist of them)")
            if self.switch is not None:
                raise Invalid(f"{self.kind} takes no switch (only {', '.join(sorted(SWITCH_KINDS))} does)")
        return self

    @model_validator(mode="after")
    def _device_for_device_kinds(self) -> "Fault":
        if self.kind in DEVICE_KINDS and self.device is None:
            raise Invalid(f"{self.kind} needs a device (an RDMA device name such as mlx5_3)")
        if self.kind not in DEVICE_KINDS and self.device is not None:
            raise Invalid(f"{self.kind} takes no device (only {', '.join(sorted(DEVICE_KINDS))} do)")
        return self

    @field_validator("gpu")
    @classmethod
    def _gpu_for_gpu_kinds(cls, v: Optional[int], info: Any) -> Optional[int]:
        kind = info.data.get("kind")
        if v is not None and kind is not None and kind not in GPU_KINDS:
            raise Invalid(f"{kind} is a fault of the whole node: it takes no gpu")
        return v

    @field_validator("value")
    @classmethod
    def _value_for_kind(cls, v: Any, info: Any) -> Any:
        kind = info.data.get("kind")
        problem = _value_problem(kind, v) if kind is not None else None
        if problem:
            raise Invalid(problem)
        return v

    @field_validator("path")
    @classmethod
    def _path_for_path_kinds(cls, v: Optional[str], info: Any) -> Optional[str]:
        kind = info.data.get("kind")
        if v is not None and kind is not None and kind not in PATH_KINDS:
            raise Invalid(f"{kind} takes no path (only {', '.join(sorted(PATH_KINDS))} does)")
        if v is not None and not v.startswith("/"):
            raise Invalid(f"path must be absolute, got {_shown(v)}")
        return v


class SimGpuSpec(_Strict):
    count: Int = Field(default=8, ge=0, le=MAX_GPUS)
    name: str = "NVIDIA H100 80GB HBM3"
    memory_total_mib: Int = Field(default=81559, ge=0)
    driver_version: str = "565.57.01"
    cuda_driver_version: Int = Field(default=12070, ge=0)
    vbios_version: str = "96.00.74.00.01"
    power_limit_w: Num = Field(default=700.0, gt=0)
    power_draw_w: Num = Field(default=71.0, ge=0)
    temperature_c: Int = Field(default=31, ge=0, le=255)
    temp_slowdown_c: Int = Field(default=87, ge=0, le=255)
    temp_shutdown_c: Int = Field(default=93, ge=0, le=255)
    pcie_gen: Int = Field(default=5, ge=1, le=7)
    pcie_width: Int = Field(default=16, ge=1, le=32)
    #: NVLinks per GPU (HGX H100/H200, NVLink 4: 18); 0 for GPUs without NVLink (PCIe cards)
    nvlink_links: Int = Field(default=18, ge=0, le=36)
    #: per-link NVLink speed in MB/s, as NVML reports it (nvidia-smi nvlink -s: 26.562 GB/s)
    nvlink_speed_mbps: Int = Field(default=26562, ge=0)


class SimDisk(_Strict):
    total_gib: Num = Field(default=3500.0, ge=0)
    free_gib: Num = Field(default=3100.0, ge=0)

    @model_validator(mode="after")
    def _free_within_total(self) -> "SimDisk":
        if self.free_gib > self.total_gib:
            raise Invalid(f"free_gib ({self.free_gib:g}) is more than total_gib ({self.total_gib:g})")
        return self


class SimSystemSpec(_Strict):
    cpus: Int = Field(default=224, ge=1, le=MAX_CPUS)
    memory_gib: Num = Field(default=2015.0, ge=0)
    load1: Num = Field(default=0.6, ge=0)
    kernel: str = "5.15.0-125-generic"
    disks: dict[str, SimDisk] = Field(default_factory=lambda: {"/": SimDisk()}, max_length=MAX_PATHS)


class SimIbSpec(_Strict):
    """The node's RDMA devices: compute rails (one per GPU) and, optionally, a storage NIC's
    Ethernet ports beside them."""

    rails: Int = Field(default=8, ge=0, le=64)
    #: rail device names: ``{prefix}{i}`` (mlx5_0…, or mlx5_ib0… on some images)
    prefix: str = Field(default="mlx5_", pattern=r"^[A-Za-z0-9_.-]{1,30}$")
    link_layer: Literal["InfiniBand", "Ethernet"] = "InfiniBand"
    rate_gbps: Num = Field(default=400, gt=0)
    fw_ver: str = "28.39.1002"
    #: Ethernet (RoCE) ports of a storage/frontend NIC, named after the rails
    storage_ports: Int = Field(default=0, ge=0, le=16)

    def rail_names(self, present: Optional[int] = None) -> list[str]:
        """Compute rails ``{prefix}{i}``; ``present`` keeps the first ones (``ib_missing``)."""
        n = self.rails if present is None else max(0, min(self.rails, present))
        return [f"{self.prefix}{i}" for i in range(n)]

    def storage_names(self) -> list[str]:
        """Storage NIC ports, named after every configured rail: ``{prefix}{rails + k}``."""
        return [f"{self.prefix}{self.rails + k}" for k in range(self.storage_ports)]

    def device_names(self) -> list[str]:
        return self.rail_names() + self.storage_names()


class SimHardware(_Strict):
    gpu: SimGpuSpec = Field(default_factory=SimGpuSpec)
    system: SimSystemSpec = Field(default_factory=SimSystemSpec)
    ib: "SimIbSpec" = Field(default_factory=lambda: SimIbSpec())


class SimFleet(_Strict):
    name: str = "sim"
    profile: Optional[str] = None
    nodes: Union[str, Annotated[list[str], Field(min_length=1, max_length=MAX_NODE_EXPRS)]] = "gpu-[001-008]"
    hardware: SimHardware = Field(default_factory=SimHardware)
    faults: list[Fault] = Field(default_factory=list, max_length=MAX_FAULTS)
    #: leaf switch -> the hostlist of the nodes under it (a node under one leaf at most)
    switches: dict[str, str] = Field(default_factory=dict, max_length=MAX_SWITCHES)

    @field_validator("switches")
    @classmethod
    def _switch_names(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for name, expr in v.items():
            if not re.match(SWITCH_NAME, name):
                raise Invalid(f"switch name {_shown(name)}: use 1-64 letters, digits, '_', '.', ':' or '-'")
            if not expr.strip():
                raise Invalid(f"switch {name}: an empty hostlist")
        return v

    def leaves(self) -> dict[str, list[str]]:
        """Leaf switch -> its nodes (``switches`` expanded)."""
        from clusterkit import hostlist

        return {name: list(dict.fromkeys(hostlist.expand(expr))) for name, expr in self.switches.items()}

    def node_names(self) -> list[str]:
        from clusterkit import hostlist

        exprs = [self.nodes] if isinstance(self.nodes, str) else list(self.nodes)
        names: list[str] = []
        for e in exprs:
            names.extend(hostlist.expand(e))
        return list(dict.fromkeys(names))

    def faults_for(self, node: str) -> list[Fault]:
        from clusterkit import hostlist

        out = []
        for f in self.faults:
            if f.node is None:  # a switch's fault
                continue
            if f.node == node or (_is_expression(f.node) and node in hostlist.expand(f.node)):
                out.append(f)
        return out

    def node(self, name: str) -> "SimNode":
        return SimNode(name=name, hardware=copy.deepcopy(self.hardware), faults=self.faults_for(name))


def _is_expression(text: str) -> bool:
    """A hostlist expression (brackets or several names), not one plain node name."""
    return any(c in text for c in "[, \t")


class SimNode:
    """One simulated node: its hardware with its faults applied."""

    def __init__(self, name: str, hardware: SimHardware, faults: list[Fault]) -> None:
        self.name = name
        self.hardware = hardware
        self.faults = faults

    def fault(self, kind: str, gpu: int | None = None) -> Fault | None:
        for f in self.faults:
            if f.kind == kind and (gpu is None or f.gpu is None or f.gpu == gpu):
                return f
        return None

    @property
    def driver_version(self) -> str:
        """The driver version everything on the node shows (NVML, the kernel module, the
        tools): the ``driver_version`` fault's, else the hardware's."""
        f = self.fault("driver_version")
        return str(f.value) if f is not None else self.hardware.gpu.driver_version

    @property
    def hang_seconds(self) -> float:
        f = self.fault("hang")
        if f is None:
            return 0.0
        return float(f.value) if f.value is not None else 3600.0

    def system_facts(self) -> dict[str, Any]:
        s = self.hardware.system
        disks = {p: d.model_dump() for p, d in s.disks.items()}
        facts: dict[str, Any] = {"cpus": s.cpus, "memory_gib": s.memory_gib, "load1": s.load1,
                                 "kernel": s.kernel, "disks": disks}
        for f in self.faults:
            if f.kind == "memory_gib":
                facts["memory_gib"] = float(f.value)
            elif f.kind == "load":
                facts["load1"] = float(f.value)
            elif f.kind == "disk_free_gib":
                path = f.path or "/"
                d = facts["disks"].setdefault(path, SimDisk().model_dump())
                d["free_gib"] = float(f.value)
        return facts


def parse_fleet(text: str, origin: str) -> SimFleet:
    """A fleet from YAML text, checked as a whole: every problem is one ConfigError line.

    Beyond the models: the fleet's hostlists expand (at most ``hostlist.MAX_NAMES`` names in
    all), every fault names nodes of the fleet, a fault's ``gpu`` exists on the fleet's
    hardware, a fault's ``device`` is one of the fleet's RDMA devices (``hardware.ib``),
    ``gpu_missing`` leaves no more GPUs than there are, ``switches`` name nodes of the fleet
    (each under one leaf at most), and a fault's ``switch`` is one of them.
    """
    from clusterkit import hostlist
    from clusterkit.config import load_yaml_model
    from clusterkit.errors import ConfigError, HostlistError

    label = f"sim fleet {origin}"
    fleet = load_yaml_model(text, SimFleet, label)

    def expand(expr: str, where: str, total: int) -> list[str]:
        try:
            names = hostlist.expand(expr)
        except HostlistError as e:
            raise ConfigError(f"{label}: {where}: {e}") from None
        if total + len(names) > hostlist.MAX_NAMES:
            raise ConfigError(f"{label}: {where}: more than {hostlist.MAX_NAMES:,} node names in all")
        return names

    single = isinstance(fleet.nodes, str)
    exprs = [fleet.nodes] if isinstance(fleet.nodes, str) else fleet.nodes
    members: set[str] = set()
    total = 0
    for i, expr in enumerate(exprs):
        names = expand(expr, "nodes" if single else f"nodes.{i}", total)
        total += len(names)
        members.update(names)
    shown = fleet.nodes if isinstance(fleet.nodes, str) else ", ".join(fleet.nodes)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    count = fleet.hardware.gpu.count
    total = 0
    leaf_of: dict[str, str] = {}
    for leaf, expr in fleet.switches.items():
        names = expand(expr, f"switches.{leaf}", total)
        total += len(names)
        outside = [n for n in names if n not in members]
        if outside:
            more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
            raise ConfigError(f"{label}: switches.{leaf}: {outside[0]}{more} is not a node of this fleet "
                              f"(nodes: {shown})")
        for n in names:
            other = leaf_of.setdefault(n, leaf)
            if other != leaf:
                raise ConfigError(f"{label}: switches.{leaf}: {n} is under leaf {other} too: a node sits "
                                  "under one leaf switch")
    switches = ", ".join(fleet.switches)
    switches = switches if len(switches) <= 60 else switches[:57] + "..."
    total = 0
    for i, f in enumerate(fleet.faults):
        if f.switch is not None and f.switch not in fleet.switches:
            has = f"the fleet's switches are {switches}" if fleet.switches else \
                "the fleet has no switches (switches: {leaf: hostlist of its nodes})"
            raise ConfigError(f"{label}: faults.{i}.switch: no leaf switch {f.switch}: {has}")
        if f.node is None:
            continue
        names = expand(f.node, f"faults.{i}.node", total)
        total += len(names)
        outside = [n for n in names if n not in members]
        if outside:
            more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
            raise ConfigError(f"{label}: faults.{i}.node: {outside[0]}{more} is not a node of this fleet "
                              f"(nodes: {shown})")
        if f.gpu is not None and f.gpu >= count:
            has = f"GPUs 0-{count - 1}" if count > 1 else ("only GPU 0" if count == 1 else "no GPUs")
            raise ConfigError(f"{label}: faults.{i}.gpu: no GPU {f.gpu}: the fleet's nodes have {has} "
                              "(hardware.gpu.count)")
        if f.device is not None and f.device not in fleet.hardware.ib.device_names():
            names = fleet.hardware.ib.device_names()
            has = f"{names[0]} to {names[-1]}" if len(names) > 1 else (names[0] if names else "none")
            raise ConfigError(f"{label}: faults.{i}.device: no RDMA device {f.device}: the fleet's nodes have "
                              f"{has} (hardware.ib: rails, prefix, storage_ports)")
        if f.kind == "gpu_missing" and f.value > count:
            raise ConfigError(f"{label}: faults.{i}.value: gpu_missing leaves {f.value} GPUs visible, but the "
                              f"fleet's nodes have {count} (hardware.gpu.count)")
    return fleet


_CACHE: dict[str, SimFleet] = {}
_KEYS: dict[str, str] = {}


def load_fleet(spec: str) -> SimFleet:
    """``builtin`` or the path of a fleet YAML file.

    Every node-check of a simulated node reads its fleet: a fleet file read before (same text,
    same clusterkit code) is taken from its checked form kept in the simulator's directory
    (:func:`_kept_fleet`), without the YAML parser."""
    if spec in _CACHE:
        return _CACHE[spec]
    if spec in ("builtin", "", "1"):
        from clusterkit.config import package_text

        text = package_text(__name__, "builtin.yaml") or ""  # (always there: package data)
        origin = "builtin"
    else:
        from clusterkit.config import read_text

        text = read_text(spec, "sim fleet")
        origin = spec
    import hashlib

    key = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
    fleet = _kept_fleet(key)
    if fleet is None:
        fleet = parse_fleet(text, origin)
        _keep_fleet(key, fleet)
    _CACHE[spec] = fleet
    _KEYS[spec] = key
    return fleet


def _kept_path(key: str) -> str:
    """Where the checked form of a fleet (text digest ``key``) is kept: beside the generated
    node trees, named after the text and this code (a changed rule re-checks every fleet)."""
    from clusterkit.sim.context import sim_root

    st = os.stat(__file__)
    return os.path.join(sim_root(), "fleets", f"{key}-{st.st_mtime_ns:x}-{st.st_size:x}.json")


def _kept_fleet(key: str) -> SimFleet | None:
    """The fleet kept by :func:`_keep_fleet`, or None (none kept, or it no longer reads)."""
    import json

    try:
        with open(_kept_path(key), encoding="utf-8") as fh:
            return SimFleet.model_validate(json.load(fh))
    except Exception:  # noqa: BLE001 - missing, half-written, or from other code: check the text again
        return None


def _keep_fleet(key: str, fleet: SimFleet) -> None:
    """Keep a fleet that passed :func:`parse_fleet` as JSON (what was set in the file only, so
    defaults stay the code's); best effort."""
    import json

    from clusterkit.fsutil import write_atomic

    try:
        path = _kept_path(key)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        write_atomic(path, json.dumps(fleet.model_dump(mode="json", exclude_unset=True)), prefix=".fleet-")
    except (OSError, ValueError, TypeError):
        pass


def fleet_key(spec: str) -> str:
    """A digest of the fleet ``spec`` names (``builtin`` or a fleet file): generated files are
    keyed by it."""
    load_fleet(spec)
    return _KEYS.get(spec, "none")


def current_fleet_key() -> str:
    """A digest of the current fleet file's content (generated node files are keyed by it)."""
    spec = os.environ.get(ENV_SIM) or ""
    load_fleet(spec)
    return _KEYS.get(spec, "none")


def current_node() -> SimNode | None:
    """The simulated node this process runs as, or None on real hardware."""
    spec = os.environ.get(ENV_SIM)
    if not spec:
        return None
    # under srun (and as slurmd's HealthCheckProgram) a task learns its node from Slurm: every
    # slurmd of a test cluster shares one hostname
    name = os.environ.get(ENV_NODE) or os.environ.get("SLURMD_NODENAME") or os.uname().nodename
    return load_fleet(spec).node(name)
