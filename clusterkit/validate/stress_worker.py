"""The stress worker: bf16 GEMM TFLOPS and device-to-device copy bandwidth of one GPU.

Run by the ``stress`` domain through the tool runner, one process per GPU, all GPUs at once::

    python3 -m clusterkit.validate.stress_worker --gpu 3 --seconds 10 [--tests gemm,hbm]

and prints **one JSON line** on stdout (the contract, :data:`SCHEMA`)::

    {"schema": "clusterkit.stress-worker/v1", "gpu": 3, "backend": "torch 2.11.0+cu130",
     "device": "NVIDIA H200", "pci_bus_id": "0000:19:00.0", "skipped": null, "error": null,
     "gemm": {"tflops": 791.2, "dtype": "bfloat16", "shape": [8192, 8192, 8192], "ms": 1.39,
              "iters": 5120, "finite": true, "shapes": [{"shape": [...], "tflops": ...}, ...],
              "error": null},
     "hbm": {"gbps": 4310.5, "bytes": 2147483648, "ms": 0.996, "iters": 2400, "error": null},
     "seconds": 14.2}

* ``skipped`` (exit 0): no GPU library to measure with (neither torch nor cupy importable, or a
  CPU-only torch); the reason is the text.
* ``error`` (exit 1): the measurement could not run (no such GPU, CUDA failed to initialise);
  a test that failed on its own has its ``error`` inside its object instead.
* ``gemm.tflops``: the best shape's median over timed batches; ``hbm.gbps``: bytes read plus
  bytes written per second (STREAM's copy convention), GB = 1e9 bytes.

The method is what reaches the hardware's best: large, square-ish bf16 products (cuBLAS picks
its Hopper kernels for them) on random data (zeros run faster than real data), warm-up first
(module load, cuBLAS handle, heuristics), CUDA events around batches of back-to-back launches,
the median batch; the copy moves buffers many times the L2 cache. The worker imports the GPU
library itself, so node-check never does: a hung CUDA call hangs this process alone, and the
deadline kills it. Only the standard library is imported at the top.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

SCHEMA = "clusterkit.stress-worker/v1"
TESTS = ("gemm", "hbm")
#: (M, N, K) of the products timed; the best one is reported. 8192 cubed is the usual probe
#: (769-798 TFLOP/s measured on an H200 through torch); 2048 x 2048 x 13312 was the best shape of
#: a MAMF search on H100 (794.5 TFLOP/s, stas00 ml-engineering, compute/accelerator).
GEMM_SHAPES: tuple[tuple[int, int, int], ...] = ((8192, 8192, 8192), (2048, 2048, 13312), (4096, 4096, 8192))
#: device-to-device copy: each buffer this size (several times the 50-60 MB L2), less when the
#: GPU has less free memory
HBM_BYTES = 2 * 1024**3
#: timed batches per measurement; the median batch is reported
BATCHES = 5
WARMUP = 3
#: share of --seconds given to the GEMM (the copy gets the rest)
GEMM_SHARE = 0.65


# ----------------------------------------------------------------------------------- backends
class Backend:
    """What the measurement needs from a GPU library; :class:`TorchBackend` and
    :class:`CupyBackend` implement it (tests use a fake)."""

    name = "none"
    dtype = "bfloat16"

    def describe(self) -> dict[str, Any]:
        return {}

    def free_bytes(self) -> Optional[int]:
        return None

    def gemm(self, m: int, n: int, k: int) -> tuple[Callable[[], None], Callable[[], bool]]:
        """(run one product, check the last result is finite)."""
        raise NotImplementedError

    def copy(self, nbytes: int) -> Callable[[], None]:
        raise NotImplementedError

    def time_ms(self, fn: Callable[[], None], iters: int) -> float:
        """Milliseconds for ``iters`` back-to-back calls, timed with device events."""
        raise NotImplementedError

    def release(self) -> None:
        pass


class TorchBackend(Backend):
    def __init__(self, torch: Any, index: int) -> None:
        self.torch = torch
        self.index = index
        self.dev = torch.device("cuda", index)
        torch.cuda.set_device(self.dev)
        self.name = f"torch {torch.__version__}"
        self.dtype = "bfloat16"
        self._keep: list[Any] = []

    def describe(self) -> dict[str, Any]:
        props = self.torch.cuda.get_device_properties(self.dev)
        out: dict[str, Any] = {"device": str(props.name)}
        bus = getattr(props, "pci_bus_id", None)
        dom = getattr(props, "pci_domain_id", None)
        devid = getattr(props, "pci_device_id", None)
        if isinstance(bus, int) and isinstance(dom, int) and isinstance(devid, int):
            out["pci_bus_id"] = f"{dom:04x}:{bus:02x}:{devid:02x}.0"
        return out

    def free_bytes(self) -> Optional[int]:
        try:
            return int(self.torch.cuda.mem_get_info(self.dev)[0])
        except Exception:  # noqa: BLE001 - optional
            return None

    def gemm(self, m: int, n: int, k: int) -> tuple[Callable[[], None], Callable[[], bool]]:
        t = self.torch
        a = t.randn(m, k, device=self.dev, dtype=t.bfloat16)
        b = t.randn(k, n, device=self.dev, dtype=t.bfloat16)
        c = t.empty(m, n, device=self.dev, dtype=t.bfloat16)
        self._keep = [a, b, c]

        def run() -> None:
            t.matmul(a, b, out=c)

        def finite() -> bool:
            return bool(t.isfinite(c).all().item())

        return run, finite

    def copy(self, nbytes: int) -> Callable[[], None]:
        t = self.torch
        n = nbytes // 2
        src = t.randn(n, device=self.dev, dtype=t.bfloat16)
        dst = t.empty_like(src)
        self._keep = [src, dst]

        def run() -> None:
            dst.copy_(src)

        return run

    def time_ms(self, fn: Callable[[], None], iters: int) -> float:
        t = self.torch
        start, end = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    def release(self) -> None:
        self._keep = []
        try:
            self.torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort
            pass


class CupyBackend(Backend):
    """CuPy has no bfloat16: its products are float16, which Hopper's tensor cores run at the
    bf16 rate (dense 989 TFLOP/s both, by the datasheet)."""

    def __init__(self, cp: Any, index: int) -> None:
        self.cp = cp
        self.index = index
        self.device = cp.cuda.Device(index)
        self.device.use()
        self.name = f"cupy {cp.__version__}"
        self.dtype = "float16"
        self._keep: list[Any] = []

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            props = self.cp.cuda.runtime.getDeviceProperties(self.index)
            name = props.get("name")
            out["device"] = name.decode() if isinstance(name, bytes) else str(name)
            out["pci_bus_id"] = str(self.device.pci_bus_id)
        except Exception:  # noqa: BLE001 - optional facts
            pass
        return out

    def free_bytes(self) -> Optional[int]:
        try:
            return int(self.cp.cuda.runtime.memGetInfo()[0])
        except Exception:  # noqa: BLE001
            return None

    def gemm(self, m: int, n: int, k: int) -> tuple[Callable[[], None], Callable[[], bool]]:
        cp = self.cp
        rng = cp.random.default_rng(1234 + self.index)
        a = rng.standard_normal((m, k), dtype=cp.float32).astype(cp.float16)
        b = rng.standard_normal((k, n), dtype=cp.float32).astype(cp.float16)
        c = cp.empty((m, n), dtype=cp.float16)
        self._keep = [a, b, c]

        def run() -> None:
            cp.matmul(a, b, out=c)

        def finite() -> bool:
            return bool(cp.isfinite(c).all().item())

        return run, finite

    def copy(self, nbytes: int) -> Callable[[], None]:
        cp = self.cp
        src = cp.random.default_rng(99).random(nbytes // 4, dtype=cp.float32)
        dst = cp.empty_like(src)
        self._keep = [src, dst]
        size = src.nbytes

        def run() -> None:
            dst.data.copy_from_device_async(src.data, size)

        return run

    def time_ms(self, fn: Callable[[], None], iters: int) -> float:
        cp = self.cp
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return float(cp.cuda.get_elapsed_time(start, end))

    def release(self) -> None:
        self._keep = []
        try:
            self.cp.get_default_memory_pool().free_all_blocks()
        except Exception:  # noqa: BLE001
            pass


def _import(name: str) -> Any:
    return importlib.import_module(name)


def select_gpu(gpu: int, environ: Optional[dict[str, str]] = None) -> int:
    """Make CUDA's numbering nvidia-smi's (PCI bus order) and keep this process to its GPU:
    with no ``CUDA_VISIBLE_DEVICES`` it becomes ``gpu`` and the library's index 0; when the node
    already restricts the visible GPUs (a Slurm step), ``gpu`` indexes that list."""
    env = os.environ if environ is None else environ
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if env.get("CUDA_VISIBLE_DEVICES") is None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        return 0
    return gpu


def load_backend(gpu: int, importer: Callable[[str], Any] = _import) -> tuple[Optional[Backend], Optional[str]]:
    """(backend, None), or (None, why it skips). Raises for a library that is there but cannot
    reach the GPU (the caller reports an error)."""
    index = select_gpu(gpu)
    why: list[str] = []
    try:
        torch = importer("torch")
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install
        why.append(f"torch: {_one_line(e)}")
    else:
        if getattr(getattr(torch, "version", None), "cuda", None) is None:
            why.append(f"torch {torch.__version__} is a CPU-only build")
        else:
            count = int(torch.cuda.device_count())
            if index >= count:
                raise RuntimeError(f"torch sees {count} GPU{'s' if count != 1 else ''}: no GPU {gpu} "
                                   f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
            return TorchBackend(torch, index), None
    try:
        cp = importer("cupy")
    except Exception as e:  # noqa: BLE001
        why.append(f"cupy: {_one_line(e)}")
    else:
        count = int(cp.cuda.runtime.getDeviceCount())
        if index >= count:
            raise RuntimeError(f"cupy sees {count} GPU{'s' if count != 1 else ''}: no GPU {gpu}")
        return CupyBackend(cp, index), None
    return None, (f"neither torch nor cupy can be used by {sys.executable} ({'; '.join(why)}); "
                  "CLUSTERKIT_STRESS_PYTHON names an interpreter that has them")


# -------------------------------------------------------------------------------- measuring
def gemm_flops(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def _batches(backend: Backend, fn: Callable[[], None], seconds: float) -> tuple[float, int]:
    """(median milliseconds per call, calls timed): warm-up, a short probe to size the batches,
    then :data:`BATCHES` batches filling ``seconds``."""
    for _ in range(WARMUP):
        fn()
    probe_ms = backend.time_ms(fn, 3) / 3
    per_call = max(probe_ms, 1e-4)
    iters = max(1, int(seconds * 1000.0 / BATCHES / per_call))
    times = [backend.time_ms(fn, iters) / iters for _ in range(BATCHES)]
    return float(statistics.median(times)), iters * BATCHES


def measure_gemm(backend: Backend, seconds: float,
                 shapes: Sequence[tuple[int, int, int]] = GEMM_SHAPES) -> dict[str, Any]:
    """The best shape's median TFLOP/s; ``finite`` is false when a product held NaN or Inf
    (random normal inputs cannot give one: the arithmetic is wrong)."""
    per_shape = max(0.2, seconds / max(1, len(shapes)))
    rows: list[dict[str, Any]] = []
    best: Optional[dict[str, Any]] = None
    finite = True
    iters = 0
    for m, n, k in shapes:
        run, is_finite = backend.gemm(m, n, k)
        ms, count = _batches(backend, run, per_shape)
        iters += count
        ok = is_finite()
        finite = finite and ok
        tflops = gemm_flops(m, n, k) / (ms / 1000.0) / 1e12
        row: dict[str, Any] = {"shape": [m, n, k], "tflops": round(tflops, 1), "ms": round(ms, 4), "finite": ok}
        rows.append(row)
        if best is None or tflops > best["tflops"]:
            best = row
    backend.release()
    assert best is not None
    return {"tflops": best["tflops"], "dtype": backend.dtype, "shape": best["shape"], "ms": best["ms"],
            "iters": iters, "finite": finite, "shapes": rows, "error": None}


def measure_hbm(backend: Backend, seconds: float, nbytes: int = HBM_BYTES) -> dict[str, Any]:
    """Device-to-device copy: (bytes read + bytes written) per second, in GB/s (1e9)."""
    free = backend.free_bytes()
    if free is not None:
        nbytes = min(nbytes, int(free * 0.4) // 2)
    nbytes = max(64 * 1024**2, nbytes - nbytes % (1024**2))
    run = backend.copy(nbytes)
    ms, count = _batches(backend, run, seconds)
    backend.release()
    gbps = 2.0 * nbytes / (ms / 1000.0) / 1e9
    return {"gbps": round(gbps, 1), "bytes": nbytes, "ms": round(ms, 4), "iters": count, "error": None}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:400]


def run(gpu: int, seconds: float, tests: Sequence[str],
        loader: Callable[[int], tuple[Optional[Backend], Optional[str]]] = load_backend) -> tuple[dict[str, Any], int]:
    """The JSON document and the exit code (0 measured or skipped, 1 error)."""
    started = time.monotonic()
    doc: dict[str, Any] = {"schema": SCHEMA, "gpu": gpu, "backend": None, "device": None, "pci_bus_id": None,
                           "skipped": None, "error": None}
    for t in tests:
        doc[t] = None
    try:
        backend, why = loader(gpu)
    except Exception as e:  # noqa: BLE001 - the library is there but cannot reach the GPU
        doc["error"] = _one_line(e)
        doc["seconds"] = round(time.monotonic() - started, 3)
        return doc, 1
    if backend is None:
        doc["skipped"] = why
        doc["seconds"] = round(time.monotonic() - started, 3)
        return doc, 0
    doc["backend"] = backend.name
    try:
        doc.update({k: v for k, v in backend.describe().items() if k in ("device", "pci_bus_id")})
    except Exception:  # noqa: BLE001 - optional facts
        pass
    share = {"gemm": GEMM_SHARE, "hbm": 1.0 - GEMM_SHARE} if len(tests) > 1 else {t: 1.0 for t in tests}
    rc = 0
    for t in tests:
        budget = max(0.5, seconds * share[t])
        try:
            doc[t] = measure_gemm(backend, budget) if t == "gemm" else measure_hbm(backend, budget)
        except Exception as e:  # noqa: BLE001 - CUDA errors, out of memory: this test's error
            doc[t] = {"error": _one_line(e)}
            rc = 1
            try:
                backend.release()
            except Exception:  # noqa: BLE001
                pass
    doc["seconds"] = round(time.monotonic() - started, 3)
    return doc, rc


def dumps(doc: dict[str, Any]) -> str:
    """One line of JSON; a non-finite float is written as null (JSON has no NaN)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(doc), separators=(",", ":"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="clusterkit-stress-worker",
                                 description="Measure one GPU's bf16 GEMM TFLOP/s and copy bandwidth; "
                                             "print one JSON line.")
    ap.add_argument("--gpu", type=int, required=True, help="GPU index (nvidia-smi's numbering)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of timed load, all tests together")
    ap.add_argument("--tests", default=",".join(TESTS), help="comma-separated: gemm, hbm")
    args = ap.parse_args(argv)
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    unknown = [t for t in tests if t not in TESTS]
    if unknown or not tests or args.gpu < 0 or not (0 < args.seconds <= 3600):
        ap.error(f"bad arguments: tests {tests} (one of {', '.join(TESTS)}), gpu >= 0, 0 < seconds <= 3600")
    doc, rc = run(args.gpu, args.seconds, tests)
    sys.stdout.write(dumps(doc) + "\n")
    sys.stdout.flush()
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
