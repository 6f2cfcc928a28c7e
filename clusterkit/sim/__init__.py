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
import os
from importlib import resources
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


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
    "hang",  # node-check sleeps `value` seconds (default 3600) before probing
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fault(_Strict):
    node: str  # a node name or a hostlist expression
    kind: FaultKind
    gpu: Optional[int] = Field(default=None, ge=0)
    value: Any = None
    path: Optional[str] = None


class SimGpuSpec(_Strict):
    count: int = 8
    name: str = "NVIDIA H100 80GB HBM3"
    memory_total_mib: int = 81559
    driver_version: str = "565.57.01"
    cuda_driver_version: int = 12070
    vbios_version: str = "96.00.74.00.01"
    power_limit_w: float = 700.0
    power_draw_w: float = 71.0
    temperature_c: int = 31
    temp_slowdown_c: int = 87
    temp_shutdown_c: int = 93
    pcie_gen: int = 5
    pcie_width: int = 16


class SimDisk(_Strict):
    total_gib: float = 3500.0
    free_gib: float = 3100.0


class SimSystemSpec(_Strict):
    cpus: int = 224
    memory_gib: float = 2015.0
    load1: float = 0.6
    kernel: str = "5.15.0-125-generic"
    disks: dict[str, SimDisk] = Field(default_factory=lambda: {"/": SimDisk()})


class SimHardware(_Strict):
    gpu: SimGpuSpec = Field(default_factory=SimGpuSpec)
    system: SimSystemSpec = Field(default_factory=SimSystemSpec)


class SimFleet(_Strict):
    name: str = "sim"
    profile: Optional[str] = None
    nodes: str | list[str] = "gpu-[001-008]"
    hardware: SimHardware = Field(default_factory=SimHardware)
    faults: list[Fault] = Field(default_factory=list)

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
            if f.node == node or ("[" in f.node and node in hostlist.expand(f.node)):
                out.append(f)
        return out

    def node(self, name: str) -> "SimNode":
        return SimNode(name=name, hardware=copy.deepcopy(self.hardware), faults=self.faults_for(name))


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
    def hang_seconds(self) -> float:
        f = self.fault("hang")
        if f is None:
            return 0.0
        return float(f.value) if f.value is not None else 3600.0

    def system_facts(self) -> dict[str, Any]:
        s = self.hardware.system
        disks = {p: d.model_dump() for p, d in s.disks.items()}
        facts = {"cpus": s.cpus, "memory_gib": s.memory_gib, "load1": s.load1, "kernel": s.kernel,
                 "disks": disks}
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
    from clusterkit.config import load_yaml_model

    fleet = load_yaml_model(text, SimFleet, f"sim fleet {origin}")
    fleet.node_names()  # a bad hostlist is a config error now, not later
    for f in fleet.faults:
        if "[" in f.node:
            from clusterkit import hostlist

            hostlist.expand(f.node)
    return fleet


_CACHE: dict[str, SimFleet] = {}


def load_fleet(spec: str) -> SimFleet:
    """``builtin`` or the path of a fleet YAML file."""
    if spec in _CACHE:
        return _CACHE[spec]
    if spec in ("builtin", "", "1"):
        text = (resources.files(__name__) / "builtin.yaml").read_text(encoding="utf-8")
        origin = "builtin"
    else:
        from clusterkit.config import read_text

        text = read_text(spec, "sim fleet")
        origin = spec
    fleet = parse_fleet(text, origin)
    _CACHE[spec] = fleet
    return fleet


def current_node() -> SimNode | None:
    """The simulated node this process runs as, or None on real hardware."""
    spec = os.environ.get(ENV_SIM)
    if not spec:
        return None
    name = os.environ.get(ENV_NODE) or os.uname().nodename
    return load_fleet(spec).node(name)
