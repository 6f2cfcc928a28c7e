"""A real VictoriaMetrics on 127.0.0.1 for the telemetry tests and benchmarks.

VictoriaMetrics takes InfluxDB v2 writes (``/api/v2/write``, gzip, any org/bucket/token) and
is read back through its own API (it answers no Flux): ``GET /internal/force_flush``, then
``GET /api/v1/export?match[]=…`` (JSON lines). Measurement ``gpu`` + field ``value`` arrive as
metric ``gpu_value``; tags become labels; timestamps are kept in milliseconds. Without
``-dedup.minScrapeInterval`` it keeps every sample, duplicates with the same timestamp included
— which lets a test count that every point arrived exactly once::

    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    ...write to vm.url...
    rows = vm.export('{__name__="gpu_value"}', expect=32)   # polls until 32 samples are there
    vm.stop(); vm.start()                                   # an outage, same data directory

Port: ``PORT_BASE + PORT_STRIDE * N + slot`` for pytest-xdist worker ``gwN``; the first slot
whose port is free right now (another pytest run on this machine may hold one). Benchmarks use
:data:`BENCH_PORT_BASE`. The process is a child of this one; its PID is kept in ``pid`` and in
``<data dir>/../victoria-metrics.pid`` and only that PID is ever signalled. Needs the
``victoria-metrics`` binary (Debian's package; ``scripts/test`` installs it as root):
:func:`unavailable_reason` says why not, for a clean skip.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BINARY = "victoria-metrics"
HOST = "127.0.0.1"
PORT_BASE = 18400   # below Linux's ephemeral range; the Slurm test clusters use 26800+
PORT_STRIDE = 20    # ports per pytest-xdist worker
SLOTS = 20
BENCH_PORT_BASE = 18700


class VmError(RuntimeError):
    """VictoriaMetrics did not start, stop or answer (details, with the log's tail, inside)."""


def find_binary() -> str | None:
    return shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if os.access(f"/usr/bin/{BINARY}", os.X_OK) else None)


def unavailable_reason() -> str | None:
    if find_binary() is None:
        return f"no {BINARY} binary (apt-get install victoria-metrics; scripts/test does it as root)"
    return None


def worker_index(env: Mapping[str, str] | None = None) -> int:
    worker = (os.environ if env is None else env).get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker[2:] if worker.startswith("gw") else ""
    return int(digits) if digits.isdigit() else 0


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(base: int | None = None, slots: int = SLOTS, exclude: Sequence[int] = ()) -> int:
    """The first free port of this worker's range (or of ``base``…``base+slots-1``)."""
    first = PORT_BASE + PORT_STRIDE * worker_index() if base is None else base
    for port in range(first, first + slots):
        if port not in exclude and port_free(port):
            return port
    raise VmError(f"no free port in {first}-{first + slots - 1} on {HOST}")


_LIVE: weakref.WeakSet[VictoriaMetrics] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # a test run that dies still stops what it started
    for vm in list(_LIVE):
        try:
            vm.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class VictoriaMetrics:
    """One VictoriaMetrics process on ``HOST:port`` with its data in ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else free_port()
        self.extra_args = list(extra_args)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.pid_path = self.data_dir.parent / f"{self.data_dir.name}.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        binary = find_binary()
        if binary is None:
            raise VmError(unavailable_reason() or "no binary")
        return [binary, f"-storageDataPath={self.data_dir}", f"-httpListenAddr={HOST}:{self.port}",
                "-retentionPeriod=100y", "-search.latencyOffset=0s", "-search.disableCache",
                "-loggerLevel=WARN", *self.extra_args]

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self, timeout: float = 15.0) -> "VictoriaMetrics":
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not port_free(self.port):
            raise VmError(f"port {HOST}:{self.port} is taken")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()
        self.pid_path.write_text(f"{self.proc.pid}\n")
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VmError(f"victoria-metrics exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise VmError(f"victoria-metrics did not answer /health within {timeout:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to our PID (it flushes and exits), SIGKILL after ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.proc = None
        _LIVE.discard(self)
        try:
            self.pid_path.unlink()
        except OSError:
            pass
        # the port is free once the process is gone; wait for the kernel to agree
        deadline = time.monotonic() + 5
        while not port_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> "VictoriaMetrics":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading back
    def _get(self, path: str, params: Sequence[tuple[str, str]] = (), timeout: float = 10.0) -> bytes:
        query = urllib.parse.urlencode(list(params))
        with urllib.request.urlopen(f"{self.url}{path}" + (f"?{query}" if query else ""), timeout=timeout) as r:
            return r.read()

    def flush(self) -> None:
        self._get("/internal/force_flush")

    def export(self, match: str, *, expect: int | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every series matching ``match`` (a series selector) as export JSON objects
        (``metric``, ``values``, ``timestamps``). With ``expect``: poll (flushing each time)
        until that many samples are there, or the timeout; then return what is there."""
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            body = self._get("/api/v1/export", [("match[]", match)])
            rows = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            if expect is None or samples(rows) >= expect or time.monotonic() >= deadline:
                if expect is not None and samples(rows) < expect:
                    return rows
                if expect is not None:
                    # settle: a late batch could still add duplicates; look once more
                    time.sleep(0.2)
                    self.flush()
                    body = self._get("/api/v1/export", [("match[]", match)])
                    rows = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                return rows
            time.sleep(0.1)


def samples(rows: Sequence[Mapping[str, Any]]) -> int:
    """How many samples export rows hold."""
    return sum(len(r.get("values", ())) for r in rows)
