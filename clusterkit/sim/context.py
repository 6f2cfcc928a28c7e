"""The simulator's probe context: the same surfaces a real node offers, made from the fleet file.

:func:`sim_context` gives a :class:`~clusterkit.validate.context.ProbeContext` whose

- ``nvml()`` is :class:`~clusterkit.sim.nvml.SimNVML` (nvidia-ml-py's calls and errors);
- ``psutil()`` is :class:`SimPsutil` (psutil's calls and return shapes: ``cpu_count``,
  ``virtual_memory``, ``getloadavg``, ``disk_usage``);
- ``sysfs_root`` is a generated tree in the real formats (``class/infiniband/mlx5_*/ports/1/
  state`` = ``4: ACTIVE`` …);
- tool path holds stand-in executables (``nvidia-smi``, ``dmesg``) that print the real formats,
  run through the real tool runner;
- ``state_dir`` is a per-node directory, so counters compared between runs work as on a node.

Generated files live under ``$CLUSTERKIT_SIM_ROOT`` (default: ``<tmp>/clusterkit-sim-<uid>``),
one directory per fleet content and node, written once and reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import tempfile
from collections import namedtuple
from typing import Any

from clusterkit.sim import SimNode

ENV_SIM_ROOT = "CLUSTERKIT_SIM_ROOT"
TOOLS = ("nvidia-smi", "dmesg")
_LAYOUT = "2"  # bump when the generated tree changes shape

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
        _tools(os.path.join(tmp, "tools"))
        os.makedirs(os.path.join(tmp, "state"), mode=0o755)
        _write(os.path.join(tmp, ".complete"), "")
        try:
            os.rename(tmp, path)
        except OSError:
            # another process generated it first (or a stale one is there): keep theirs
            if not os.path.isfile(os.path.join(path, ".complete")):
                shutil.rmtree(path, ignore_errors=True)
                os.rename(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _sysfs(node: SimNode, root: str) -> None:
    """class/infiniband for the node's compute rails, in the kernel's formats."""
    for i in range(8):
        dev = os.path.join(root, "class", "infiniband", f"mlx5_{i}")
        _write(os.path.join(dev, "fw_ver"), "28.39.1002\n")
        _write(os.path.join(dev, "board_id"), "MT_0000000838\n")
        _write(os.path.join(dev, "hca_type"), "MT4129\n")
        _write(os.path.join(dev, "device", "numa_node"), f"{0 if i < 4 else 1}\n")
        port = os.path.join(dev, "ports", "1")
        _write(os.path.join(port, "state"), "4: ACTIVE\n")
        _write(os.path.join(port, "phys_state"), "5: LinkUp\n")
        _write(os.path.join(port, "rate"), "400 Gb/sec (4X NDR)\n")
        _write(os.path.join(port, "link_layer"), "InfiniBand\n")
        for counter in ("symbol_error", "link_downed", "link_error_recovery", "port_rcv_errors",
                        "port_rcv_remote_physical_errors", "port_xmit_discards",
                        "local_link_integrity_errors", "excessive_buffer_overrun_errors"):
            _write(os.path.join(port, "counters", counter), "0\n")


def _tools(root: str) -> None:
    """Stand-in executables: each runs ``clusterkit.sim.tools`` with this interpreter."""
    os.makedirs(root, mode=0o755, exist_ok=True)
    for tool in TOOLS:
        script = (f"#!{sys.executable}\n"
                  "import sys\n"
                  "from clusterkit.sim.tools import main\n"
                  f"sys.exit(main({tool!r}, sys.argv[1:]))\n")
        p = os.path.join(root, tool)
        _write(p, script, 0o755)
        os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def sim_context(node: SimNode, fleet_key: str, *, deadline: float, kernel_log_file: str | None = None,
                state_dir: str | None = None) -> Any:
    """The probe context of a simulated node."""
    from clusterkit.sim.nvml import SimNVML
    from clusterkit.validate.context import ProbeContext

    base = node_dir(node, fleet_key)
    kernel = node.hardware.system.kernel
    return ProbeContext(
        node=node.name,
        deadline=deadline,
        sysfs_root=os.path.join(base, "sys"),
        state_dir=state_dir or os.path.join(base, "state"),
        kernel_log_file=kernel_log_file,
        tool_path=[os.path.join(base, "tools")],
        tool_env={"CLUSTERKIT_NODE": node.name},
        nvml_factory=lambda: SimNVML(node),
        psutil_factory=lambda: SimPsutil(node),
        kernel_release_fn=lambda: kernel,
        simulated=True,
    )
