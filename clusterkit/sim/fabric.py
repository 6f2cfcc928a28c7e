"""The simulated fabric: NCCL tests and cross-node ``ib_write_bw`` between simulated nodes.

:func:`fabric_view` turns a fleet into a small JSON-able view of what the fabric model needs
(each node's rails, its NCCL faults, the leaf switches and their uplinks): the healthy nodes
share one ``default`` entry, only faulted nodes are listed, so a fleet of thousands of nodes
costs what its faults cost. :func:`stand_in_dir` writes that view once per fleet content,
beside stand-in executables (``all_reduce_perf`` and the other nccl-tests, ``ib_write_bw``)
that load this file on its own — the standard library only, no clusterkit package — and
print what the real tools print (nccl-tests 2.17.8, perftest).

The bandwidth model (:func:`allreduce_busbw`, :func:`ib_pair_gbps`) is pure: the view, the
test's nodes and the environment in, a figure out. docs/sim.md has it as a table.

A stand-in learns who it is from the environment: the node from ``CLUSTERKIT_NODE`` (else
``SLURMD_NODENAME``, else the host name); the test's nodes from ``CLUSTERKIT_SIM_NODES`` (a
hostlist; else ``SLURM_STEP_NODELIST``, else ``SLURM_JOB_NODELIST``, else this node alone);
its rank from ``SLURM_PROCID`` / ``OMPI_COMM_WORLD_RANK`` / ``PMI_RANK`` (default 0). Only rank
0 prints the report; the other ranks end with the test's status (or hang with it).

Nothing here is imported at module level but the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from typing import Any, Callable, Mapping, Optional, Sequence

#: bump when the generated directory or the view changes shape
LAYOUT = "1"
#: the fabric view, beside the stand-ins
VIEW_FILE = "sim-fabric.json"
#: the stand-ins of :func:`stand_in_dir`
NCCL_TESTS = ("all_reduce_perf", "all_gather_perf", "reduce_scatter_perf", "alltoall_perf", "sendrecv_perf")
TOOLS = NCCL_TESTS + ("ib_write_bw",)

ENV_NODE = "CLUSTERKIT_NODE"
ENV_NODES = "CLUSTERKIT_SIM_NODES"

# ------------------------------------------------------------------ the model's figures
#: all_reduce busbw (GB/s) of one HGX H100 node: NVLS (NVLink SHARP), and ring with NVLS off
#: (REFERENCE-FIGURES.md: 477.8-480, and 368.6)
NVLS_GBPS = 478.0
RING_GBPS = 368.0
#: a rail's share of its port rate that NCCL gets (8 x 48.5 GB/s at NDR: nccl-tests #267)
RAIL_EFFICIENCY = 0.97
#: a multi-node ring's share of the sum of its rails (8 x 48.5 x 0.95 = 368.6 GB/s, 2 nodes)
NET_EFFICIENCY = 0.95
#: NCCL_ALGO unset on 2 nodes: NVLS-tree goes past the network (2 nodes NVLS: 479.8 GB/s)
TREE_BOOST = 1.3
#: no usable RDMA device on a node: NCCL falls back to its socket transport
SOCKET_GBPS = 2.5
#: +- this share, deterministic per set of nodes, makes figures look measured
NOISE = 0.003
#: ib_write_bw per port as a share of its rate (AzNHC's H100 sample: 390.98 of 400 Gb/s); the
#: same figure as clusterkit.sim.context.WRITE_BW_EFFICIENCY (that module loads the whole package)
WRITE_BW_EFFICIENCY = 390.98 / 400
#: busbw at size s relative to the figure at 8 GiB: (s / (s + h)) / (8G / (8G + h))
JUDGED_BYTES = 8 << 30
RAMP_ONE_NODE = 16 << 20
RAMP_MULTI_NODE = 64 << 20
#: how long a hung test sleeps (the caller's timeout ends it first)
HANG_S = 3600.0
#: fault kinds the view carries per node
FABRIC_KINDS = frozenset({
    "nccl_slow", "nccl_hang", "nccl_init_fail", "hca_degraded", "ib_port_down", "ib_port_polling", "ib_rate",
    "ib_bw_slow", "ib_missing", "peermem_missing",
})
#: busbw of the other collectives as a share of ring all_reduce's on the same nodes
COLLECTIVE_SHARE = {"all_gather": 0.98, "reduce_scatter": 0.98, "alltoall": 0.92, "sendrecv": 1.0}

NCCL_TESTS_VERSION = "2.17.8"
NCCL_CODE = 22902  # NCCL 2.29.2, as the fixtures' nccl-headers / nccl-library


# ------------------------------------------------------------------ hostlists
def _simple_expand(expr: str) -> list[str]:
    """The hostlists Slurm prints (``gpu-[001-004,007],node1``): one bracket group per name at
    most, zero padding from the lower bound. Used where clusterkit.hostlist is not importable."""
    out: list[str] = []
    items: list[str] = []
    depth, cur = 0, ""
    for ch in expr:
        if ch in ", \t" and depth == 0:
            if cur:
                items.append(cur)
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    if cur:
        items.append(cur)
    for item in items:
        if "[" not in item:
            out.append(item)
            continue
        head, _, rest = item.partition("[")
        body, _, tail = rest.partition("]")
        for part in body.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                out.append(f"{head}{lo}{tail}")
                continue
            for n in range(int(lo), int(hi) + 1):
                out.append(f"{head}{n:0{len(lo)}d}{tail}")
    return out


def expand(expr: str) -> list[str]:
    """Hostlist ``expr`` expanded, duplicates dropped (clusterkit.hostlist when importable)."""
    try:
        from clusterkit.hostlist import expand as full
    except ImportError:  # pragma: no cover - a stand-in run by an interpreter without clusterkit
        return list(dict.fromkeys(_simple_expand(expr)))
    return full(expr, unique=True)


# ------------------------------------------------------------------ the view
def fabric_view(fleet: Any) -> dict[str, Any]:
    """What the fabric stand-ins need of ``fleet`` (a :class:`~clusterkit.sim.SimFleet`), JSON-able:

    ``default`` (a healthy node: ``rails``, ``slow`` 1, ``hang``/``init_fail`` false, ``peermem``),
    ``nodes`` (only the nodes with a fault of :data:`FABRIC_KINDS`, each a full entry),
    ``leaves`` (leaf switch -> its nodes), ``uplinks`` (leaf -> ``uplink_degraded`` factor), and
    the GPUs of every node (``gpus``, ``gpu_name``, ``gpu_busids``, ``gpu_memory_mib``).
    A rail: ``rail`` (compute rail, not a storage port), ``link_layer``, ``rate_gbps``,
    ``state``, ``bw_gbps`` (what a loopback ib_write_bw measures; null when down), ``degraded``
    (``hca_degraded``'s factor, 1 when none)."""
    from clusterkit.sim import SWITCH_KINDS, SimNode
    from clusterkit.sim.context import ib_view
    from clusterkit.sim.tools import gpu_pci

    hw = fleet.hardware
    faults_of: dict[str, list[Any]] = {}
    uplinks: dict[str, float] = {}
    for f in fleet.faults:
        if f.kind in SWITCH_KINDS and f.switch is not None:
            uplinks[f.switch] = max(uplinks.get(f.switch, 1.0), float(f.value))
        elif f.kind in FABRIC_KINDS and f.node is not None:
            for name in expand(f.node):
                faults_of.setdefault(name, []).append(f)

    def entry(name: str, faults: list[Any]) -> dict[str, Any]:
        node = SimNode(name=name, hardware=hw, faults=faults)
        iv = ib_view(node)
        rails: dict[str, Any] = {}
        for dev, d in iv["devices"].items():
            degraded = max([float(f.value) for f in faults if f.kind == "hca_degraded" and f.device == dev],
                           default=1.0)
            rails[dev] = {"rail": d["rail"], "link_layer": d["link_layer"], "rate_gbps": d["rate_gbps"],
                          "state": d["state"], "bw_gbps": d["bw_gbps"], "degraded": degraded}
        slow = max([float(f.value) for f in faults if f.kind == "nccl_slow"], default=1.0)
        return {"rails": rails, "slow": slow, "hang": any(f.kind == "nccl_hang" for f in faults),
                "init_fail": any(f.kind == "nccl_init_fail" for f in faults), "peermem": iv["peermem"]}

    count = hw.gpu.count
    return {
        "layout": LAYOUT,
        "fleet": fleet.name,
        "gpus": count,
        "gpu_name": hw.gpu.name,
        "gpu_busids": [gpu_pci(i) for i in range(count)],
        "gpu_memory_mib": hw.gpu.memory_total_mib,
        "default": entry("", []),
        "nodes": {name: entry(name, faults) for name, faults in faults_of.items()},
        "leaves": fleet.leaves(),
        "uplinks": uplinks,
    }


def node_entry(view: Mapping[str, Any], node: str) -> dict[str, Any]:
    """The view's entry of ``node``: its own when it has a fabric fault, else the default."""
    got: dict[str, Any] = view["nodes"].get(node) or view["default"]
    return got


def stand_in_dir(spec: str) -> str:
    """The directory of the fabric stand-ins for the fleet ``spec`` names (``builtin`` or a
    fleet file's absolute path, as ``CLUSTERKIT_SIM`` holds it): :data:`TOOLS` and the view
    (:data:`VIEW_FILE`), under the simulator's root, keyed by the fleet's content and this
    code. Written once, atomically (a directory renamed into place), so that processes
    asking at the same time all get a complete one."""
    from clusterkit import sim
    from clusterkit.sim.context import sim_root

    fleet = sim.load_fleet(spec)
    key = sim.fleet_key(spec)
    here = os.path.dirname(os.path.abspath(__file__))
    code = "\0".join(f"{p}:{os.stat(p).st_mtime_ns}:{os.stat(p).st_size}"
                     for p in (os.path.join(here, f) for f in ("fabric.py", "tools.py", "context.py", "__init__.py")))
    digest = hashlib.sha256(f"{LAYOUT}\0{key}\0{sys.executable}\0{code}".encode()).hexdigest()[:12]
    path = os.path.join(sim_root(), f"fabric-{key}-{digest}")
    if not os.path.isfile(os.path.join(path, ".complete")):
        write_stand_ins(path, fleet)
    return path


def write_stand_ins(path: str, fleet: Any) -> None:
    """Write the view of ``fleet`` and the stand-ins into a new directory renamed to ``path``;
    when another process got there first, its (identical) directory stays."""
    import shutil
    import tempfile

    from clusterkit.fsutil import publish_dir

    me = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fabric.py")
    root = os.path.dirname(path)
    os.makedirs(root, mode=0o755, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".fabric-", dir=root)
    try:
        with open(os.path.join(tmp, VIEW_FILE), "w", encoding="utf-8") as fh:
            json.dump(fabric_view(fleet), fh, separators=(",", ":"))
            fh.write("\n")
        data = os.path.join(path, VIEW_FILE)
        for tool in TOOLS:
            script = os.path.join(tmp, tool)
            with open(script, "w", encoding="utf-8") as fh:
                fh.write(f"#!{sys.executable}\n"
                         f"# {tool} stand-in of the simulated fleet {fleet.name!r} (clusterkit sim), generated\n"
                         "import importlib.util, sys\n"
                         f"spec = importlib.util.spec_from_file_location('clusterkit_sim_fabric', {me!r})\n"
                         "mod = importlib.util.module_from_spec(spec)\n"
                         "spec.loader.exec_module(mod)\n"
                         f"sys.exit(mod.stand_in_main({tool!r}, sys.argv[1:], {data!r}))\n")
            os.chmod(script, 0o755)
        with open(os.path.join(tmp, ".complete"), "w", encoding="utf-8"):
            pass
        os.chmod(tmp, 0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, path)  # another process's copy (same content) stays


# ------------------------------------------------------------------ the model
def parse_ib_hca(value: str) -> tuple[bool, bool, list[tuple[str, Optional[int]]]]:
    """``NCCL_IB_HCA`` as NCCL reads it: (exclude ``^``, exact ``=``, [(device, port or None)])."""
    v = value.strip()
    exclude = v.startswith("^")
    v = v[1:] if exclude else v
    exact = v.startswith("=")
    v = v[1:] if exact else v
    items: list[tuple[str, Optional[int]]] = []
    for part in v.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, port = part.partition(":")
        items.append((name, int(port) if port.strip().isdigit() else None))
    return exclude, exact, items


def hca_selected(hca: Optional[str], device: str, port: int = 1) -> bool:
    """Whether NCCL uses ``device``/``port`` under ``NCCL_IB_HCA`` = ``hca``: unset (or empty)
    takes every RDMA device; items match by prefix (``mlx5_1`` also matches ``mlx5_10``) unless
    the list starts with ``=``; ``^`` turns the list into an exclusion list."""
    if hca is None or not hca.strip():
        return True
    exclude, exact, items = parse_ib_hca(hca)
    matched = any((device == name if exact else device.startswith(name)) and (p is None or p == port)
                  for name, p in items)
    return matched != exclude


def rail_gbytes(rail: Mapping[str, Any]) -> float:
    """What NCCL gets of one active rail, in GB/s: rate / 8 x :data:`RAIL_EFFICIENCY` (an
    ``ib_bw_slow`` rail: in proportion to what ib_write_bw measures on it), divided by its
    ``hca_degraded`` factor."""
    bw = rail.get("bw_gbps")
    gbits = float(bw) / WRITE_BW_EFFICIENCY if bw is not None else float(rail["rate_gbps"])
    return gbits / 8 * RAIL_EFFICIENCY / float(rail.get("degraded") or 1.0)


def rails_used(view: Mapping[str, Any], node: str, env: Mapping[str, str]) -> list[str]:
    """The node's RDMA devices an NCCL test uses: active, and selected by ``NCCL_IB_HCA``."""
    hca = env.get("NCCL_IB_HCA")
    return [name for name, r in node_entry(view, node)["rails"].items()
            if str(r["state"]).endswith("ACTIVE") and hca_selected(hca, name)]


def node_network_gbytes(view: Mapping[str, Any], node: str, env: Mapping[str, str]) -> float:
    """A node's share of a multi-node ring: (rails used) x the slowest of them x
    :data:`NET_EFFICIENCY` (GB/s); :data:`SOCKET_GBPS` when it has none."""
    rails = node_entry(view, node)["rails"]
    used = rails_used(view, node, env)
    if not used:
        return SOCKET_GBPS
    return len(used) * min(rail_gbytes(rails[name]) for name in used) * NET_EFFICIENCY


def leaf_of(view: Mapping[str, Any]) -> dict[str, str]:
    return {n: leaf for leaf, nodes in view.get("leaves", {}).items() for n in nodes}


def uplink_factor(view: Mapping[str, Any], nodes: Sequence[str]) -> float:
    """1 when ``nodes`` sit under one leaf switch (or none is known), else the largest
    ``uplink_degraded`` factor of the leaves they span."""
    leaves = view.get("leaves") or {}
    if not leaves:
        return 1.0
    where = leaf_of(view)
    spanned = {where[n] for n in nodes if n in where}
    if len(spanned) < 2:
        return 1.0
    return max([float(view.get("uplinks", {}).get(leaf, 1.0)) for leaf in spanned], default=1.0)


def _algo_tokens(algo: str) -> set[str]:
    for sep in ",;:":
        algo = algo.replace(sep, " ")
    return {t for t in algo.lower().split() if t}


def nvls_enabled(env: Mapping[str, str]) -> bool:
    """One node: NVLS unless ``NCCL_NVLS_ENABLE=0`` or ``NCCL_ALGO`` leaves it out."""
    if (env.get("NCCL_NVLS_ENABLE") or "").strip() == "0":
        return False
    algo = (env.get("NCCL_ALGO") or "").strip()
    if not algo:
        return True
    if algo.startswith("^"):
        return "nvls" not in _algo_tokens(algo[1:])
    return "nvls" in _algo_tokens(algo)


def noise(nodes: Sequence[str]) -> float:
    """A factor within 1 +- :data:`NOISE`, the same for the same set of nodes."""
    digest = hashlib.sha256("\0".join(sorted(set(nodes))).encode()).digest()
    u = int.from_bytes(digest[:4], "big") / 2**32
    return 1.0 + (2 * u - 1) * NOISE


def _unique(nodes: Sequence[str]) -> list[str]:
    out = list(dict.fromkeys(n for n in nodes if n))
    if not out:
        raise ValueError("an NCCL test needs at least one node")
    return out


def allreduce_busbw(view: Mapping[str, Any], nodes: Sequence[str], env: Mapping[str, str]) -> float:
    """all_reduce busbw (GB/s, rounded as printed) at the judged size for a test on ``nodes``.

    One node: :data:`NVLS_GBPS`, or :data:`RING_GBPS` without NVLS; divided by its
    ``nccl_slow`` factor. Several nodes: the slowest node's :func:`node_network_gbytes`,
    divided by the largest ``nccl_slow`` factor and, when the nodes span leaf switches, by the
    largest ``uplink_degraded`` factor of those leaves; capped at :data:`RING_GBPS`, except on
    2 nodes with ``NCCL_ALGO`` unset (NVLS-tree): min(:data:`NVLS_GBPS`, that x
    :data:`TREE_BOOST`). Then :func:`noise`."""
    nodes = _unique(nodes)
    slow = max(float(node_entry(view, n)["slow"]) for n in nodes)
    if len(nodes) == 1:
        bw = (NVLS_GBPS if nvls_enabled(env) else RING_GBPS) / slow
    else:
        net = min(node_network_gbytes(view, n, env) for n in nodes) / slow / uplink_factor(view, nodes)
        if len(nodes) == 2 and not (env.get("NCCL_ALGO") or "").strip():
            bw = min(NVLS_GBPS, net * TREE_BOOST)
        else:
            bw = min(net, RING_GBPS)
    return round(bw * noise(nodes), 2)


def collective_busbw(view: Mapping[str, Any], collective: str, nodes: Sequence[str],
                     env: Mapping[str, str]) -> float:
    """busbw (GB/s) at the judged size of ``collective`` (``all_reduce``, ``all_gather``, …): the
    other collectives run at a share (:data:`COLLECTIVE_SHARE`) of ring all_reduce's figure."""
    if collective == "all_reduce":
        return allreduce_busbw(view, nodes, env)
    ring = dict(env)
    ring["NCCL_NVLS_ENABLE"] = "0"
    ring["NCCL_ALGO"] = env.get("NCCL_ALGO") or "Ring"
    return round(allreduce_busbw(view, nodes, ring) * COLLECTIVE_SHARE.get(collective, 1.0), 2)


def ib_pair_gbps(view: Mapping[str, Any], node: str, peer: str, device: str) -> Optional[float]:
    """``ib_write_bw -d device`` from ``node`` to ``peer`` (Gb/s, as perftest reports it):
    the smaller of the two ends' same-named rails (each its loopback figure divided by its
    ``hca_degraded`` factor), divided by the uplink factor when the two sit under different
    leaf switches. None when either end lacks the device or its port is down."""
    ends = []
    for n in (node, peer):
        r = node_entry(view, n)["rails"].get(device)
        if r is None or r.get("bw_gbps") is None or not str(r["state"]).endswith("ACTIVE"):
            return None
        ends.append(float(r["bw_gbps"]) / float(r.get("degraded") or 1.0))
    return round(min(ends) / uplink_factor(view, [node, peer]), 2)


# ------------------------------------------------------------------ the stand-ins' environment
def this_node(env: Mapping[str, str]) -> str:
    return env.get(ENV_NODE) or env.get("SLURMD_NODENAME") or os.uname().nodename


def test_nodes(env: Mapping[str, str]) -> list[str]:
    """The test's nodes: ``CLUSTERKIT_SIM_NODES``, ``SLURM_STEP_NODELIST``,
    ``SLURM_JOB_NODELIST`` (hostlists), else this node alone."""
    for var in (ENV_NODES, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"):
        expr = (env.get(var) or "").strip()
        if expr:
            return expand(expr)
    return [this_node(env)]


def rank(env: Mapping[str, str]) -> int:
    for var in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        v = (env.get(var) or "").strip()
        if v.isdigit():
            return int(v)
    return 0


def _load_view(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        view: dict[str, Any] = json.load(fh)
    return view


# ------------------------------------------------------------------ nccl-tests
_TYPE_SIZES = {"int8": 1, "char": 1, "uint8": 1, "int32": 4, "int": 4, "uint32": 4, "int64": 8, "uint64": 8,
               "half": 2, "float16": 2, "float": 4, "float32": 4, "double": 8, "float64": 8, "bfloat16": 2,
               "fp8_e4m3": 1, "fp8_e5m2": 1}
_TYPE_NAMES = {"char": "int8", "int": "int32", "float16": "half", "float32": "float", "float64": "double"}
#: options that take a value (short letter, long names)
_VALUE_OPTS = {"-t": "--nthreads", "-g": "--ngpus", "-b": "--minbytes", "-e": "--maxbytes", "-i": "--stepbytes",
               "-f": "--stepfactor", "-n": "--iters", "-m": "--agg_iters", "-w": "--warmup_iters",
               "-N": "--run_cycles", "-p": "--parallel_init", "-c": "--check", "-o": "--op", "-d": "--datatype",
               "-r": "--root", "-z": "--blocking", "-y": "--stream_null", "-T": "--timeout", "-G": "--cudagraph",
               "-C": "--report_cputime", "-a": "--average", "-R": "--local_register", "-x": "--device_implicit",
               "-M": "--memory", "-J": "--output_file", "-I": "--iters_per_size"}
_LONG = {v: k for k, v in _VALUE_OPTS.items()}

_USAGE = """USAGE: {test}
\t[-t,--nthreads <num threads>]
\t[-g,--ngpus <gpus per thread>]
\t[-b,--minbytes <min size in bytes>]
\t[-e,--maxbytes <max size in bytes>]
\t[-i,--stepbytes <increment size>]
\t[-f,--stepfactor <increment factor>]
\t[-n,--iters <iteration count>]
\t[-m,--agg_iters <aggregated iteration count>]
\t[-w,--warmup_iters <warmup iteration count>]
\t[-N,--run_cycles <cycle count> run & print each cycle (default: 1; 0=infinite)]
\t[-p,--parallel_init <0/1>]
\t[-c,--check <check iteration count>]
\t[-o,--op <sum/prod/min/max/avg/mulsum/all>]
\t[-d,--datatype <nccltype/all>]
\t[-r,--root <root>]
\t[-z,--blocking <0/1>]
\t[-y,--stream_null <0/1>]
\t[-T,--timeout <time in seconds>]
\t[-G,--cudagraph <num graph launches>]
\t[-C,--report_cputime <0/1>]
\t[-a,--average <0/1/2/3> report average iteration time <0=RANK0/1=AVG/2=MIN/3=MAX>]
\t[-R,--local_register <0/1/2> enable local (1) or symmetric (2) buffer registration on send/recv buffers (default: disable (0))]
\t[-J,--output_file <file> write JSON output to filepath]
\t[-h,--help]
"""


class _Usage(Exception):
    pass


def _size(text: str) -> int:
    t = text.strip()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(t[-1:].lower(), 1)
    digits = t[:-1] if scale != 1 else t
    if not digits.isdigit():
        raise _Usage(f"invalid size '{text}'")
    return int(digits) * scale


def _nccl_args(args: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-h", "--help"):
            opts["-h"] = ""
        elif a.startswith("--"):
            name, eq, value = a.partition("=")
            short = _LONG.get(name)
            if short is None:
                raise _Usage(f"invalid option '{a}'")
            if not eq:
                if i + 1 >= len(args):
                    raise _Usage(f"option '{name}' requires an argument")
                value, i = args[i + 1], i + 1
            opts[short] = value
        elif len(a) >= 2 and a[0] == "-" and a[:2] in _VALUE_OPTS:
            if len(a) > 2:
                opts[a[:2]] = a[2:]
            else:
                if i + 1 >= len(args):
                    raise _Usage(f"option requires an argument -- '{a[1]}'")
                opts[a] = args[i + 1]
                i += 1
        else:
            raise _Usage(f"invalid option '{a}'")
        i += 1
    return opts


def _int_opt(opts: Mapping[str, str], key: str, default: int) -> int:
    v = opts.get(key)
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        raise _Usage(f"invalid value '{v}' for {key}") from None


def _bus_factor(collective: str, nranks: int) -> float:
    """busbw / algbw, as nccl-tests computes it."""
    if nranks <= 1:
        return 1.0
    if collective == "all_reduce":
        return 2.0 * (nranks - 1) / nranks
    if collective in ("all_gather", "reduce_scatter", "alltoall"):
        return (nranks - 1) / nranks
    return 1.0


def _pid(node: str, local: int) -> int:
    return 10_000 + zlib.crc32(node.encode()) % 3_000_000 + local


def _header(test: str, opts: Mapping[str, str], sizes: tuple[int, int], step: str,
            view: Mapping[str, Any], nodes: Sequence[str]) -> list[str]:
    lines = [f"# nccl-tests version {NCCL_TESTS_VERSION} nccl-headers={NCCL_CODE} nccl-library={NCCL_CODE}",
             f"# Collective test starting: {test}",
             f"# nThread {_int_opt(opts, '-t', 1)} nGpus {_int_opt(opts, '-g', 1)} minBytes {sizes[0]} "
             f"maxBytes {sizes[1]} step: {step} warmup iters: {_int_opt(opts, '-w', 1)} "
             f"iters: {_int_opt(opts, '-n', 20)} agg iters: {_int_opt(opts, '-m', 1)} "
             f"validation: {_int_opt(opts, '-c', 1)} graph: {_int_opt(opts, '-G', 0)}",
             "#", "# Using devices"]
    gpus = int(view["gpus"])
    busids = view["gpu_busids"]
    r = 0
    for node in nodes:
        for d in range(gpus):
            lines.append(f"#  Rank {r:2d} Group  0 Pid {_pid(node, d):6d} on {node:>10s} device {d:2d} "
                         f"[{busids[d]}] {view['gpu_name']}")
            r += 1
    lines.append("#")
    return lines


_TABLE_HEAD = [
    "#                                                              out-of-place                       in-place          ",
    "#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong ",
    "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)  (GB/s)  (GB/s)         ",
]


def _write_json(path: str, doc: Mapping[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def nccl_test(test: str, args: list[str], view: Mapping[str, Any], env: Mapping[str, str],
              out: Callable[[str], None] = print) -> int:
    """nccl-tests' ``<collective>_perf`` on the simulated nodes of ``env``: rank 0 prints the
    report through ``out`` (and writes ``-J FILE``); ``nccl_hang`` hangs, ``nccl_init_fail``
    fails naming its node (exit 1)."""
    import time

    collective = test[:-len("_perf")] if test.endswith("_perf") else test
    try:
        opts = _nccl_args(args)
        if "-h" in opts:
            out(_USAGE.format(test=test).rstrip("\n"))
            return 0
        lo = _size(opts.get("-b", "32M"))
        hi = _size(opts.get("-e", "32M"))
        factor = _int_opt(opts, "-f", 1)
        step_bytes = _size(opts.get("-i", "1M"))
        dtype = _TYPE_NAMES.get(opts.get("-d", "float"), opts.get("-d", "float"))
        if dtype not in _TYPE_SIZES:
            raise _Usage(f"invalid type {dtype}")
        op = opts.get("-o", "sum")
        check = _int_opt(opts, "-c", 1)
    except _Usage as e:
        print(f"{test}: {e}", file=sys.stderr)
        print(_USAGE.format(test=test), file=sys.stderr, end="")
        return 1
    me = rank(env)
    try:
        nodes = list(dict.fromkeys(test_nodes(env)))
    except Exception as e:  # noqa: BLE001 - a hostlist this node cannot read: say so, as srun would
        print(f"{test} (clusterkit sim): cannot read the test's nodes: {e}", file=sys.stderr)
        return 2
    entries = [node_entry(view, n) for n in nodes]
    mem = int(view.get("gpu_memory_mib") or 81559) * (1 << 20)
    limit = int(mem * 0.3104)
    reduced = hi > limit
    if reduced:
        hi = limit
    step = f"{factor}(factor)" if factor > 1 else f"{step_bytes}(bytes)"
    head = _header(test, opts, (lo, hi), step, view, nodes)
    if reduced:
        head += [f"# Reducing maxBytes to {hi} due to memory limitation", "#"]
    flush = getattr(sys.stdout, "flush", None)
    hang = any(e.get("hang") for e in entries)
    failing = next((n for n, e in zip(nodes, entries) if e.get("init_fail")), None)
    if failing is not None:
        if me == 0:
            pid = _pid(failing, 0)
            lines = head + [f"{failing}: Test NCCL failure common.cu:1279 'unhandled system error (run with "
                      "NCCL_DEBUG=INFO for details) / '",
                      f" .. {failing} pid {pid}: Test failure common.cu:1356",
                      f" .. {failing} pid {pid}: Test failure common.cu:1100"]
            out("\n".join(lines))
        return 1
    if hang:
        if me == 0:
            out("\n".join(head + _TABLE_HEAD))
            if flush is not None:
                flush()
        time.sleep(HANG_S)
        return 1
    if me != 0:
        return 0
    nranks = len(nodes) * int(view["gpus"])
    peak = collective_busbw(view, collective, nodes, env)
    h = RAMP_ONE_NODE if len(nodes) == 1 else RAMP_MULTI_NODE
    ratio = _bus_factor(collective, nranks)
    per_rank = collective in ("all_gather", "reduce_scatter", "alltoall")
    tsize = _TYPE_SIZES[dtype]
    redop = "none" if collective in ("all_gather", "alltoall") else op
    wrong = "0" if check else "N/A"
    wrong_ip = "N/A" if collective in ("alltoall", "sendrecv") else wrong
    rows: list[str] = []
    results: list[dict[str, Any]] = []
    busbws: list[float] = []
    size = lo
    while size <= hi and len(rows) < 200:
        count = size // tsize // nranks if per_rank else size // tsize
        shown = count * tsize * (nranks if per_rank else 1)
        if count > 0:
            ramp = (shown / (shown + h)) / (JUDGED_BYTES / (JUDGED_BYTES + h))
            halves = []
            cells = []
            for k, err in ((0, wrong), (1, wrong_ip)):
                bus = round(peak * ramp * (1.0 - 0.0004 * k), 2)
                alg = round(bus / ratio, 2)
                t_us = shown / (alg * 1e3) if alg > 0 else 0.0
                t_txt = f"{t_us:.6g}" if t_us < 1e6 else f"{t_us:.0f}"
                cells.append(f"  {t_txt:>7s}  {alg:6.2f}  {bus:6.2f}  {err:>6s}")
                halves.append({"time": float(t_txt), "alg_bw": alg, "bus_bw": bus,
                               "nwrong": 0.0 if err == "0" else None})
                busbws.append(bus)
            rows.append(f"{shown:12d}  {count:12d}  {dtype:>8s}  {redop:>6s}  {-1:6d}" + "".join(cells))
            results.append({"size": shown, "count": count, "type": dtype, "redop": redop, "root": "    -1",
                            "out_of_place": halves[0], "in_place": halves[1], "actual_iterations":
                            _int_opt(opts, "-n", 20), "experiment_name": ""})
        if factor > 1:
            size *= factor
        elif step_bytes > 0:
            size += step_bytes
        else:
            break
    avg = sum(busbws) / len(busbws) if busbws else 0.0
    lines = head + _TABLE_HEAD + rows + ["# Out of bounds values : 0 OK", f"# Avg bus bandwidth    : {avg:g} ", "#",
                                         f"# Collective test concluded: {test}", "#"]
    out("\n".join(lines))
    target = opts.get("-J")
    if target:
        devices = [{"rank": i * int(view["gpus"]) + d, "group": 0, "pid": _pid(n, d), "hostname": n, "device": d,
                    "device_hex": view["gpu_busids"][d], "device_info": view["gpu_name"]}
                   for i, n in enumerate(nodes) for d in range(int(view["gpus"]))]
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        doc = {"version": 2, "start_time": now, "args": [test] + list(args),
               "env": [f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("NCCL_")],
               "nccl_version": NCCL_CODE,
               "config": {"nthreads": _int_opt(opts, "-t", 1), "ngpus": _int_opt(opts, "-g", 1),
                          "minimum_bytes": lo, "maximum_bytes": hi,
                          **({"step_factor": factor} if factor > 1 else {"step_bytes": step_bytes}),
                          "warmup_iters": _int_opt(opts, "-w", 1), "iterations": _int_opt(opts, "-n", 20),
                          "aggregated_iterations": _int_opt(opts, "-m", 1), "validation": check,
                          "graph": _int_opt(opts, "-G", 0), "nranks": nranks, "devices": devices},
               "results": results,
               "out_of_bounds": {"count": 0, "okay": "true"},
               "average_bus_bandwidth": {"bandwidth": round(avg, 3), "okay": "unchecked"},
               "errors": [""], "end_time": now}
        try:
            _write_json(target, doc)
        except OSError as e:
            print(f"{test}: cannot write {target}: {e.strerror or e}", file=sys.stderr)
            return 1
    return 0


# ------------------------------------------------------------------ ib_write_bw
def _load_tools() -> Any:
    """clusterkit/sim/tools.py on its own (the standard library only)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools.py")
    spec = importlib.util.spec_from_file_location("clusterkit_sim_tools", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})


def ib_write_bw(args: list[str], view: Mapping[str, Any], env: Mapping[str, str]) -> int:
    """perftest's ``ib_write_bw`` on the node of ``env``: a loopback (host ``localhost`` or this
    node) measures this rail as node-check's stand-in does; a client whose host is another node
    measures :func:`ib_pair_gbps`; a server prints its banner."""
    node = this_node(env)
    entry = node_entry(view, node)
    node_view = {"devices": entry["rails"], "gpu_name": view["gpu_name"], "peermem": entry.get("peermem", True),
                 "dmabuf": entry.get("peermem", True)}

    def peer(host: str, device: str) -> Optional[tuple[Optional[float], str]]:
        if host in _LOOPBACK or host == node:
            return None
        port = "18515"
        for flag in ("-p", "--port"):
            if flag in args and args.index(flag) + 1 < len(args):
                port = args[args.index(flag) + 1]
        bw = ib_pair_gbps(view, node, host, device)
        if bw is None:
            return None, (f"Couldn't connect to {host}:{port}\n"
                          "Unable to open file descriptor for socket connection Unable to init the socket "
                          "connection")
        return bw, ""

    tools = _load_tools()
    rc: int = tools.ib_write_bw(args, view=node_view, peer=peer)
    return rc


def stand_in_main(tool: str, args: list[str], view_path: str) -> int:
    """The entry of the generated stand-ins (:func:`stand_in_dir`)."""
    view = _load_view(view_path)
    env = dict(os.environ)
    if tool == "ib_write_bw":
        return ib_write_bw(args, view, env)
    if tool in NCCL_TESTS:
        return nccl_test(tool, args, view, env)
    print(f"clusterkit sim: no fabric stand-in for {tool}", file=sys.stderr)
    return 127
