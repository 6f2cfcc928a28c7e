"""Stand-in executables of the simulator: they print what the real tools print.

A simulated node's tool path holds tiny scripts named like the tools (``nvidia-smi``,
``dmesg``) that call :func:`main`; the node comes from ``CLUSTERKIT_SIM`` and
``CLUSTERKIT_NODE``, as for node-check itself. A usage the stand-in does not model exits 2
with a message, as the real tool does for a bad option.
"""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any


def _node() -> Any:
    from clusterkit import sim

    node = sim.current_node()
    if node is None:
        print("clusterkit sim: CLUSTERKIT_SIM is not set", file=sys.stderr)
        raise SystemExit(2)
    return node


def nvidia_smi(args: list[str]) -> int:
    node = _node()
    spec = node.hardware.gpu
    if args[:1] == ["-L"]:
        from clusterkit.sim.nvml import SimNVML

        nvml = SimNVML(node)
        nvml.nvmlInit()
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            print(f"GPU {i}: {spec.name} (UUID: {nvml.nvmlDeviceGetUUID(h)})")
        return 0
    print(f"nvidia-smi (clusterkit sim): usage not simulated: {' '.join(args)}", file=sys.stderr)
    return 2


def dmesg(args: list[str]) -> int:
    node = _node()
    boot = _dt.datetime(2026, 11, 30, 4, 0, 0)
    kernel = node.hardware.system.kernel
    spec = node.hardware.gpu
    lines = [
        (0.0, f"Linux version {kernel} (buildd@lcy02-amd64) (gcc 11.4.0) #135-Ubuntu SMP"),
        (2.5, "mlx5_core 0000:18:00.0: firmware version: 28.39.1002"),
        (9.8, f"nvidia-nvlink: Nvlink Core is being initialized, major device number 510"),
        (10.1, f"NVRM: loading NVIDIA UNIX x86_64 Kernel Module  {spec.driver_version}"),
    ]
    human = "-T" in args or "--ctime" in args
    for offset, text in lines:
        if human:
            stamp = (boot + _dt.timedelta(seconds=offset)).strftime("%a %b %d %H:%M:%S %Y")
            print(f"[{stamp}] {text}")
        else:
            print(f"[{offset:12.6f}] {text}")
    return 0


def main(tool: str, args: list[str]) -> int:
    if tool == "nvidia-smi":
        return nvidia_smi(args)
    if tool == "dmesg":
        return dmesg(args)
    print(f"clusterkit sim: no stand-in for {tool}", file=sys.stderr)
    return 127
