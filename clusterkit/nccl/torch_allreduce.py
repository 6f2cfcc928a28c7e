"""An all-reduce benchmark with torch.distributed (NCCL backend), for nodes without nccl-tests.

::

    torchrun --nproc_per_node=8 -m clusterkit.nccl.torch_allreduce -b 8G -e 8G -n 20 -w 5
    srun --ntasks-per-node=8 python -m clusterkit.nccl.torch_allreduce -b 8G -e 8G -n 20 -w 5

It prints nccl-tests' text format (rank 0 prints), so the same parser reads it, and uses the same
definitions: algbw = bytes / time (GB/s, 10^9 bytes/s), busbw = algbw x 2(n-1)/n over n ranks.
With one rank busbw is 0, exactly as nccl-tests prints it (a single GPU moves nothing over a
bus); algbw is still measured.

What differs from ``all_reduce_perf``: torch's all-reduce works in place, so only the in-place
half of each row is measured and the out-of-place half reads ``N/A``; time is the slowest rank's
mean over the timed iterations (CUDA-synchronised wall time); ``#wrong`` counts elements that
differ from the expected sum after one checked all-reduce (``-c 1``, every rank contributing 1s).

Rank and world size come from torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, with
``MASTER_ADDR`` / ``MASTER_PORT``) or from srun (``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID``; the rendezvous is the step's first node, port ``MASTER_PORT`` or one derived
from the job and step ids). torch is imported only when the benchmark runs; the helpers above
:func:`main` are pure.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

#: bytes per element of the data types offered (``-d``), as nccl-tests names them
TYPE_SIZES = {"float": 4, "half": 2, "bfloat16": 2, "double": 8, "int32": 4, "int64": 8}
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([KMGTkmgt]?)(?:[iI]?[bB])?\s*$")
DEFAULT_PORT = 29500


# --------------------------------------------------------------------------- pure helpers
def parse_size(text: str) -> int:
    """nccl-tests' size syntax: a whole number with an optional K, M, G or T (1024-based):
    ``8G`` = 8 GiB. Raises ValueError for anything else."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (a whole number, optionally with K, M, G or T)")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]


def sizes(min_bytes: int, max_bytes: int, factor: int = 2, step_bytes: int = 0) -> list[int]:
    """The message sizes of a run: from ``min_bytes`` to ``max_bytes``, multiplied by ``factor``
    (or increased by ``step_bytes`` when given), as nccl-tests steps them."""
    if min_bytes <= 0 or max_bytes < min_bytes:
        raise ValueError(f"bad size range {min_bytes}..{max_bytes}")
    out = []
    size = min_bytes
    while size <= max_bytes:
        out.append(size)
        if step_bytes > 0:
            size += step_bytes
        elif factor > 1:
            size *= factor
        else:
            break
    return out


def bandwidths(size_bytes: int, time_s: float, nranks: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s for an all-reduce of ``size_bytes`` taking ``time_s`` over
    ``nranks`` ranks: algbw = bytes / time, busbw = algbw x 2(n-1)/n (0 for one rank)."""
    if time_s <= 0 or nranks <= 0:
        raise ValueError("time and ranks must be positive")
    algbw = size_bytes / time_s / 1e9
    return algbw, algbw * 2.0 * (nranks - 1) / nranks


def _num(value: float) -> str:
    """A time or bandwidth cell as nccl-tests prints it (%7.2f, or %7.1f / %7.0f when wide)."""
    for prec in (2, 1, 0):
        text = f"{value:.{prec}f}"
        if len(text) <= 7:
            return f"{text:>7}"
    return f"{value:.0f}"


def header(*, min_bytes: int, max_bytes: int, factor: int, iters: int, warmup: int, check: int,
           devices: Sequence[Mapping[str, Any]], version: str = "") -> str:
    """The lines nccl-tests prints before its table (the parser reads the config and devices)."""
    lines = [f"# clusterkit torch_allreduce{(' ' + version) if version else ''}",
             "# Collective test starting: all_reduce_perf",
             f"# nThread 1 nGpus 1 minBytes {min_bytes} maxBytes {max_bytes} step: {factor}(factor) "
             f"warmup iters: {warmup} iters: {iters} agg iters: 1 validation: {check} graph: 0",
             "#", "# Using devices"]
    for d in devices:
        lines.append(f"#  Rank {int(d['rank']):2d} Group  0 Pid {int(d['pid']):6d} on {d['host']:>10} "
                     f"device {int(d['device']):2d} [{d.get('busid') or '0000:00:00'}] {d.get('name') or 'GPU'}")
    lines += ["#",
              "#                                                              out-of-place"
              "                       in-place          ",
              "#       size         count      type   redop    root     time   algbw   busbw  #wrong"
              "     time   algbw   busbw  #wrong ",
              "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)        "
              "     (us)  (GB/s)  (GB/s)         "]
    return "\n".join(lines) + "\n"


def row(size_bytes: int, count: int, dtype: str, time_us: float, algbw: float, busbw: float,
        wrong: Optional[int]) -> str:
    """One table row: the out-of-place half ``N/A`` (not measured), the in-place half measured."""
    na = f"{'N/A':>7}"
    wrong_cell = f"{wrong:6d}" if wrong is not None else f"{'N/A':>6}"
    return (f"{size_bytes:12d}  {count:12d}  {dtype:>8}  {'sum':>6}  {-1:6d}  "
            f"{na} {na} {na}  {'N/A':>6}  {_num(time_us)} {_num(algbw)} {_num(busbw)}  {wrong_cell}")


def footer(busbws: Sequence[float], wrong_total: int) -> str:
    avg = sum(busbws) / len(busbws) if busbws else 0.0
    return (f"# Out of bounds values : {wrong_total} {'FAILED' if wrong_total else 'OK'}\n"
            f"# Avg bus bandwidth    : {avg:g} \n#\n"
            "# Collective test concluded: all_reduce_perf\n#\n")


@dataclass(frozen=True)
class Ranks:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def ranks_from_env(env: Mapping[str, str]) -> Ranks:
    """Rank, world size, local rank and rendezvous from torchrun's or srun's environment (one
    process alone when neither is there)."""
    def num(*names: str, default: int) -> int:
        for n in names:
            v = env.get(n, "")
            if v.strip().isdigit():
                return int(v)
        return default

    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world, local = num("RANK", default=0), num("WORLD_SIZE", default=1), \
            num("LOCAL_RANK", default=0)
    else:
        rank, world = num("SLURM_PROCID", default=0), num("SLURM_NTASKS", "SLURM_NPROCS", default=1)
        local = num("SLURM_LOCALID", default=0)
    addr = env.get("MASTER_ADDR", "")
    if not addr:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
        if nodelist and world > 1:
            from clusterkit.hostlist import expand

            addr = expand(nodelist)[0]
        else:
            addr = "127.0.0.1"
    port = num("MASTER_PORT", default=0)
    if not port:
        job, step = num("SLURM_JOB_ID", "SLURM_JOBID", default=0), num("SLURM_STEP_ID", "SLURM_STEPID", default=0)
        port = 20000 + (job * 131 + step) % 20000 if job else DEFAULT_PORT
    return Ranks(rank, max(1, world), local, addr, port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clusterkit.nccl.torch_allreduce",
                                description="all-reduce bandwidth with torch.distributed (NCCL), "
                                            "printed as nccl-tests prints it")
    p.add_argument("-b", "--minbytes", type=parse_size, default=parse_size("32M"))
    p.add_argument("-e", "--maxbytes", type=parse_size, default=parse_size("32M"))
    p.add_argument("-f", "--stepfactor", type=int, default=2)
    p.add_argument("-i", "--stepbytes", type=parse_size, default=0)
    p.add_argument("-n", "--iters", type=int, default=20)
    p.add_argument("-w", "--warmup_iters", type=int, default=5)
    p.add_argument("-c", "--check", type=int, default=1)
    p.add_argument("-d", "--datatype", choices=sorted(TYPE_SIZES), default="float")
    p.add_argument("-g", "--ngpus", type=int, default=1, help="GPUs per process: only 1 is supported")
    return p


# --------------------------------------------------------------------------- the benchmark
def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:  # pragma: no cover - needs GPUs
    import importlib

    torch: Any = importlib.import_module("torch")  # imported here only: node-side, optional
    dist: Any = importlib.import_module("torch.distributed")
    if args.ngpus != 1:
        print("torch_allreduce: one GPU per process (-g 1); start one process per GPU", file=sys.stderr)
        return 2
    r = ranks_from_env(env)
    if not torch.cuda.is_available():
        print(f"{socket.gethostname()}: Test CUDA failure torch_allreduce: no CUDA device", flush=True)
        return 1
    device = r.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(device)
    dtype = {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
             "double": torch.float64, "int32": torch.int32, "int64": torch.int64}[args.datatype]
    try:
        dist.init_process_group("nccl", init_method=f"tcp://{r.master_addr}:{r.master_port}",
                                rank=r.rank, world_size=r.world_size,
                                device_id=torch.device("cuda", device))
    except TypeError:  # torch < 2.3 has no device_id
        dist.init_process_group("nccl", init_method=f"tcp://{r.master_addr}:{r.master_port}",
                                rank=r.rank, world_size=r.world_size)
    except Exception as e:  # noqa: BLE001 - printed as nccl-tests prints a failure
        print(f"{socket.gethostname()}: Test NCCL failure torch_allreduce init '{e}'", flush=True)
        return 1
    host = socket.gethostname().split(".")[0]
    props = torch.cuda.get_device_properties(device)
    busid = ""
    try:
        import pynvml  # optional

        pynvml.nvmlInit()
        uuid = str(props.uuid) if hasattr(props, "uuid") else ""
        h = pynvml.nvmlDeviceGetHandleByUUID(("GPU-" + uuid) if uuid and not uuid.startswith("GPU-") else uuid)
        busid = pynvml.nvmlDeviceGetPciInfo(h).busId
        busid = busid.decode() if isinstance(busid, bytes) else str(busid)
        busid = busid[4:-2] if len(busid) >= 12 else busid
    except Exception:  # noqa: BLE001 - the bus id is decoration
        busid = ""
    me = {"rank": r.rank, "pid": os.getpid(), "host": host, "device": device, "busid": busid or None,
          "name": props.name}
    everyone: list[Any] = [None] * r.world_size
    dist.all_gather_object(everyone, me)
    tsize = TYPE_SIZES[args.datatype]
    todo = sizes(args.minbytes, args.maxbytes, args.stepfactor, args.stepbytes)
    if r.rank == 0:
        sys.stdout.write(header(min_bytes=args.minbytes, max_bytes=args.maxbytes, factor=args.stepfactor,
                                iters=args.iters, warmup=args.warmup_iters, check=args.check,
                                devices=sorted(everyone, key=lambda d: d["rank"]),
                                version=f"(torch {torch.__version__}, NCCL "
                                        f"{'.'.join(map(str, torch.cuda.nccl.version()))})"))
        sys.stdout.flush()
    busbws: list[float] = []
    wrong_total = 0
    for size in todo:
        count = max(1, size // tsize)
        nbytes = count * tsize
        buf = torch.ones(count, dtype=dtype, device="cuda")
        for _ in range(args.warmup_iters):
            dist.all_reduce(buf)
        torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(buf)
        torch.cuda.synchronize()
        elapsed = torch.tensor([(time.perf_counter() - t0) / max(1, args.iters)], dtype=torch.float64,
                               device="cuda")
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's time
        wrong: Optional[int] = None
        if args.check:
            buf.fill_(1)
            dist.all_reduce(buf)
            bad = (buf != r.world_size).sum()
            dist.all_reduce(bad)
            wrong = int(bad.item())
            wrong_total += wrong
        del buf
        torch.cuda.empty_cache()
        t = float(elapsed.item())
        algbw, busbw = bandwidths(nbytes, t, r.world_size)
        busbws.append(busbw)
        if r.rank == 0:
            print(row(nbytes, count, args.datatype, t * 1e6, algbw, busbw, wrong), flush=True)
    if r.rank == 0:
        sys.stdout.write(footer(busbws, wrong_total))
        sys.stdout.flush()
    dist.destroy_process_group()
    return 1 if wrong_total else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.maxbytes < args.minbytes:
        print("torch_allreduce: -e is below -b", file=sys.stderr)
        return 2
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        # could not run (not a failure of the node's GPUs or network): exit 127, as a shell
        # does for a missing command
        print(f"torch_allreduce: torch is not installed for {sys.executable}", file=sys.stderr)
        return 127
    return run(args, os.environ)


if __name__ == "__main__":
    raise SystemExit(main())
