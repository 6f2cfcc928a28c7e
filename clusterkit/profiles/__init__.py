"""Hardware SKU profiles: expected hardware and floors, as data files.

A profile is a built-in name (``h100-sxm``, ``h200-sxm``: YAML files beside this module) or the
path of a user's own YAML file with the same keys. Unknown keys and wrong types are refused with
one line naming the file and the key (:class:`ConfigError`).
"""

from __future__ import annotations

import os
from typing import Literal, Optional, Union

from clusterkit.record import ConfigDict, Field, Invalid, Record, ValidationError, model_validator

from clusterkit.config import MAX_CPUS, MAX_GPUS, MAX_PATHS, Bool, Int, Num
from clusterkit.errors import ConfigError


class _Strict(Record):
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
            raise Invalid(f"temp_warn_c ({self.temp_warn_c:g}) is above temp_fail_c ({self.temp_fail_c:g}): "
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
                raise Invalid(f"{field}: unknown counter {', '.join(unknown)}; one of {', '.join(NVLINK_COUNTERS)}")
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
                raise Invalid(f"{field}: unknown counter {', '.join(unknown)}; one of {', '.join(IB_COUNTERS)}")
        return self


class XidProfile(_Strict):
    """Kernel-log Xid/SXid events (the ``xid`` domain)."""

    #: events count within this many hours: back from now (live log) or from a saved log's
    #: last timestamp
    window_h: Num = Field(default=2.0, gt=0, le=24 * 366)


class MountRule(_Strict):
    """One expected mount (the ``storage`` domain): its path, type(s), options and floors."""

    path: str = Field(min_length=1, max_length=4096, pattern=r"^/")
    #: one type or several (``[nfs, nfs4]``; ``nfs`` also accepts ``nfs4``); absent: any type
    fstype: Optional[Union[str, list[str]]] = None
    #: options the mount must show (``rw``, ``hard``, ``vers=4.1``): per-mount or the file system's
    options: list[str] = Field(default_factory=list, max_length=64)
    free_gib_min: Optional[Num] = Field(default=None, ge=0)
    free_pct_min: Optional[Num] = Field(default=None, ge=0, le=100)
    inodes_free_pct_min: Optional[Num] = Field(default=None, ge=0, le=100)
    #: run the opt-in metadata test and fio here (--storage-bench)
    bench: Bool = True
    #: a writable directory on this mount for them (default: the mount point itself)
    bench_dir: Optional[str] = Field(default=None, min_length=1, pattern=r"^/")


class StorageProfile(_Strict):
    """Mounts and storage floors (the ``storage`` domain). Figures are per node."""

    mounts: list[MountRule] = Field(default_factory=list, max_length=MAX_PATHS)
    #: ``stat -f`` of one mount must answer within this (a hung NFS server blocks it)
    stat_timeout_s: Num = Field(default=5.0, gt=0, le=60)
    #: metadata test (--storage-bench): files created, stat'ed, opened and unlinked, time box
    metadata_files: Int = Field(default=200, ge=1, le=100_000)
    metadata_max_s: Num = Field(default=10.0, gt=0, le=600)
    metadata_p50_ms_max: Optional[Num] = Field(default=None, gt=0)
    metadata_p99_ms_max: Optional[Num] = Field(default=None, gt=0)
    #: fio (--storage-bench): per-job runtime and file size, and floors
    fio_runtime_s: Num = Field(default=5.0, gt=0, le=600)
    fio_size_mib: Int = Field(default=1024, ge=1, le=1_048_576)
    fio_read_mibps_min: Optional[Num] = Field(default=None, gt=0)
    fio_write_mibps_min: Optional[Num] = Field(default=None, gt=0)
    fio_randread_iops_min: Optional[Num] = Field(default=None, gt=0)
    #: model-weights read (--weights-dir): the directory, time box, byte cap, floor in GB/s
    #: (10^9 bytes per second, not Gb/s), and the model size for the projected load time
    weights_dir: Optional[str] = Field(default=None, min_length=1, pattern=r"^/")
    weights_read_s: Num = Field(default=10.0, gt=0, le=600)
    weights_max_gib: Optional[Num] = Field(default=None, gt=0)
    weights_gbps_min: Optional[Num] = Field(default=None, gt=0)
    model_size_gib: Optional[Num] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _paths_once(self) -> "StorageProfile":
        seen: set[str] = set()
        for r in self.mounts:
            if r.path in seen:
                raise Invalid(f"mounts: {r.path} is listed twice")
            seen.add(r.path)
        return self


class StressProfile(_Strict):
    """GPU stress expectations (the opt-in ``stress`` domain, ``node-check --stress``)."""

    #: per-GPU floors: bf16 GEMM TFLOP/s and device-to-device copy GB/s (read + written, 1e9 B)
    gemm_tflops_min: Optional[Num] = Field(default=None, gt=0)
    hbm_gbps_min: Optional[Num] = Field(default=None, gt=0)
    #: what a healthy GPU measures with the stress worker's method (messages; the simulator's
    #: stand-in worker reports these, scaled by gemm_slow / hbm_slow)
    gemm_tflops_nominal: Optional[Num] = Field(default=None, gt=0)
    hbm_gbps_nominal: Optional[Num] = Field(default=None, gt=0)
    #: a GPU below this share of the median of the node's other GPUs fails, even above the floor
    sibling_rel_min: Num = Field(default=0.9, gt=0, le=1)
    #: dcgmi diag -r level: 2 (medium, about two minutes) to 4; level 1 runs no hardware plugin
    dcgm_level: Int = Field(default=2, ge=2, le=4)
    #: seconds of timed load per phase (the worker's GEMM + copy, gpu_burn's burn)
    seconds: Num = Field(default=10.0, gt=0, le=3600)


class NcclProfile(_Strict):
    """NCCL all-reduce expectations (``clusterkit nccl``): busbw floors in GB/s (1e9 B/s, as
    nccl-tests prints), at ``message_bytes``, and the fleet-relative rule of localization."""

    #: the message size judged: the busbw of the table row at this size (or the largest row)
    message_bytes: Int = Field(default=8 * 1024**3, ge=1, le=2**40)
    #: one node, NVLS on (NCCL's default on NVSwitch) / ring only (NCCL_ALGO=Ring, NVLS off)
    single_nvls_gbps_min: Optional[Num] = Field(default=None, gt=0)
    single_ring_gbps_min: Optional[Num] = Field(default=None, gt=0)
    #: several nodes, ring forced: the network's bandwidth
    multi_gbps_min: Optional[Num] = Field(default=None, gt=0)
    #: a test slower than the fleet's reference by more than this robust z-score is slow ...
    z_slow: Num = Field(default=4.0, gt=0, le=100)
    #: ... where the spread (1.4826 x MAD) counts as at least this share of the reference
    spread_floor_rel: Num = Field(default=0.02, gt=0, le=1)
    #: seconds for one test (a test that hangs ends here)
    test_timeout_s: Num = Field(default=300.0, gt=0, le=86400)


class Profile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    gpu: Optional[GpuProfile] = None
    system: SystemProfile = Field(default_factory=SystemProfile)
    nvlink: Optional[NvlinkProfile] = None
    topo: Optional[TopoProfile] = None
    ib: Optional[IbProfile] = None
    storage: Optional[StorageProfile] = None  # absent: no storage checks
    xid: Optional[XidProfile] = None  # absent: the xid domain's defaults (a 2 h window)
    stress: Optional[StressProfile] = None  # absent: the stress domain's defaults, no floors
    nccl: Optional[NcclProfile] = None  # absent: no busbw floors, fleet-relative rules only


def builtin_names() -> list[str]:
    from importlib import resources

    return sorted(
        p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml")
    )


def _read_builtin(name: str) -> str | None:
    from clusterkit.config import package_text

    return package_text(__name__, f"{name}.yaml")


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


def parse_controller_profile(text: str) -> tuple[Profile, list[str]]:
    """The profile a controller sent on node-check's stdin, and the top-level sections this
    version does not know (ignored: a newer controller's checks this node does not have).
    Everything else is as strict as any profile."""
    import json

    from clusterkit.config import check_size

    check_size(text, "profile <stdin>")
    try:
        data = json.loads(text)
    except ValueError:
        return parse_profile(text, "<stdin>"), []
    if not isinstance(data, dict):
        return parse_profile(text, "<stdin>"), []
    unknown = sorted(k for k in data if k not in Profile.model_fields)
    for k in unknown:
        data.pop(k)
    return parse_profile(json.dumps(data), "<stdin>"), unknown


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
