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
    if args in (["topo", "-m"], ["topo", "--matrix"]):
        from clusterkit.sim.nvml import topo_matrix

        if node.fault("nvml_unavailable"):
            print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                  "Make sure that the latest NVIDIA driver is installed and running.")
            return 9
        sys.stdout.write(topo_matrix(node))
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


_RULE = "-" * 87
_IB_WRITE_BW_HELP = """Usage:
  ib_write_bw            start a server and wait for connection
  ib_write_bw <host>     connect to server at <host>

Options:
  -d, --ib-dev=<dev> Use IB device <dev> (default first device found)
  -F, --CPU-freq  Do not show a warning even if cpufreq_ondemand module is loaded, and cpu-freq is not on max.
  -i, --ib-port=<port> Use port <port> of IB device (default 1)
  -p, --port=<port>  Listen on/connect to port <port> (default 18515)
  -s, --size=<size>  Size of message to exchange (default 65536)
      --report_gbits Report Max/Average BW of test in Gbit/sec (instead of MiB/sec)
      --use_cuda=<cuda device id> Use CUDA specific device for GPUDirect RDMA testing
      --use_cuda_dmabuf Use CUDA DMA-BUF for GPUDirect RDMA testing
"""


def ib_write_bw(args: list[str], data_path: str | None = None) -> int:
    """perftest's ``ib_write_bw``: a server (no host argument) prints its banner and settings; a
    client prints the settings and one result row for ``-s`` bytes, at the bandwidth of the
    fleet (``ib_bw_slow``, else 97.7 % of the port rate, AzNHC's H100 sample). A port that is
    not active, an unknown device, or GPU memory without a GPUDirect path fail as perftest
    does. The node's devices come from ``data_path`` (written with the node's sysfs tree)."""
    import json

    opts: dict[str, str] = {}
    host = None
    flags = {"-F", "--report_gbits", "--use_cuda_dmabuf", "-a", "-b", "-R", "--CPU-freq"}
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-h", "--help"):
            sys.stdout.write(_IB_WRITE_BW_HELP)
            return 0
        if a in flags:
            opts[a] = ""
        elif a.startswith("--") and "=" in a:
            k, _, v = a.partition("=")
            opts[k] = v
        elif a in ("-d", "-i", "-p", "-s", "-n", "-x", "-D", "--ib-dev", "--ib-port", "--port", "--size"):
            if i + 1 >= len(args):
                print(f"ib_write_bw: option requires an argument -- '{a.lstrip('-')}'", file=sys.stderr)
                return 1
            opts[{"--ib-dev": "-d", "--ib-port": "-i", "--port": "-p", "--size": "-s"}.get(a, a)] = args[i + 1]
            i += 1
        elif a.startswith("-"):
            print(f"ib_write_bw: unrecognized option '{a}'", file=sys.stderr)
            return 1
        else:
            host = a
        i += 1
    if data_path is not None:
        with open(data_path, encoding="utf-8") as fh:
            view = json.load(fh)
    else:
        from clusterkit.sim.context import ib_view

        view = ib_view(_node())
    devices: dict[str, Any] = view["devices"]
    name = opts.get("-d") or next(iter(devices), "")
    dev = devices.get(name)
    if dev is None:
        print(f" IB device {name} not found", file=sys.stderr)
        print(" Unable to find the Infiniband/RoCE device", file=sys.stderr)
        return 1
    ib_port = int(opts.get("-i") or 1)
    if ib_port != 1:
        print(f" Port number {ib_port} state is Nop", file=sys.stderr)
        return 1
    if not str(dev["state"]).endswith("ACTIVE"):
        print(f" Port number {ib_port} state is Down", file=sys.stderr)
        return 1
    size = int(opts.get("-s") or 65536)
    cuda = opts.get("--use_cuda")
    dmabuf = "--use_cuda_dmabuf" in opts
    lines: list[str] = []
    if cuda is not None:
        lines += ["initializing CUDA", "Listing all CUDA devices in system:",
                  f"CUDA device {cuda}: PCIe address is {0x18 + 0x10 * int(cuda or 0):02X}:00", "",
                  f"Picking device No. {cuda}", f"[pid = 4242, dev = {cuda}] device name = [{view['gpu_name']}]",
                  "creating CUDA Ctx", "making it the current CUDA Ctx", "CUDA device integrated: 0"]
        if not (view["dmabuf"] if dmabuf else view["peermem"]):
            print("\n".join(lines))
            print("Couldn't allocate MR", file=sys.stderr)
            return 1
        if dmabuf:
            lines.append(f"using DMA-BUF for GPU buffer address at 0x7f3a00000000 aligned at 0x7f3a00000000 "
                         f"with aligned size {2 * size}")
        lines.append(f"allocated GPU buffer of a {2 * size} address at 0x55d0a20e9300 for type CUDA_MEM_DEVICE")
    ib = dev["link_layer"] == "InfiniBand"
    if host is None:
        lines += ["", "************************************", "* Waiting for client to connect... *",
                  "************************************"]
    lines += [_RULE, "                    RDMA_Write BW Test",
              f" Dual-port       : OFF          Device         : {name}",
              " Number of qps   : 1            Transport type : IB",
              " Connection type : RC           Using SRQ      : OFF",
              " PCIe relax order: ON", " ibv_wr* API     : ON", " TX depth        : 128",
              " CQ Moderation   : 1", " Mtu             : 4096[B]",
              f" Link type       : {'IB' if ib else 'Ethernet'}"]
    if not ib:
        lines.append(" GID index       : 3")
    lines += [" Max inline data : 0[B]", " rdma_cm QPs     : OFF", " Data ex. method : Ethernet", _RULE,
              " local address: LID 0x4b QPN 0x0126 PSN 0x4a39ad RKey 0x1fff00 VAddr 0x007f4c3b7ff000",
              " remote address: LID 0x4b QPN 0x0127 PSN 0x1c9d8e RKey 0x200000 VAddr 0x007f0e0e3ff000", _RULE]
    if host is not None:
        bw = float(dev["bw_gbps"])
        gbits = "--report_gbits" in opts
        unit = "Gb/sec" if gbits else "MB/sec"
        shown = bw if gbits else bw * 1e9 / 8 / 1_048_576
        rate = bw * 1e9 / 8 / size / 1e6
        lines += [f" #bytes     #iterations    BW peak[{unit}]    BW average[{unit}]   MsgRate[Mpps]",
                  f" {size:<10d} {5000:<14d} {shown * 1.0001:.2f}             {shown:.2f}               {rate:.6f}",
                  _RULE]
    if cuda is not None:
        lines += ["deallocating GPU buffer 00007f3a00000000", "destroying current CUDA Ctx"]
    print("\n".join(lines))
    return 0


def main(tool: str, args: list[str]) -> int:
    if tool == "nvidia-smi":
        return nvidia_smi(args)
    if tool == "dmesg":
        return dmesg(args)
    if tool == "ib_write_bw":
        return ib_write_bw(args)
    print(f"clusterkit sim: no stand-in for {tool}", file=sys.stderr)
    return 127
