"""Stand-in executables of the simulator: they print what the real tools print.

A simulated node's tool path holds tiny scripts named like the tools (``nvidia-smi``,
``dmesg``) that call :func:`main`; the node comes from ``CLUSTERKIT_SIM`` and
``CLUSTERKIT_NODE``, as for node-check itself. A usage the stand-in does not model exits 2
with a message, as the real tool does for a bad option.
"""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any, Callable, Optional


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


#: GPU i's PCI bus, as SimNVML's nvmlDeviceGetPciInfo reports it (bus[i % 8] + i // 8, device 0)
_GPU_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
#: the NVSwitch an ``sxid`` fault is printed on (nvidia-nvswitch0 of an HGX baseboard)
SXID_SWITCH_PCI = "0000:05:00.0"
#: what the driver prints after "NVRM: Xid (PCI:...): N, " for the Xids faults name most often
#: (the shared dmesg-xid fixtures and the NVIDIA XID documentation); others get a channel line
_XID_TEXT = {
    48: "pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU "
        "in the framebuffer at physAddr 0x12bac1c3e0 partition 2, subpartition 1.",
    63: "pid='<unknown>', name=<unknown>, Row Remapper: New row (0x00000012bac1c3e0) marked for remapping, "
        "reset gpu to activate.",
    74: "pid=4242, name=python3, NVLink: fatal error detected on link 3(0x10000, 0x0, 0x0, 0x0, 0x0, 0x0, 0x0)",
    79: "pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
    94: "pid='<unknown>', name=<unknown>, Contained: SM (0x1). RST: No, D-RST: No",
    119: "pid=4242, name=python3, Timeout after 6s of waiting for RPC response from GPU{gpu} GSP! Expected "
         "function 76 (GSP_RM_CONTROL) (0x20801348 0x4).",
}


def gpu_pci(i: int) -> str:
    """GPU i's address as the driver prints it in an Xid line: ``0000:18:00``."""
    return f"0000:{_GPU_BUSES[i % 8] + i // 8:02x}:00"


def _fault_lines(node: Any) -> list[str]:
    """Kernel-log lines of the node's ``xid`` (one per GPU) and ``sxid`` faults, in the driver's
    format: ``NVRM: Xid (PCI:0000:2a:00): 79, ...``, ``nvidia-nvswitch0: SXid (PCI:...): N, Fatal, ...``."""
    out: list[str] = []
    for f in node.faults:
        if f.kind == "xid":
            gpus = [f.gpu] if f.gpu is not None else list(range(node.hardware.gpu.count))
            for g in gpus:
                text = _XID_TEXT.get(int(f.value), "pid=4242, name=python3, Ch 00000008").replace("{gpu}", str(g))
                out.append(f"NVRM: Xid (PCI:{gpu_pci(g)}): {int(f.value)}, {text}")
        elif f.kind == "sxid":
            tag = f"nvidia-nvswitch0: SXid (PCI:{SXID_SWITCH_PCI}): {int(f.value)}"
            out.append(f"{tag}, Fatal, Link 04 NVSwitch fatal error")
            out.append(f"{tag}, Severity 1 Engine instance 04 Sub-engine instance 00")
    return out


def dmesg(args: list[str]) -> int:
    """``dmesg`` (seconds since boot) and ``dmesg -T`` (wall clock: boot time + offset)."""
    sys.stdout.write(kernel_log(_node(), human="-T" in args or "--ctime" in args))
    return 0


def kernel_log(node: Any, *, human: bool = True) -> str:
    """The node's kernel log as ``dmesg -T`` (``human``) or plain ``dmesg`` prints it. The boot
    is fixed in the past; the lines of ``xid``/``sxid`` faults are stamped five minutes before
    now in both formats, so they fall inside a window that runs back from now (``-T``) or from
    the log's last stamp (plain). The simulated context hands the ``-T`` text to the probes
    (``ProbeContext.kernel_log_text``); the stand-in ``dmesg`` prints the same."""
    boot = _dt.datetime(2026, 11, 30, 4, 0, 0)
    kernel = node.hardware.system.kernel
    spec = node.hardware.gpu
    lines = [
        (0.0, f"Linux version {kernel} (buildd@lcy02-amd64) (gcc 11.4.0) #135-Ubuntu SMP"),
        (2.5, "mlx5_core 0000:18:00.0: firmware version: 28.39.1002"),
        (9.8, f"nvidia-nvlink: Nvlink Core is being initialized, major device number 510"),
        (10.1, f"NVRM: loading NVIDIA UNIX x86_64 Kernel Module  {node.driver_version}"),
    ]
    recent = max((_dt.datetime.now() - boot).total_seconds() - 300.0, 20.0)
    lines += [(recent + 0.01 * k, text) for k, text in enumerate(_fault_lines(node))]
    out = []
    for offset, text in lines:
        if human:
            stamp = (boot + _dt.timedelta(seconds=offset)).strftime("%a %b %d %H:%M:%S %Y")
            out.append(f"[{stamp}] {text}\n")
        else:
            out.append(f"[{offset:12.6f}] {text}\n")
    return "".join(out)


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


def ib_write_bw(args: list[str], data_path: str | None = None, *, view: Any = None,
                peer: Optional[Callable[[str, str], Optional[tuple[Optional[float], str]]]] = None) -> int:
    """perftest's ``ib_write_bw``: a server (no host argument) prints its banner and settings; a
    client prints the settings and one result row for ``-s`` bytes, at the bandwidth of the
    fleet (``ib_bw_slow``, else 97.7 % of the port rate, AzNHC's H100 sample). A port that is
    not active, an unknown device, or GPU memory without a GPUDirect path fail as perftest
    does. The node's devices come from ``view``, else ``data_path`` (written with the node's
    sysfs tree). ``peer(host, device)``, when given, answers for a client whose host is another
    node: None (a loopback after all), (Gb/s, ""), or (None, why it cannot connect)."""
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
    if view is not None:
        pass
    elif data_path is not None:
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
    measured = dev["bw_gbps"]
    if host is not None and peer is not None:
        far = peer(host, name)
        if far is not None:
            if far[0] is None:
                print(far[1], file=sys.stderr)
                return 1
            measured = far[0]
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
        bw = float(measured)
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


# ------------------------------------------------------------------------------- storage
# Stand-ins for ``stat -f``, ``fio`` and the storage domain's helper. They read the node's
# storage view (mounts, figures, faults: ``clusterkit.sim.context.storage_view``) from the
# JSON file written with the node's tree, and load nothing but the standard library.

def _storage_data(data_path: str) -> Any:
    import json

    with open(data_path, encoding="utf-8") as fh:
        return json.load(fh)


def _mount_of(view: Any, path: str) -> Any:
    """The mount point holding ``path`` (the longest one that is a prefix of it)."""
    import os.path

    path = os.path.normpath(path)
    best = None
    for m in view["mounts"]:
        mp = m["mp"]
        if path == mp or mp == "/" or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(best):
                best = mp
    return best


def _block_if_hung(view: Any, path: str) -> None:
    """``mount_hang``: the call blocks, as on a hung NFS server (the caller's timeout ends it)."""
    import time

    if _mount_of(view, path) in view.get("hung", []):
        time.sleep(float(view.get("hang_s", 3600.0)))


_STAT_TYPES = {"nfs4": "nfs", "ext4": "ext2/ext3", "devtmpfs": "tmpfs"}
#: the figures of a path on no simulated mount, or on one without figures (proc, sysfs, …)
STAT_DEFAULT = {"bsize": 4096, "blocks": 0, "bfree": 0, "bavail": 0, "files": 0, "ffree": 0, "type": "proc"}


def stat_type(fstype: str) -> str:
    """The type name ``stat -f -c %T`` prints for a mount's file-system type."""
    return _STAT_TYPES.get(fstype, fstype)


def stat_tool(args: list[str], data_path: str) -> int:
    """``stat -f -c FORMAT [--] PATH...`` (GNU coreutils, file-system mode) on the simulated
    mounts: %S %s %b %f %a %c %d %T %t %n."""
    view = _storage_data(data_path)
    fmt: str | None = None
    paths: list[str] = []
    files_mode, dashdash, i = False, False, 0
    while i < len(args):
        a = args[i]
        if dashdash or not a.startswith("-") or a == "-":
            paths.append(a)
        elif a == "--":
            dashdash = True
        elif a in ("-f", "--file-system"):
            files_mode = True
        elif a in ("-c", "--format") and i + 1 < len(args):
            fmt, i = args[i + 1], i + 1
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        else:
            print(f"stat (clusterkit sim): usage not simulated: {' '.join(args)}", file=sys.stderr)
            return 1
        i += 1
    if not files_mode or fmt is None or not paths:
        print(f"stat (clusterkit sim): usage not simulated: {' '.join(args)}", file=sys.stderr)
        return 1
    rc = 0
    for path in paths:
        _block_if_hung(view, path)
        mp = _mount_of(view, path)
        fs = view["statfs"].get(mp) if mp is not None else None
        if fs is None:  # proc, sysfs, …: no figures worth simulating
            fs = STAT_DEFAULT
        typ = str(fs.get("type", "ext4"))
        subst = {"S": fs["bsize"], "s": fs["bsize"], "b": fs["blocks"], "f": fs["bfree"], "a": fs["bavail"],
                 "c": fs["files"], "d": fs["ffree"], "T": stat_type(typ), "t": "6969", "n": path,
                 "%": "%"}
        out: list[str] = []
        j = 0
        while j < len(fmt):
            if fmt[j] == "%" and j + 1 < len(fmt):
                out.append(str(subst.get(fmt[j + 1], "?")))
                j += 2
            else:
                out.append(fmt[j])
                j += 1
        print("".join(out))
    return rc


def _helper_source() -> str:
    """The storage domain's real helper (``HELPER_SOURCE`` in clusterkit/validate/storage.py),
    read without importing the package."""
    import ast
    import os.path

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "validate", "storage.py")
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HELPER_SOURCE" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise RuntimeError("HELPER_SOURCE not found in clusterkit/validate/storage.py")


def storage_helper(args: list[str], data_path: str) -> int:
    """The storage helper on a simulated node. ``metadata DIR N MAX_S`` runs the real test on
    real files in the node's scratch directory and adds the path's ``metadata_slow`` latency to
    every operation; ``weights DIR MAX_S MAX_BYTES`` reports the fleet's read rate
    (``weights_slow``, else 5 GB/s), as an O_DIRECT read. A hung mount blocks both."""
    import json

    view = _storage_data(data_path)
    if len(args) != 4 or args[0] not in ("metadata", "weights"):
        print("usage: helper metadata DIR FILES MAX_S | weights DIR MAX_S MAX_BYTES", file=sys.stderr)
        return 2
    op, where = args[0], args[1]
    _block_if_hung(view, where)
    if op == "metadata":
        ns: dict[str, Any] = {"__name__": "clusterkit_storage_helper"}
        exec(compile(_helper_source(), "clusterkit-storage-helper", "exec"), ns)  # noqa: S102 - our own source
        import os

        os.makedirs(view["scratch"], exist_ok=True)
        out = ns["metadata"](view["scratch"], int(args[2]), float(args[3]))
        extra = float(view.get("metadata_ms", {}).get(_mount_of(view, where), 0.0))
        for key in ("p50_ms", "p99_ms"):
            out[key] = {k: (v + extra if v is not None else None) for k, v in out[key].items()}
        out["dir"] = where
    else:
        rate = float(view["weights_gbps"]) * 1e9
        seconds = max(0.1, min(float(args[2]), 2.0))
        out = {"dir": where, "files": 4, "files_total": 4, "bytes": int(rate * seconds), "seconds": seconds,
               "method": "direct"}
    print(json.dumps(out))
    return 0


def fio_tool(args: list[str], data_path: str) -> int:
    """``fio --output-format=json`` with ``--name=`` jobs (rw, bs, iodepth per job): fio 3.33's
    JSON for each job at the simulated figures (``fio_slow`` divides them). A hung mount blocks."""
    import json
    import time

    view = _storage_data(data_path)
    glob: dict[str, str] = {}
    jobs: list[dict[str, str]] = []
    for a in args:
        if not a.startswith("--"):
            print(f"fio: unrecognized option '{a}'", file=sys.stderr)
            return 1
        k, _, v = a[2:].partition("=")
        if k == "name":
            jobs.append({"name": v})
        (jobs[-1] if jobs else glob)[k] = v
    if glob.get("output-format") != "json":
        print("fio (clusterkit sim): only --output-format=json is simulated", file=sys.stderr)
        return 1
    _block_if_hung(view, glob.get("directory", "/"))
    runtime_ms = int(float(glob.get("runtime", "5")) * 1000)
    figs = view["fio"]

    def lat(mean_ns: float, n: int) -> dict[str, Any]:
        return {"min": int(mean_ns * 0.3), "max": int(mean_ns * 8), "mean": mean_ns, "stddev": mean_ns * 0.4, "N": n}

    def section(bw: float, bs: int, depth: int) -> dict[str, Any]:
        if bw <= 0:
            return {"io_bytes": 0, "io_kbytes": 0, "bw_bytes": 0, "bw": 0, "iops": 0.0, "runtime": 0, "total_ios": 0,
                    "short_ios": 0, "drop_ios": 0, "slat_ns": lat(0, 0), "clat_ns": lat(0, 0), "lat_ns": lat(0, 0)}
        iops = bw / bs
        n = int(iops * runtime_ms / 1000)
        clat = depth / iops * 1e9
        return {"io_bytes": n * bs, "io_kbytes": n * bs // 1024, "bw_bytes": int(bw), "bw": int(bw / 1024),
                "iops": iops, "runtime": runtime_ms, "total_ios": n, "short_ios": 0, "drop_ios": 0,
                "slat_ns": lat(2500.0, n),
                "clat_ns": {**lat(clat, n), "percentile": {"50.000000": int(clat), "99.000000": int(clat * 3)}},
                "lat_ns": lat(clat + 2500.0, n)}

    out_jobs = []
    for gid, j in enumerate(jobs):
        rw = j.get("rw", glob.get("rw", "read"))
        bs = 4096 if j.get("bs", glob.get("bs", "4k")).lower() in ("4k", "4096") else 1048576
        depth = int(j.get("iodepth", glob.get("iodepth", "1")))
        read_bw = write_bw = 0.0
        if rw in ("read", "randread"):
            read_bw = figs["randread_iops"] * 4096 if rw == "randread" else figs["read_mibps"] * 1048576
        elif rw in ("write", "randwrite"):
            write_bw = figs["write_mibps"] * 1048576
        opts = {k: v for k, v in j.items() if k != "stonewall"}
        out_jobs.append({"jobname": j["name"], "groupid": gid, "error": 0, "eta": 0, "elapsed": runtime_ms // 1000 + 1,
                         "job options": opts, "read": section(read_bw, bs, depth),
                         "write": section(write_bw, bs, depth), "trim": section(0, bs, depth),
                         "job_runtime": runtime_ms, "usr_cpu": 3.1, "sys_cpu": 11.9, "ctx": 40211})
    doc = {"fio version": "fio-3.33", "timestamp": int(time.time()), "time": time.ctime(),
           "global options": {k: v for k, v in glob.items() if k != "output-format"}, "jobs": out_jobs}
    print(json.dumps(doc, indent=2))
    return 0


# -------------------------------------------------------------------------------- stress
# Stand-ins for the stress domain's tools: the measurement worker (``clusterkit-stress-worker``,
# the JSON line of ``clusterkit.validate.stress_worker``), ``dcgmi diag -r N -j`` (DCGM 3.x JSON)
# and ``gpu_burn`` (wilicc/gpu-burn's console output). They read the node's stress view
# (:func:`stress_view`, written with the node's tree as ``sim-stress.json``) and load nothing
# but the standard library, so 8 workers per node start cheaply.

STRESS_DATA = "sim-stress.json"
#: GPU i's PCI bus as SimNVML reports it (nvmlDeviceGetPciInfo: bus[i % 8] + i // 8)
_STRESS_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
#: dcgmi diag plugin names (``-r memory``) -> the test name in its results
DCGM_PLUGINS = {"memory": "GPU Memory", "pcie": "PCIe", "diagnostic": "Diagnostic", "eud": "EUD Test",
                "targeted_stress": "Targeted Stress", "targeted_power": "Targeted Power",
                "memory_bandwidth": "Memory Bandwidth", "memtest": "Memtest", "pulse_test": "Pulse Test"}
_DCGM_DEPLOYMENT = ("Denylist", "NVML Library", "CUDA Main Library", "Permissions and OS Blocks",
                    "Persistence Mode", "Environment Variables", "Page Retirement/Row Remap",
                    "Graphics Processes", "Inforom")
#: the hardware tests of each run level (DCGM 3.x): (category, test)
_DCGM_LEVELS: dict[int, tuple[tuple[str, str], ...]] = {
    2: (("Integration", "PCIe"), ("Hardware", "GPU Memory")),
    3: (("Integration", "PCIe"), ("Hardware", "GPU Memory"), ("Hardware", "Diagnostic"), ("Hardware", "EUD Test"),
        ("Stress", "Targeted Stress"), ("Stress", "Targeted Power"), ("Stress", "Memory Bandwidth")),
    4: (("Integration", "PCIe"), ("Hardware", "GPU Memory"), ("Hardware", "Diagnostic"), ("Hardware", "EUD Test"),
        ("Hardware", "Memtest"), ("Hardware", "Pulse Test"), ("Stress", "Targeted Stress"),
        ("Stress", "Targeted Power"), ("Stress", "Memory Bandwidth")),
}
#: what dcgmi says when a test fails: (error_id, error_category, text with {gpu})
_DCGM_FAIL_TEXT = {
    "GPU Memory": (22, 3, "A memory mismatch was detected on GPU {gpu}, but no error was reported by CUDA or ECC."),
    "PCIe": (30, 2, "Bandwidth of GPU {gpu} in direction host-to-device of 11.82 did not exceed minimum required "
                    "bandwidth of 43.00."),
    "Diagnostic": (83, 3, "GPU {gpu} calculated results differing from the other GPUs' in the Diagnostic "
                          "plugin's matrix products."),
    "Targeted Stress": (36, 4, "Max stress level of 1043.2 did not reach desired stress level of 3270.0 for "
                               "GPU {gpu}."),
    "Targeted Power": (37, 4, "Max power of 412.0 did not reach desired power minimum targeted_power.target_power "
                              "of 700.0 for GPU {gpu}."),
    "Memory Bandwidth": (49, 4, "GPU {gpu} only achieved a memory bandwidth of 1204880.12 MB/s, failing to meet "
                                "1905000.00 MB/s for test 0."),
}
_DCGM_PASS_INFO = {
    "PCIe": "GPU {gpu} GPU to Host bandwidth:\t\t55.12 GB/s, GPU {gpu} Host to GPU bandwidth:\t\t55.41 GB/s, "
            "GPU {gpu} bidirectional bandwidth:\t101.82 GB/s",
    "GPU Memory": "GPU {gpu} Allocated 83048193638 bytes (97.3%)",
    "Diagnostic": "GPU {gpu} calculated at approximately 51234.56 gigaflops during this test",
    "Targeted Stress": "GPU {gpu} relative stress level\t3284",
    "Targeted Power": "GPU {gpu} power average:\t697 W",
}


def stress_view(node: Any) -> dict[str, Any]:
    """What the stress stand-ins need of a simulated node, with its faults applied: the visible
    GPU count (``gpu_missing``), lost GPUs, each GPU's ``gemm_slow`` / ``hbm_slow`` factor and
    ``dcgm_fail`` tests, and the nominal figures of the built-in profile whose model patterns
    match the simulated GPU (``gemm_tflops_nominal``, ``hbm_gbps_nominal``; h100-sxm's when none
    does). A small fixed spread per GPU (under 1 %) makes the figures look measured."""
    import hashlib
    import zlib

    from clusterkit.profiles import builtin_names, load_profile

    spec = node.hardware.gpu
    chosen = None
    for name in builtin_names():
        prof = load_profile(name)
        if prof.gpu is not None and any(p.lower() in spec.name.lower() for p in prof.gpu.model_patterns):
            chosen = prof
            break
    chosen = chosen or load_profile("h100-sxm")
    st = chosen.stress
    gemm = float(st.gemm_tflops_nominal) if st is not None and st.gemm_tflops_nominal else 794.5
    hbm = float(st.hbm_gbps_nominal) if st is not None and st.hbm_gbps_nominal else 2900.0
    missing = node.fault("gpu_missing")
    visible = int(missing.value) if missing is not None and missing.value is not None else spec.count
    gpus: list[dict[str, Any]] = []
    for i in range(spec.count):
        digest = hashlib.sha256(f"{node.name}/{i}".encode()).digest()
        jitter = [(digest[k] / 255.0 - 0.5) * 0.012 for k in (0, 1, 2)]
        slow = {k: (float(f.value) if f is not None else 1.0)
                for k, f in (("gemm_slow", node.fault("gemm_slow", i)), ("hbm_slow", node.fault("hbm_slow", i)))}
        fails = [str(f.value) for f in node.faults if f.kind == "dcgm_fail" and (f.gpu is None or f.gpu == i)]
        uid = zlib.crc32(f"{node.name}/{i}".encode()) * 65537 % (16**12)
        gpus.append({"index": i, "gemm_tflops": round(gemm / slow["gemm_slow"] * (1 + jitter[0]), 1),
                     "hbm_gbps": round(hbm / slow["hbm_slow"] * (1 + jitter[1]), 1),
                     "burn_gflops": round(50_000.0 / slow["gemm_slow"] * (1 + jitter[2])),
                     "dcgm_fail": fails, "lost": node.fault("gpu_lost", i) is not None,
                     "uuid": f"GPU-5ec0{i:04x}-0000-4000-8000-{uid:012x}",  # SimNVML's UUID
                     "pci_bus_id": f"00000000:{_STRESS_BUSES[i % 8] + i // 8:02X}:00.0"})
    return {"node": node.name, "profile": chosen.name, "gpu_name": spec.name, "count": spec.count,
            "visible": visible, "driver_version": node.driver_version,
            "nvml_unavailable": node.fault("nvml_unavailable") is not None,
            "device_id": "2335" if "H200" in spec.name else "2330", "gpus": gpus}


def write_stress_stand_ins(node: Any, tmp: str, final: str) -> None:
    """Write ``sim-stress.json`` into the node's tree being generated (``tmp``, renamed to
    ``final``) and the three stand-in scripts into its ``tools/``: each loads this file on its
    own, with this interpreter."""
    import json
    import os
    import stat

    os.makedirs(os.path.join(tmp, "tools"), mode=0o755, exist_ok=True)
    with open(os.path.join(tmp, STRESS_DATA), "w", encoding="utf-8") as fh:
        json.dump(stress_view(node), fh, indent=1)
        fh.write("\n")
    data = os.path.join(final, STRESS_DATA)
    me = os.path.abspath(__file__)
    for tool, fn in (("clusterkit-stress-worker", "stress_worker_tool"), ("dcgmi", "dcgmi_tool"),
                     ("gpu_burn", "gpu_burn_tool")):
        path = os.path.join(tmp, "tools", tool)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"#!{sys.executable}\n"
                     "import importlib.util, sys\n"
                     f"spec = importlib.util.spec_from_file_location('clusterkit_sim_tools', {me!r})\n"
                     "mod = importlib.util.module_from_spec(spec)\n"
                     "spec.loader.exec_module(mod)\n"
                     f"sys.exit(mod.{fn}(sys.argv[1:], {data!r}))\n")
        os.chmod(path, 0o755 | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _stress_data(data_path: str) -> Any:
    import json

    with open(data_path, encoding="utf-8") as fh:
        return json.load(fh)


def stress_worker_tool(args: list[str], data_path: str) -> int:
    """The stress worker's stand-in: the same argv and the same JSON line
    (``clusterkit.stress-worker/v1``), with the profile's nominal figures scaled by the node's
    ``gemm_slow`` / ``hbm_slow`` instead of a measurement."""
    import json

    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        if args[i] in ("--gpu", "--seconds", "--tests") and i + 1 < len(args):
            opts[args[i]] = args[i + 1]
            i += 2
            continue
        print(f"clusterkit-stress-worker: error: unrecognized arguments: {args[i]}", file=sys.stderr)
        return 2
    if "--gpu" not in opts or not opts["--gpu"].isdigit():
        print("clusterkit-stress-worker: error: the following arguments are required: --gpu", file=sys.stderr)
        return 2
    gpu = int(opts["--gpu"])
    tests = [t for t in opts.get("--tests", "gemm,hbm").split(",") if t]
    view = _stress_data(data_path)
    doc: dict[str, Any] = {"schema": "clusterkit.stress-worker/v1", "gpu": gpu, "backend": None, "device": None,
                           "pci_bus_id": None, "skipped": None, "error": None}
    for t in tests:
        doc[t] = None
    rc = 0
    if view["nvml_unavailable"]:
        doc["error"] = ("RuntimeError: Found no NVIDIA driver on your system. Please check that you have an "
                        "NVIDIA GPU and installed a driver")
        rc = 1
    elif gpu >= view["visible"]:
        n = view["visible"]
        doc["error"] = f"RuntimeError: torch sees {n} GPU{'s' if n != 1 else ''}: no GPU {gpu}"
        rc = 1
    else:
        g = view["gpus"][gpu]
        doc.update(backend="clusterkit-sim (stand-in)", device=view["gpu_name"], pci_bus_id=g["pci_bus_id"])
        if g["lost"]:
            doc["error"] = "RuntimeError: CUDA error: unspecified launch failure"
            rc = 1
        else:
            m, n, k = 8192, 8192, 8192
            if "gemm" in tests:
                ms = 2.0 * m * n * k / (g["gemm_tflops"] * 1e12) * 1000
                doc["gemm"] = {"tflops": g["gemm_tflops"], "dtype": "bfloat16", "shape": [m, n, k],
                               "ms": round(ms, 4), "iters": 2000, "finite": True,
                               "shapes": [{"shape": [m, n, k], "tflops": g["gemm_tflops"], "ms": round(ms, 4),
                                           "finite": True}], "error": None}
            if "hbm" in tests:
                nbytes = 2 * 1024**3
                doc["hbm"] = {"gbps": g["hbm_gbps"], "bytes": nbytes,
                              "ms": round(2 * nbytes / (g["hbm_gbps"] * 1e9) * 1000, 4), "iters": 1500, "error": None}
    doc["seconds"] = 0.05
    print(json.dumps(doc, separators=(",", ":")))
    return rc


def dcgmi_tool(args: list[str], data_path: str) -> int:
    """``dcgmi diag -r N -j`` (N 1-4, or a plugin name such as ``memory``): DCGM 3.x JSON, one
    result per GPU for the hardware tests; ``dcgm_fail`` fails its test on its GPU(s) (a plugin
    name or a test name, any case). Only ``-j`` output is simulated."""
    import json

    if args[:1] != ["diag"]:
        print(f"dcgmi (clusterkit sim): usage not simulated: {' '.join(args)}", file=sys.stderr)
        return 2
    level: str | None = None
    as_json = False
    i = 1
    while i < len(args):
        a = args[i]
        if a in ("-r", "--run") and i + 1 < len(args):
            level = args[i + 1]
            i += 2
            continue
        if a in ("-j", "--json"):
            as_json = True
        i += 1
    if level is None:
        print("Error: Missing required argument -r/--run", file=sys.stderr)
        return 2
    if not as_json:
        print("dcgmi (clusterkit sim): only dcgmi diag -j output is simulated", file=sys.stderr)
        return 2
    view = _stress_data(data_path)
    if view["nvml_unavailable"]:
        print(json.dumps({"DCGM GPU Diagnostic": {"runtime_error": "Error: unable to establish a connection to the "
                                                                   "specified host: localhost", "version": "3.3.9"}}))
        return 255
    if level.isdigit():
        lvl = int(level)
        if not 1 <= lvl <= 4:
            print(f"Error: Invalid run level {level}", file=sys.stderr)
            return 2
        hardware = _DCGM_LEVELS.get(lvl, ())
    else:
        names = [DCGM_PLUGINS.get(p.strip().lower().replace(" ", "_"), p.strip()) for p in level.split(",")]
        hardware = tuple(("Hardware", n) for n in names)
    gpus = [g for g in view["gpus"] if g["index"] < view["visible"]]

    def failed(test: str, g: Any) -> bool:
        for v in g["dcgm_fail"]:
            key = v.strip().lower()
            if key == test.lower() or DCGM_PLUGINS.get(key.replace(" ", "_"), "").lower() == test.lower():
                return True
        return False

    any_fail = False
    deployment: list[dict[str, Any]] = []
    for name in _DCGM_DEPLOYMENT:
        bad = any(failed(name, g) for g in gpus)
        any_fail = any_fail or bad
        res: dict[str, Any] = {"status": "Fail" if bad else "Pass"}
        if bad:
            res["warnings"] = [{"warning": f"The {name} check failed on this node.", "error_id": 1,
                                "error_category": 1, "error_severity": 2}]
        deployment.append({"name": name, "results": [res]})
    cats: dict[str, list[Any]] = {}
    for category, test in hardware:
        results: list[dict[str, Any]] = []
        for g in gpus:
            i = g["index"]
            if test == "EUD Test":
                results.append({"gpu_ids": str(i), "status": "Skip"})
            elif failed(test, g):
                any_fail = True
                eid, ecat, text = _DCGM_FAIL_TEXT.get(test, (99, 4, f"The {test} test failed on GPU {{gpu}}."))
                results.append({"gpu_ids": str(i), "status": "Fail",
                                "warnings": [{"warning": text.format(gpu=i), "error_id": eid,
                                              "error_category": ecat, "error_severity": 2}]})
            else:
                res = {"gpu_ids": str(i), "status": "Pass"}
                if test in _DCGM_PASS_INFO:
                    res["info"] = _DCGM_PASS_INFO[test].format(gpu=i)
                results.append(res)
        cats.setdefault(category, []).append({"name": test, "results": results})
    categories = [{"category": "Deployment", "tests": deployment}]
    categories += [{"category": c, "tests": t} for c, t in cats.items()]
    doc = {"DCGM GPU Diagnostic": {"test_categories": categories, "version": "3.3.9",
                                   "Driver Version Detected": view["driver_version"],
                                   "GPU Device IDs": [view["device_id"]] * len(gpus)}}
    print(json.dumps(doc, indent=1))
    return 226 if any_fail else 0  # non-zero on a failed test, as dcgmi does (the probe reads the JSON)


def gpu_burn_tool(args: list[str], data_path: str) -> int:
    """wilicc/gpu-burn's ``gpu_burn [-c FILE] [-d] [-tc] [-m X] [SECONDS]``: its console output,
    every visible GPU OK at 50,000 Gflop/s (FP32 SGEMM, ``gemm_slow`` divides it); a lost GPU's
    burn process dies and the GPU is FAULTY. Nothing sleeps: the progress lines come at once."""
    compare = "compare.ptx"
    seconds = 10
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-c", "-m", "-i") and i + 1 < len(args):
            if a == "-c":
                compare = args[i + 1]
            i += 2
            continue
        if a in ("-d", "-tc", "-l", "-stts"):
            i += 1
            continue
        if a.isdigit():
            seconds = int(a)
            i += 1
            continue
        print(f"gpu_burn: unknown option {a}", file=sys.stderr)
        return 1
    view = _stress_data(data_path)
    gpus = [g for g in view["gpus"] if g["index"] < view["visible"]]
    if view["nvml_unavailable"] or not gpus:
        print("No CUDA devices")
        return 1
    lines = [f"Using compare file: {compare}", f"Burning for {seconds} seconds."]
    lines += [f"GPU {g['index']}: {view['gpu_name']} (UUID: {g['uuid']})" for g in gpus]
    for g in gpus:
        lines += [f"Initialized device {g['index']} with 81004 MB of memory (80462 MB available, using 72416 MB "
                  "of it), using FLOATS",
                  "Results are 268435456 bytes each, thus performing 268 iterations"]
    for step in range(1, 11):
        pct = step * 10.0
        procs: list[str] = []
        errs: list[str] = []
        temps: list[str] = []
        for g in gpus:
            rate = g["burn_gflops"]
            if g["lost"] and step > 2:
                procs.append("-1 (0 Gflop/s)")
                errs.append("0 (DIED!)")
                temps.append("--")
                continue
            done = int(rate * 1e9 * seconds * step / 10 / (2.0 * 8192**3))
            procs.append(f"{done} ({rate} Gflop/s)")
            errs.append("0")
            temps.append(f"{52 + step + g['index'] % 3} C")
        lines.append(f"{pct:5.1f}%  proc'd: {' - '.join(procs)}   errors: {' - '.join(errs)}   "
                     f"temps: {' - '.join(temps)}")
    lines.append("Killing processes with SIGTERM (soft kill)")
    lines += [f"Freed memory for dev {g['index']}" for g in gpus if not g["lost"]]
    lines += ["Uninitted cublas", "done", "", f"Tested {len(gpus)} GPUs:"]
    lines += [f"\tGPU {g['index']}: {'FAULTY' if g['lost'] else 'OK'}" for g in gpus]
    print("\n".join(lines))
    return 0
