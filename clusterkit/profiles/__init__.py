"""Hardware SKU profiles: expected hardware and floors, as data files.

A profile is a built-in name (``h100-sxm``, ``h200-sxm``: YAML files beside this module) or the
path of a user's own YAML file with the same keys. Unknown keys and wrong types are refused with
one line naming the file and the key (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clusterkit.config import MAX_CPUS, MAX_GPUS, MAX_PATHS, Bool, Int, Num, invalid
from clusterkit.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuProfile(_Strict):
    count: Int = Field(ge=0, le=MAX_GPUS)
    model_patterns: list[str] = Field(default_factory=list, max_length=256)
    memory_total_mib_min: Optional[Int] = Field(default=None, ge=0)
    pcie_gen: Optional[Int] = Field(default=None, ge=1, le=7)
    pcie_width: Optional[Int] = Field(default=None, ge=1, le=32)
    power_limit_w: Optional[Num] = Field(default=None, gt=0)
    temp_warn_c: Optional[Num] = None
    temp_fail_c: Optional[Num] = None
    ecc_required: Bool = True
    persistence_required: Bool = True
    remapped_uncorrectable_warn: Int = Field(default=1, ge=1)
    driver_min: Optional[str] = None

    @model_validator(mode="after")
    def _warn_below_fail(self) -> "GpuProfile":
        if self.temp_warn_c is not None and self.temp_fail_c is not None and self.temp_warn_c > self.temp_fail_c:
            raise invalid(f"temp_warn_c ({self.temp_warn_c:g}) is above temp_fail_c ({self.temp_fail_c:g}): "
                          "the warning must come first")
        return self


class PathRule(_Strict):
    path: str = Field(min_length=1)
    free_gib_min: Optional[Num] = Field(default=None, ge=0)
    free_pct_min: Optional[Num] = Field(default=None, ge=0, le=100)


class SystemProfile(_Strict):
    memory_gib_min: Optional[Num] = Field(default=None, ge=0)
    cpus_min: Optional[Int] = Field(default=None, ge=0, le=MAX_CPUS)
    #: The status of ``system.memory`` / ``system.cpus`` below their floors. Host memory and CPU
    #: counts differ between OEM builds of one SKU (HGX H100 nodes ship with 1 TiB or 2 TiB), so
    #: a node below the floor is ``warn`` by default; a site profile sets ``fail`` to make its
    #: exact build a hard floor.
    floor_status: Literal["warn", "fail"] = "warn"
    load_per_cpu_warn: Optional[Num] = Field(default=None, gt=0)
    paths: list[PathRule] = Field(default_factory=list, max_length=MAX_PATHS)


#: NVLink DL error counters NVML keeps per link (nvmlDeviceGetNvLinkErrorCounter).
NVLINK_COUNTERS = ("crc_flit", "crc_data", "replay", "recovery")
#: InfiniBand port counters read from sysfs (ports/N/counters/<name>).
IB_COUNTERS = ("symbol_error", "link_downed", "link_error_recovery", "port_rcv_errors",
               "port_rcv_remote_physical_errors", "port_xmit_discards",
               "local_link_integrity_errors", "excessive_buffer_overrun_errors")


class NvlinkProfile(_Strict):
    """NVLink / NVSwitch expectations (the ``nvlink`` domain)."""

    links_per_gpu: Int = Field(ge=0, le=64)
    #: per-link speed floor in GB/s (NVML's per-link speed / 1000)
    speed_gbps_min: Optional[Num] = Field(default=None, gt=0)
    #: lifetime counter value above which a link is flagged (warn): counters since driver load
    errors_max: dict[str, Int] = Field(default_factory=dict)
    #: growth since the previous run on this node above which a link fails
    errors_delta_max: dict[str, Int] = Field(default_factory=dict)
    #: the GPU must be registered with the NVSwitch fabric (Fabric Manager)
    fabric_required: Bool = True

    @model_validator(mode="after")
    def _known_counters(self) -> "NvlinkProfile":
        for field in ("errors_max", "errors_delta_max"):
            unknown = sorted(set(getattr(self, field)) - set(NVLINK_COUNTERS))
            if unknown:
                raise invalid(f"{field}: unknown counter {', '.join(unknown)}; one of {', '.join(NVLINK_COUNTERS)}")
        return self


class TopoProfile(_Strict):
    """GPU/NIC topology expectations from ``nvidia-smi topo -m`` (the ``topo`` domain)."""

    #: every GPU pair should read this connection, e.g. NV18
    p2p: Optional[str] = Field(default=None, pattern=r"^[A-Z][A-Z0-9]{1,7}$")
    #: connections a rail NIC may have to its nearest GPU
    nic_affinity: list[str] = Field(default_factory=lambda: ["PIX", "PXB"], max_length=16)


class IbProfile(_Strict):
    """InfiniBand / RDMA rail expectations (the ``ib`` domain)."""

    rails: Int = Field(ge=0, le=64)
    #: link layer of a compute rail; ports of another link layer are not rails
    link_layer: Literal["InfiniBand", "Ethernet"] = "InfiniBand"
    rate_gbps: Optional[Num] = Field(default=None, gt=0)
    #: counter value (since the HCA driver loaded) above which a port fails
    counters_max: dict[str, Int] = Field(default_factory=dict)
    #: growth since the previous run on this node above which a port fails (a flap between runs)
    counters_delta_max: dict[str, Int] = Field(default_factory=dict)
    #: GPUDirect RDMA must be possible (nvidia_peermem loaded or the dma-buf path available)
    gdr_required: Bool = True
    #: ib_write_bw loopback floor per rail, Gb/s (opt-in check)
    write_bw_gbps_min: Optional[Num] = Field(default=None, gt=0)
    #: a rail below this share of the node's best rail is flagged too
    write_bw_rel_min: Num = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _known_counters(self) -> "IbProfile":
        for field in ("counters_max", "counters_delta_max"):
            unknown = sorted(set(getattr(self, field)) - set(IB_COUNTERS))
            if unknown:
                raise invalid(f"{field}: unknown counter {', '.join(unknown)}; one of {', '.join(IB_COUNTERS)}")
        return self


class Profile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    gpu: Optional[GpuProfile] = None
    system: SystemProfile = Field(default_factory=SystemProfile)
    nvlink: Optional[NvlinkProfile] = None
    topo: Optional[TopoProfile] = None
    ib: Optional[IbProfile] = None


def builtin_names() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml")
    )


def _read_builtin(name: str) -> str | None:
    f = resources.files(__name__) / f"{name}.yaml"
    return f.read_text(encoding="utf-8") if f.is_file() else None


def parse_profile(text: str, origin: str) -> Profile:
    """A Profile from YAML or JSON text; ``origin`` names it in error messages."""
    from clusterkit.config import check_size, load_yaml_model

    label = f"profile {origin}"
    check_size(text, label)
    if text.lstrip().startswith("{"):  # the controller sends JSON: skip the YAML parser
        import json

        def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
            out = dict(pairs)
            if len(out) != len(pairs):
                raise ValueError("duplicate key")
            return out

        try:
            return Profile.model_validate(json.loads(text, object_pairs_hook=no_duplicates))
        except (ValueError, ValidationError, RecursionError):
            pass  # fall through for the YAML parser's error messages
    return load_yaml_model(text, Profile, label)


def load_profile(spec: str) -> Profile:
    """Load a built-in profile by name, or a user's profile file by path."""
    text = _read_builtin(spec) if os.sep not in spec and not spec.endswith((".yaml", ".yml", ".json")) else None
    if text is not None:
        return parse_profile(text, spec)
    if not os.path.exists(spec):
        raise ConfigError(
            f"profile {spec!r}: no such built-in profile ({', '.join(builtin_names())}) or file"
        )
    from clusterkit.config import read_text

    text = read_text(spec, "profile")
    return parse_profile(text, spec)
