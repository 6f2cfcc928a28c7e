"""Launchers: run the tests of a localization round and report what each measured.

A launcher turns :class:`~clusterkit.nccl.models.NcclTest` s into
:class:`~clusterkit.nccl.models.Measured` s, evidence without a verdict::

    Launcher (Protocol)
        name: str
        run_round(tests, *, timeout, on_done=None) -> [Measured]   same order as ``tests``
        close()                                                    end whatever still runs

    SimLauncher(spec)            the simulator's stand-in executables, run here (one process per
                                 test; the stand-in computes every rank itself)
    SlurmLauncher(settings)      one ``srun`` step per test: inside the allocation when
                                 ``$SLURM_JOB_ID`` is set, else its own allocation of exactly the
                                 test's nodes (``--exclusive``); one task per GPU through srun's MPI
                                 plugin (``--mpi=pmix|pmi2|none``)
    MpirunSshLauncher(transport) ``mpirun --host a:8,b:8 …`` started on the test's first node over
                                 the transport (sites without Slurm)
    make_launcher(name, …)       one of the above by name: ``sim``, ``slurm``, ``mpirun``

All tests of a round run at once (at most ``settings.fanout``); a round never raises halfway: a
test that could not start is ``Measured(failure="launch", message=why)``. What each test runs:

* ``allreduce`` / ``single``: ``all_reduce_perf -b M -e M -f 2 -g G -n ITERS -w WARMUP -c 1``
  at the judged message size ``M``; ``allreduce`` forces the ring (``NCCL_ALGO=Ring``,
  ``NCCL_NVLS_ENABLE=0``) over the rails ``settings.ib_hca(nodes)`` names (``NCCL_IB_HCA``);
  a ``single`` test of algo ``nvls`` leaves NCCL its own choice (algorithm variables removed),
  one of algo ``ring`` forces the ring. Without nccl-tests (``nccl_tests_dir`` unset) the same
  test runs :mod:`clusterkit.nccl.torch_allreduce`, which prints the same format.
* ``ib_sweep``: ``ib_write_bw`` servers on ``nodes[1]`` (one per rail of ``nodes[0]``, TCP port
  ``base + i``), then the clients on ``nodes[0]``
  (``ib_write_bw -d DEV -i PORT -p TCP -s 8388608 --report_gbits -F NODES1``), all rails at once.

Hangs: every test has the round's timeout (a test still running then is ``hang``, its partial
output kept), and a test whose result is complete is ended after a grace (nccl-tests may hang
in its teardown): see :mod:`clusterkit.nccl.watchdog`. Output: nccl-tests' ``-J`` JSON where the
installed nccl-tests has it (probed once per launcher with ``-h``) and the file can be read here,
its text output otherwise; both go through :func:`~clusterkit.parsers.nccl_tests.parse_nccl_tests`
and :func:`measured_from_output`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Mapping, Optional, Protocol, Sequence

from clusterkit.errors import ParseError, TransportError, UsageError
from clusterkit.nccl.judge import busbw_at
from clusterkit.nccl.models import Measured, NcclTest
from clusterkit.nccl.watchdog import Watchdog, WatchResult, result_complete

if TYPE_CHECKING:
    from clusterkit.models import Node
    from clusterkit.parsers.nccl_tests import NcclRun
    from clusterkit.transport import Outcome, Task, Transport

#: NCCL variables a test's algorithm choice sets or removes
ALGO_VARS = ("NCCL_ALGO", "NCCL_NVLS_ENABLE")
#: srun's SIGTERM ends its step on every node; it gets this long before SIGKILL
SRUN_KILL_GRACE = 10.0
#: variables of the controller's environment a test must not inherit (the node's identity in
#: the simulator; a step of ours learns its nodes from Slurm)
_NODE_VARS = ("CLUSTERKIT_NODE", "CLUSTERKIT_SIM_NODES")


# --------------------------------------------------------------------------- settings
@dataclass
class IbWriteBwSettings:
    """How an ``ib_sweep`` test runs perftest's ``ib_write_bw``."""

    binary: str = "ib_write_bw"  # a path, or a name on the nodes' PATH
    size: int = 8 * 1024 * 1024  # -s: bytes per message
    report_gbits: bool = True  # --report_gbits (the parser converts MiB/s otherwise)
    base_port: int = 18515  # -p: the TCP port of rail i is base_port + i


@dataclass
class LaunchSettings:
    """What every launcher needs to know about the site (see the module docstring)."""

    #: the directory holding the nccl-tests binaries on the nodes; None: the torch fallback
    nccl_tests_dir: Optional[str] = None
    gpus_per_node: int = 8
    message_bytes: int = 8 << 30  # the judged size (-b = -e)
    iters: int = 20
    warmup_iters: int = 5
    check: int = 1  # nccl-tests -c: check the results (#wrong)
    #: srun --mpi= plugin: "pmix", "pmi2" (any plugin `srun --mpi=list` names), or "none"
    mpi: str = "pmix"
    #: more variables for every test (NCCL_SOCKET_IFNAME, NCCL_DEBUG, UCX_*, …)
    env: dict[str, str] = field(default_factory=dict)
    #: NCCL_IB_HCA for a test's nodes (None: leave it to NCCL); for ``allreduce`` tests
    ib_hca: Optional[Callable[[tuple[str, ...]], Optional[str]]] = None
    #: the rails (``mlx5_0`` or ``mlx5_0:1``) of a node, for ``ib_sweep`` tests
    rails: Optional[Callable[[str], list[str]]] = None
    ib_write_bw: IbWriteBwSettings = field(default_factory=IbWriteBwSettings)
    #: "auto": -J JSON when nccl-tests lists it and the file can be read here; else text
    output_format: Literal["auto", "text", "json"] = "auto"
    #: a directory the nodes and this machine share, for -J files of Slurm runs (None: text)
    json_dir: Optional[str] = None
    fanout: int = 64  # tests of a round run at once, at most this many
    grace_s: float = 5.0  # a test whose result is complete gets this long to exit by itself
    #: how to start the fallback when there is no nccl-tests (a python that has torch)
    torch_command: tuple[str, ...] = ("python3", "-m", "clusterkit.nccl.torch_allreduce")
    #: run nccl-tests under ``stdbuf -oL``: a result printed before a hang reaches us at once
    line_buffered: bool = True
    log_limit: int = 64 * 1024  # characters of output kept per test (head and tail)

    def gpus_for(self, test: NcclTest) -> int:
        return max(1, int(self.gpus_per_node))


# --------------------------------------------------------------------------- pure builders
def env_for_test(test: NcclTest, settings: LaunchSettings) -> dict[str, Optional[str]]:
    """The variables a test sets (a value) or removes (None), on top of the launcher's."""
    env: dict[str, Optional[str]] = dict(settings.env)
    if test.kind == "allreduce" or (test.kind == "single" and test.algo == "ring"):
        env["NCCL_ALGO"] = "Ring"
        env["NCCL_NVLS_ENABLE"] = "0"
    elif test.kind == "single":  # nvls: NCCL's own choice
        for name in ALGO_VARS:
            env[name] = None
    if test.kind == "allreduce" and settings.ib_hca is not None:
        hca = settings.ib_hca(test.nodes)
        if hca:
            env["NCCL_IB_HCA"] = hca
    return env


def apply_env(base: Mapping[str, str], changes: Mapping[str, Optional[str]]) -> dict[str, str]:
    out = dict(base)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def program(settings: LaunchSettings, collective: str = "all_reduce_perf") -> list[str]:
    """The benchmark's argv head: nccl-tests' binary (line-buffered), else the torch fallback."""
    if settings.nccl_tests_dir is None:
        return list(settings.torch_command)
    binary = os.path.join(settings.nccl_tests_dir, collective)
    return ["stdbuf", "-oL", "-eL", binary] if settings.line_buffered else [binary]


def nccl_args(test: NcclTest, settings: LaunchSettings, *, gpus_per_process: int = 1,
              json_path: Optional[str] = None) -> list[str]:
    """nccl-tests' options for a test: one message size, the iterations, the check."""
    size = str(int(settings.message_bytes))
    args = ["-b", size, "-e", size, "-f", "2", "-g", str(gpus_per_process), "-n", str(settings.iters),
            "-w", str(settings.warmup_iters), "-c", str(settings.check)]
    if json_path is not None:
        args += ["-J", json_path]
    return args


def supports_json(help_text: str) -> bool:
    """Whether ``all_reduce_perf -h`` lists ``-J`` (``-J,--output_file <file>``)."""
    return bool(re.search(r"(?:^|[\s\[])-J\b|--output_file", help_text))


def split_rail(rail: str) -> tuple[str, str]:
    """``mlx5_0:1`` -> (``mlx5_0``, ``1``); ``mlx5_0`` -> (``mlx5_0``, ``1``)."""
    dev, _, port = rail.partition(":")
    return dev, (port if port.isdigit() else "1")


def ib_server_argv(rail: str, index: int, settings: LaunchSettings) -> list[str]:
    ib = settings.ib_write_bw
    dev, port = split_rail(rail)
    argv = [ib.binary, "-d", dev, "-i", port, "-p", str(ib.base_port + index), "-s", str(ib.size)]
    if ib.report_gbits:
        argv.append("--report_gbits")
    return [*argv, "-F"]


def ib_client_argv(rail: str, index: int, server: str, settings: LaunchSettings) -> list[str]:
    return [*ib_server_argv(rail, index, settings), server]


def srun_argv(test: NcclTest, settings: LaunchSettings, *, timeout: float, srun: str = "srun",
              new_allocation: bool = False, partition: Optional[str] = None,
              reservation: Optional[str] = None, gres: Optional[str] = "gpu",
              job_name: str = "clusterkit-nccl") -> list[str]:
    """srun's options for one test's step: its nodes, one task per GPU (per node for an
    ``ib_sweep``), the MPI plugin; its own exclusive allocation when not inside one."""
    from clusterkit.hostlist import fold

    n = len(test.nodes)
    per_node = 1 if test.kind == "ib_sweep" else settings.gpus_for(test)
    argv = [srun, f"--job-name={job_name}", f"--nodes={n}", f"--ntasks={n * per_node}",
            f"--ntasks-per-node={per_node}", f"--nodelist={fold(list(test.nodes))}",
            f"--mpi={'none' if test.kind == 'ib_sweep' else settings.mpi}",
            f"--kill-on-bad-exit={0 if test.kind == 'ib_sweep' else 1}", "--export=ALL", "--exclusive"]
    if new_allocation:
        argv.append(f"--time={max(1, math.ceil(timeout / 60.0)) + 1}")
        if partition:
            argv.append(f"--partition={partition}")
    if reservation:
        argv.append(f"--reservation={reservation}")
    if gres and test.kind != "ib_sweep":
        argv.append(f"--gres={gres}:{per_node}")
    return argv


def mpirun_argv(test: NcclTest, settings: LaunchSettings, *, mpirun: str = "mpirun",
                export: Sequence[str] = (), extra: Sequence[str] = ()) -> list[str]:
    """``mpirun`` over the test's nodes, one rank per GPU, the named variables exported."""
    g = settings.gpus_for(test)
    argv = [mpirun, "--host", ",".join(f"{n}:{g}" for n in test.nodes), "-np", str(g * len(test.nodes)),
            "--bind-to", "none"]
    for name in export:
        argv += ["-x", name]
    return [*argv, *extra, *program(settings), *nccl_args(test, settings)]


# --------------------------------------------------------------------------- output -> Measured
_FAILED_NODE = re.compile(r"^\s*(?:\.\.\s*)?([A-Za-z0-9][A-Za-z0-9._-]*)(?: pid \d+)?:\s")
_LAUNCH_TEXT = re.compile(
    r"execve\(\)|No such file or directory|command not found|Permission denied|"
    r"srun: error: (?!.*: tasks? [0-9,\-]+: )|Unable to allocate resources|Invalid (?:node|partition)|"
    r"Requested node configuration is not available|mpirun (?:was unable|could not)|"
    r"(?:ORTE|PRTE) (?:was unable|has lost)|not enough slots|could not (?:find|access) .*executable|"
    r"Host key verification failed|ssh: connect to host|Could not resolve hostname", re.I)


def failed_node(lines: Sequence[str]) -> Optional[str]:
    """The node the first failure line names (``cnode2-016: Test NCCL failure …`` or
    ``.. cnode2-016 pid 340134: Test failure …``)."""
    for line in lines:
        m = _FAILED_NODE.match(line)
        if m:
            return m.group(1)
    return None


def _one_line(text: str, n: int = 300) -> str:
    return " ".join(text.split())[:n]


def _tail(text: str, n: int = 300) -> str:
    return " ".join(text.strip()[-n:].split())


def trim_log(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit // 4
    return text[:head] + f"\n[… {len(text) - limit} characters left out …]\n" + text[-(limit - head):]


def _launch_line(text: str) -> Optional[str]:
    for line in text.splitlines():
        if _LAUNCH_TEXT.search(line):
            return line.strip()
    return None


def tool_time_s(run: NcclRun, settings: LaunchSettings) -> Optional[float]:
    """The tool's own time for the run: each half's time x (iters + warmup), summed (s)."""
    cfg = run.config
    iters = (cfg.iters if cfg is not None and cfg.iters is not None else settings.iters)
    warmup = (cfg.warmup_iters if cfg is not None and cfg.warmup_iters is not None else settings.warmup_iters)
    total, known = 0.0, False
    for r in run.rows:
        for half in (r.out_of_place, r.in_place):
            if half is not None and half.time_us is not None:
                total += half.time_us * (iters + warmup)
                known = True
    return round(total / 1e6, 6) if known else None


def measured_from_output(test: NcclTest, rc: int, stdout: str, stderr: str, timed_out: bool,
                         duration: float, settings: LaunchSettings, *,
                         json_text: Optional[str] = None) -> Measured:
    """What a test's output says (see the module docstring): a result (busbw at the judged
    size, #wrong), or why there is none: ``hang`` (timed out without a result), ``init`` (a
    failure before any data row, naming its node), ``crash`` (a failure after rows, or output
    that is no nccl-tests output), ``launch`` (the benchmark never ran)."""
    from clusterkit.parsers.nccl_tests import parse_nccl_tests

    log = trim_log(stdout + (("\n" + stderr) if stderr.strip() else ""), settings.log_limit)
    base = Measured(test=test, duration_s=round(duration, 3), log=log)
    run: Optional[NcclRun] = None
    for text in (json_text, stdout):
        if not text or not text.strip():
            continue
        try:
            runs = parse_nccl_tests(text).runs
        except ParseError:
            continue
        if runs:
            picked = [r for r in runs if r.collective == "all_reduce"] or runs
            run = picked[-1]
            break
    if run is None:
        if timed_out:
            base.failure, base.message = "hang", f"no result after {duration:.0f} s"
            return base
        why = _launch_line(stderr) or _launch_line(stdout)
        if rc in (126, 127) or why:
            base.failure = "launch"
            base.message = _one_line(why or f"exit {rc}: {_tail(stderr or stdout)}")
            return base
        base.failure = "crash"
        base.message = (f"exit {rc}, no nccl-tests output: {_tail(stderr or stdout) or '(nothing printed)'}")
        return base
    base.test_time_s = tool_time_s(run, settings)
    if run.complete:
        busbw = busbw_at(run, settings.message_bytes)
        base.busbw_gbps = busbw
        base.wrong = run.wrong_total
        ranks = f" over {run.nranks} ranks" if run.nranks else ""
        if busbw is None:
            base.message = f"no result row at or below {settings.message_bytes} bytes{ranks}"
        else:
            base.message = f"busbw {busbw:g} GB/s at {settings.message_bytes} bytes{ranks}"
        if run.wrong_total:
            base.message += f", {run.wrong_total} wrong elements"
        return base
    failures = list(run.failures)
    if not failures and stderr:
        try:
            failures = [f for r in parse_nccl_tests(stderr).runs for f in r.failures]
        except ParseError:
            failures = []
    if failures:
        base.failure = "crash" if run.rows else "init"
        base.failed_node = failed_node(failures)
        primary = next((f for f in failures if "Test failure " not in f), failures[0])
        base.message = _one_line(primary)
        return base
    if timed_out:
        base.failure = "hang"
        base.message = f"no result after {duration:.0f} s" + (f" ({len(run.rows)} rows printed)" if run.rows else "")
        return base
    why = _launch_line(stderr)
    if why and not run.rows and not run.devices:
        base.failure, base.message = "launch", _one_line(why)
        return base
    base.failure = "crash"
    base.message = _one_line(f"{run.error or 'incomplete output'} (exit {rc}): {_tail(stderr or stdout, 200)}")
    return base


def measured_ib_sweep(test: NcclTest, per_rail: Mapping[str, tuple[Optional[int], str, str, bool]],
                      duration: float, settings: LaunchSettings) -> Measured:
    """An ``ib_sweep``'s result from each rail's client (rc or None when it could not start,
    stdout, stderr, timed out): ``rails_gbps[dev]`` = the average bandwidth, else
    ``rails_failed[dev]`` = why there is none."""
    from clusterkit.parsers.perftest import parse_ib_write_bw

    m = Measured(test=test, duration_s=round(duration, 3))
    logs = []
    not_started = 0
    for rail, (rc, out, err, timed_out) in per_rail.items():
        logs.append(f"== {rail} (exit {rc})\n{out}{err}")
        if rc is None or rc in (126, 127):  # never ran (127: not found, as a shell says)
            not_started += 1
            m.rails_failed[rail] = _one_line(err or out) or "could not start"
            continue
        bw: Optional[float] = None
        why = ""
        try:
            parsed = parse_ib_write_bw(out + ("\n" + err if err else ""))
            bw = parsed.max_bw_avg_gbps
            if bw is None and parsed.rows:
                bw = parsed.rows[-1].bw_avg_gbps
            why = parsed.error or ""
        except ParseError as e:
            why = str(e)
        if bw is not None and rc == 0:
            m.rails_gbps[rail] = bw
        else:
            if timed_out:
                why = f"no result within {duration:.0f} s"
            m.rails_failed[rail] = _one_line(why or f"exit {rc}: {_tail(err or out)}") or f"exit {rc}"
    m.log = trim_log("\n".join(logs), settings.log_limit)
    if per_rail and not_started == len(per_rail):
        m.failure = "launch"
        m.message = f"ib_write_bw could not start: {next(iter(m.rails_failed.values()))}"
    elif not per_rail:
        m.failure, m.message = "launch", "no rails to test"
    else:
        parts = [f"{r} {g:g} Gb/s" for r, g in m.rails_gbps.items()]
        parts += [f"{r}: {why}" for r, why in m.rails_failed.items()]
        m.message = _one_line("; ".join(parts), 500)
    return m


# --------------------------------------------------------------------------- the protocol
class Launcher(Protocol):
    name: str

    def run_round(self, tests: Sequence[NcclTest], *, timeout: float,
                  on_done: Optional[Callable[[Measured], None]] = None) -> list[Measured]: ...

    def close(self) -> None: ...


class _BaseLauncher:
    """A round's tests side by side (at most ``settings.fanout``), in order, never raising."""

    name = "base"

    def __init__(self, settings: Optional[LaunchSettings] = None) -> None:
        self.settings = settings or LaunchSettings()
        self._watchdog = Watchdog()
        self._closed = threading.Event()
        self._json: Optional[bool] = None
        self._json_lock = threading.Lock()

    def ib_sweep(self, test: NcclTest, timeout: float) -> Measured:
        """An ib_sweep test on its first node's rails (or why it cannot run): :meth:`_ib_sweep`."""
        if len(test.nodes) < 2:
            return Measured(test=test, failure="launch", message="ib_sweep needs two nodes")
        if self.settings.rails is None:
            return Measured(test=test, failure="launch", message=f"no rail list for {test.nodes[0]}")
        rails = list(self.settings.rails(test.nodes[0]))
        if not rails:
            return Measured(test=test, failure="launch", message=f"no rails on {test.nodes[0]}")
        return self._ib_sweep(test, rails, timeout)

    def _ib_sweep(self, test: NcclTest, rails: list[str], timeout: float) -> Measured:  # pragma: no cover
        raise NotImplementedError

    def run_one(self, test: NcclTest, timeout: float) -> Measured:  # pragma: no cover - abstract
        raise NotImplementedError

    def _guarded(self, test: NcclTest, timeout: float) -> Measured:
        started = time.monotonic()
        if self._closed.is_set():
            return Measured(test=test, failure="launch", message="the launcher was closed")
        try:
            return self.run_one(test, timeout)
        except Exception as e:  # noqa: BLE001 - one test's problem must not lose the round
            return Measured(test=test, failure="launch", duration_s=round(time.monotonic() - started, 3),
                            message=_one_line(f"{type(e).__name__}: {e}"))

    def run_round(self, tests: Sequence[NcclTest], *, timeout: float,
                  on_done: Optional[Callable[[Measured], None]] = None) -> list[Measured]:
        tests = list(tests)
        if not tests:
            return []
        results: list[Optional[Measured]] = [None] * len(tests)
        lock = threading.Lock()

        def one(i: int) -> None:
            m = self._guarded(tests[i], timeout)
            with lock:
                results[i] = m
                if on_done is not None:
                    try:
                        on_done(m)
                    except Exception:  # noqa: BLE001 - a progress callback must not stop the round
                        pass

        workers = max(1, min(len(tests), int(self.settings.fanout)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ck-nccl-{self.name}") as pool:
            list(pool.map(one, range(len(tests))))
        return [m if m is not None else Measured(test=t, failure="launch", message="not run")
                for m, t in zip(results, tests)]

    def close(self) -> None:
        self._closed.set()
        self._watchdog.kill_all()

    # ----------------------------------------------------------------- shared helpers
    def _use_json(self, probe_argv: Optional[list[str]], env: Mapping[str, str]) -> bool:
        """-J or not, decided once: the setting, else whether ``-h`` lists it."""
        fmt = self.settings.output_format
        if fmt == "text" or probe_argv is None:
            return False
        with self._json_lock:
            if self._json is None:
                try:
                    r = self._watchdog.run([*probe_argv, "-h"], env=env, timeout=15.0, grace=0.0)
                    self._json = supports_json(r.stdout + r.stderr)
                except OSError:
                    self._json = False
                if fmt == "json" and not self._json:
                    self._json = True  # asked for: the binary's answer decides at run time
            return self._json

    def _watched(self, test: NcclTest, argv: list[str], env: Mapping[str, str], timeout: float,
                 json_path: Optional[str], kill_grace: float = 5.0) -> Measured:
        s = self.settings

        def done(out: str) -> bool:
            if result_complete(out):
                return True
            return json_path is not None and _json_complete(json_path)

        try:
            r: WatchResult = self._watchdog.run(argv, env=env, timeout=timeout, done=done, grace=s.grace_s,
                                                kill_grace=kill_grace)
        except OSError as e:
            return Measured(test=test, failure="launch",
                            message=_one_line(f"cannot run {argv[0]}: {e.strerror or e}"))
        json_text = _read_json(json_path) if json_path is not None else None
        return measured_from_output(test, r.rc, r.stdout, r.stderr, r.timed_out, r.duration_s, s,
                                    json_text=json_text)


def _json_complete(path: str) -> bool:
    text = _read_json(path)
    if not text or "average_bus_bandwidth" not in text:
        return False
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _read_json(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


# --------------------------------------------------------------------------- the simulator
def _stand_in_dir(spec: str) -> str:
    try:
        from clusterkit.sim.fabric import stand_in_dir
    except ImportError as e:
        raise UsageError(f"the simulator's fabric stand-ins are not available ({e})") from None
    return str(stand_in_dir(spec))


class SimLauncher(_BaseLauncher):
    """The simulator's stand-ins (``clusterkit.sim.fabric.stand_in_dir(spec)``), run here.

    Each test runs one stand-in process with ``CLUSTERKIT_SIM=spec``, ``CLUSTERKIT_NODE`` = its
    first node and ``CLUSTERKIT_SIM_NODES`` = its nodes; the stand-in plays every rank (``-g G``
    for a ``single`` test)."""

    name = "sim"

    def __init__(self, spec: str, settings: Optional[LaunchSettings] = None, *,
                 bin_dir: Optional[str] = None) -> None:
        super().__init__(settings)
        self.spec = spec
        self.bin_dir = bin_dir or _stand_in_dir(spec)
        self._tmp: Optional[str] = None  # where -J files go (made when first needed)

    def _env(self, nodes: Sequence[str], node: str, changes: Mapping[str, Optional[str]]) -> dict[str, str]:
        from clusterkit.hostlist import fold

        base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        base.update({"CLUSTERKIT_SIM": self.spec, "CLUSTERKIT_NODE": node,
                     "CLUSTERKIT_SIM_NODES": fold(list(nodes), sort=False)})
        return apply_env(base, changes)

    def run_one(self, test: NcclTest, timeout: float) -> Measured:
        if test.kind == "ib_sweep":
            return self.ib_sweep(test, timeout)
        binary = os.path.join(self.bin_dir, "all_reduce_perf")
        env = self._env(test.nodes, test.nodes[0], env_for_test(test, self.settings))
        json_path = None
        if self._use_json([binary], env):
            with self._json_lock:
                if self._tmp is None:
                    self._tmp = tempfile.mkdtemp(prefix="ck-nccl-sim-")
            json_path = os.path.join(self._tmp, f"{_safe(test.key)}-{time.monotonic_ns()}.json")
        g = self.settings.gpus_for(test) if test.kind == "single" else 1
        argv = [binary, *nccl_args(test, self.settings, gpus_per_process=g, json_path=json_path)]
        try:
            return self._watched(test, argv, env, timeout, json_path)
        finally:
            if json_path is not None:
                _unlink(json_path)

    def _ib_sweep(self, test: NcclTest, rails: list[str], timeout: float) -> Measured:
        s = self.settings
        started = time.monotonic()
        client, server = test.nodes[0], test.nodes[1]
        ib = IbWriteBwSettings(binary=os.path.join(self.bin_dir, "ib_write_bw"), size=s.ib_write_bw.size,
                               report_gbits=s.ib_write_bw.report_gbits, base_port=s.ib_write_bw.base_port)
        local = LaunchSettings(ib_write_bw=ib)
        deadline = started + timeout
        servers: list[threading.Thread] = []
        for i, rail in enumerate(rails):
            argv = ib_server_argv(rail, i, local)
            env = self._env(test.nodes, server, {})
            t = threading.Thread(target=self._quiet, args=(argv, env, timeout), daemon=True,
                                 name="ck-ib-server")
            t.start()
            servers.append(t)
        per_rail: dict[str, tuple[Optional[int], str, str, bool]] = {}

        def client_run(i: int) -> None:
            argv = ib_client_argv(rails[i], i, server, local)
            env = self._env(test.nodes, client, {})
            try:
                r = self._watchdog.run(argv, env=env, timeout=max(1.0, deadline - time.monotonic()), grace=0.0)
                per_rail[rails[i]] = (r.rc, r.stdout, r.stderr, r.timed_out)
            except OSError as e:
                per_rail[rails[i]] = (None, "", f"cannot run {argv[0]}: {e.strerror or e}", False)

        if rails:
            with ThreadPoolExecutor(max_workers=min(len(rails), 16), thread_name_prefix="ck-ib-client") as pool:
                list(pool.map(client_run, range(len(rails))))
        for t in servers:
            t.join(timeout=max(0.0, min(5.0, deadline - time.monotonic())))
        ordered = {r: per_rail[r] for r in rails if r in per_rail}
        return measured_ib_sweep(test, ordered, time.monotonic() - started, s)

    def _quiet(self, argv: list[str], env: Mapping[str, str], timeout: float) -> None:
        try:
            self._watchdog.run(argv, env=env, timeout=timeout, grace=0.0)
        except OSError:
            pass

    def close(self) -> None:
        super().close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:80] or "test"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- Slurm
#: An ib_sweep step's fixed script (POSIX sh; ``$1`` the server node, ``$2`` the ib_write_bw
#: binary, ``$3`` seconds a server waits at most, ``$4`` message size, ``$5`` 1 for
#: --report_gbits; then triples DEVICE IB_PORT TCP_PORT). The task on the server node starts a
#: server per rail; the task on the other node runs the clients side by side (retrying a
#: connection the server did not accept yet) and prints each one's output between
#: ``@@ck-rail DEVICE:IB_PORT`` and ``@@ck-rail-end DEVICE:IB_PORT RC``.
IB_SWEEP_SCRIPT = r'''server=$1 bin=$2 secs=$3 size=$4 gbits=$5
shift 5
me=${SLURMD_NODENAME:-$(hostname -s)}
if [ "$me" = "$server" ]; then
    while [ $# -ge 3 ]; do
        if [ "$gbits" = 1 ]; then
            timeout "$secs" "$bin" -d "$1" -i "$2" -p "$3" -s "$size" --report_gbits -F >/dev/null 2>&1 &
        else
            timeout "$secs" "$bin" -d "$1" -i "$2" -p "$3" -s "$size" -F >/dev/null 2>&1 &
        fi
        shift 3
    done
    wait
    exit 0
fi
tmp=$(mktemp -d) || exit 125
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/order"
while [ $# -ge 3 ]; do
    printf '%s %s %s\n' "$1" "$2" "$3" >>"$tmp/order"
    (
        n=0
        while :; do
            if [ "$gbits" = 1 ]; then
                "$bin" -d "$1" -i "$2" -p "$3" -s "$size" --report_gbits -F "$server" >"$tmp/$3.out" 2>&1
            else
                "$bin" -d "$1" -i "$2" -p "$3" -s "$size" -F "$server" >"$tmp/$3.out" 2>&1
            fi
            rc=$?
            n=$((n + 1))
            if [ "$rc" -eq 0 ] || [ "$n" -ge 10 ] || ! grep -q "Couldn't connect" "$tmp/$3.out"; then
                break
            fi
            sleep 1
        done
        echo "$rc" >"$tmp/$3.rc"
    ) &
    shift 3
done
wait
while read -r dev ibport tcpport; do
    echo "@@ck-rail $dev:$ibport"
    cat "$tmp/$tcpport.out"
    echo "@@ck-rail-end $dev:$ibport $(cat "$tmp/$tcpport.rc" 2>/dev/null || echo 125)"
done <"$tmp/order"
'''
#: An ib_write_bw client over SSH, retried (at most 10 times, half a second apart) while its
#: server does not accept the connection yet: readiness polled with a bound, no fixed wait.
IB_CLIENT_RETRY = r'''n=0
while :; do
    out=$("$@" 2>&1)
    rc=$?
    n=$((n + 1))
    if [ "$rc" -eq 0 ] || [ "$n" -ge 10 ] || ! printf '%s\n' "$out" | grep -q "Couldn't connect"; then
        break
    fi
    sleep 0.5
done
printf '%s\n' "$out"
exit "$rc"
'''
_RAIL_START = re.compile(r"^@@ck-rail (\S+)\s*$")
_RAIL_END = re.compile(r"^@@ck-rail-end (\S+) (-?\d+)\s*$")


def split_rails_output(stdout: str) -> dict[str, tuple[int, str]]:
    """The ib_sweep script's output: rail -> (client's exit status, its output)."""
    out: dict[str, tuple[int, str]] = {}
    cur: Optional[str] = None
    buf: list[str] = []
    for line in stdout.splitlines():
        m = _RAIL_START.match(line)
        if m:
            cur, buf = m.group(1), []
            continue
        m = _RAIL_END.match(line)
        if m and cur is not None:
            out[cur] = (int(m.group(2)), "\n".join(buf) + "\n")
            cur = None
            continue
        if cur is not None:
            buf.append(line)
    return out


def ib_sweep_argv(test: NcclTest, rails: Sequence[str], settings: LaunchSettings, *,
                  timeout: float) -> list[str]:
    """The argv after srun's options for an ib_sweep step (the fixed script and its words)."""
    ib = settings.ib_write_bw
    words = [test.nodes[1], ib.binary, str(max(1, int(timeout))), str(ib.size), "1" if ib.report_gbits else "0"]
    for i, rail in enumerate(rails):
        dev, port = split_rail(rail)
        words += [dev, port, str(ib.base_port + i)]
    return ["/bin/sh", "-c", IB_SWEEP_SCRIPT, "clusterkit-ib-sweep", *words]


class SlurmLauncher(_BaseLauncher):
    """One ``srun`` step per test (see the module docstring); the test's environment reaches
    every task through srun's own (``--export=ALL``)."""

    name = "slurm"

    def __init__(self, settings: Optional[LaunchSettings] = None, *, partition: Optional[str] = None,
                 reservation: Optional[str] = None, gres: Optional[str] = "gpu",
                 env: Optional[Mapping[str, str]] = None, srun: str = "srun",
                 new_allocation: Optional[bool] = None, job_name: str = "clusterkit-nccl") -> None:
        super().__init__(settings)
        from clusterkit.slurm.srun import in_allocation

        self.partition = partition
        self.reservation = reservation
        self.gres = gres
        self.env = dict(env or {})
        self.srun = srun
        self.job_name = job_name
        base = {**os.environ, **self.env}
        self.new_allocation = (not in_allocation(base)) if new_allocation is None else new_allocation

    def step_env(self, changes: Mapping[str, Optional[str]]) -> dict[str, str]:
        env = apply_env({**os.environ, **self.env}, changes)
        for name in _NODE_VARS:  # each task learns its node (and the step's nodes) from Slurm
            env.pop(name, None)
        return env

    def srun_argv(self, test: NcclTest, timeout: float) -> list[str]:
        return srun_argv(test, self.settings, timeout=timeout, srun=self.srun,
                         new_allocation=self.new_allocation, partition=self.partition,
                         reservation=self.reservation, gres=self.gres, job_name=self.job_name)

    def run_one(self, test: NcclTest, timeout: float) -> Measured:
        if test.kind == "ib_sweep":
            return self.ib_sweep(test, timeout)
        s = self.settings
        env = self.step_env(env_for_test(test, s))
        head = program(s)
        json_path = None
        if s.nccl_tests_dir is not None and s.json_dir is not None and os.path.isfile(head[-1]) \
                and self._use_json([head[-1]], env):
            json_path = os.path.join(s.json_dir, f"clusterkit-{_safe(test.key)}-{os.getpid()}-"
                                                 f"{time.monotonic_ns()}.json")
        argv = [*self.srun_argv(test, timeout), *head, *nccl_args(test, s, json_path=json_path)]
        try:
            m = self._watched(test, argv, env, timeout, json_path, kill_grace=SRUN_KILL_GRACE)
        finally:
            if json_path is not None:
                _unlink(json_path)
        return self._allocation_wait(m, timeout)

    def _allocation_wait(self, m: Measured, timeout: float) -> Measured:
        """A test that never got its allocation is ``launch``, not a hang of its nodes."""
        if m.failure == "hang" and "queued and waiting for resources" in m.log and \
                "# Using devices" not in m.log and "nThread" not in m.log:
            m.failure = "launch"
            m.message = f"no allocation within {timeout:g}s: the nodes are busy or reserved"
        return m

    def _ib_sweep(self, test: NcclTest, rails: list[str], timeout: float) -> Measured:
        s = self.settings
        argv = [*self.srun_argv(test, timeout), *ib_sweep_argv(test, rails, s, timeout=max(5.0, timeout - 5))]
        try:
            r = self._watchdog.run(argv, env=self.step_env({}), timeout=timeout, grace=0.0,
                                   kill_grace=SRUN_KILL_GRACE)
        except OSError as e:
            return Measured(test=test, failure="launch",
                            message=_one_line(f"cannot run {argv[0]}: {e.strerror or e}"))
        got = split_rails_output(r.stdout)
        per_rail: dict[str, tuple[Optional[int], str, str, bool]] = {}
        for rail in rails:
            dev, port = split_rail(rail)
            key = f"{dev}:{port}"
            if key in got:
                per_rail[rail] = (got[key][0], got[key][1], "", False)
            elif r.timed_out:
                per_rail[rail] = (-1, "", "", True)
            else:
                why = _launch_line(r.stderr) or f"srun exit {r.rc}: {_tail(r.stderr or r.stdout)}"
                per_rail[rail] = (None, "", why, False)
        m = measured_ib_sweep(test, per_rail, r.duration_s, s)
        if r.stderr.strip():
            m.log = trim_log(m.log + "\n" + r.stderr, s.log_limit)
        return self._allocation_wait(m, timeout)


def render_batch(test: NcclTest, settings: LaunchSettings, **params: object) -> str:
    """The ``nccl`` sbatch script (clusterkit/slurm/templates/nccl.sbatch.j2) that runs ``test``
    as a batch job: its nodes, one task per GPU, the judged size, the test's environment.
    ``params`` are more template parameters (partition, account, time, output_file, …)."""
    from clusterkit.hostlist import fold
    from clusterkit.slurm.templates import render

    if test.kind == "ib_sweep":
        raise UsageError("an ib_sweep test has no batch script (the nccl template runs nccl-tests)")
    if settings.nccl_tests_dir is None:
        raise UsageError("the nccl batch template runs nccl-tests: set nccl_tests_dir")
    env = {k: v for k, v in env_for_test(test, settings).items() if v is not None}
    given = params.pop("sbatch_options", None)
    options = [str(o) for o in given] if isinstance(given, (list, tuple)) else []
    options.append(f"--nodelist={fold(list(test.nodes))}")
    p: dict[str, object] = {
        "job_name": "clusterkit-nccl", "nodes": len(test.nodes), "gpus_per_node": settings.gpus_for(test),
        "nccl_tests_dir": settings.nccl_tests_dir, "test": "all_reduce_perf",
        "min_bytes": str(settings.message_bytes), "max_bytes": str(settings.message_bytes),
        "iters": settings.iters, "warmup_iters": settings.warmup_iters, "check": settings.check,
        "mpi": settings.mpi, "env": env, "extra_args": ["-g", "1"], "sbatch_options": options,
    }
    p.update(params)
    return render("nccl", p)


# --------------------------------------------------------------------------- mpirun over SSH
#: variables every mpirun passes to its ranks besides the test's own
MPIRUN_EXPORT = ("PATH", "LD_LIBRARY_PATH")


class MpirunSshLauncher(_BaseLauncher):
    """``mpirun`` from each test's first node, over a transport (SSH): a :class:`Task` whose
    nodes are the test's nodes; the environment goes through the transport's own mechanism and
    on to the ranks with ``-x NAME``. Output is nccl-tests' text (a -J file would stay on the
    node). A test that hangs after its result costs its timeout here (no watchdog on the node)."""

    name = "mpirun"

    def __init__(self, transport: Transport, settings: Optional[LaunchSettings] = None, *,
                 remote_mpirun: str = "mpirun", mpirun_args: Sequence[str] = (),
                 nodes: Optional[Mapping[str, Node]] = None) -> None:
        super().__init__(settings)
        self.transport = transport
        self.remote_mpirun = remote_mpirun
        self.mpirun_args = list(mpirun_args)
        self.nodes = dict(nodes or {})

    def _node(self, name: str) -> Node:
        from clusterkit.models import Node

        return self.nodes.get(name) or Node(name=name)

    def argv(self, test: NcclTest) -> list[str]:
        env = env_for_test(test, self.settings)
        export = [*MPIRUN_EXPORT, *(k for k, v in env.items() if v is not None and k not in MPIRUN_EXPORT)]
        return mpirun_argv(test, self.settings, mpirun=self.remote_mpirun, export=export,
                           extra=self.mpirun_args)

    def _run_tasks(self, tasks: list[Task]) -> dict[str, Outcome]:
        return dict(self.transport.run_tasks(tasks, fanout=max(1, len(tasks))))

    def run_one(self, test: NcclTest, timeout: float) -> Measured:
        from clusterkit.transport import CommandResult, Task

        if test.kind == "ib_sweep":
            return self.ib_sweep(test, timeout)
        env = {k: v for k, v in env_for_test(test, self.settings).items() if v is not None}
        task = Task(key=test.key, nodes=tuple(self._node(n) for n in test.nodes),
                    argv=self.argv(test), timeout=timeout, env=env)
        started = time.monotonic()
        outcome = self._run_tasks([task]).get(test.key)
        took = time.monotonic() - started
        if isinstance(outcome, CommandResult):
            return measured_from_output(test, outcome.rc, outcome.stdout, outcome.stderr, False,
                                        outcome.duration_s, self.settings)
        if isinstance(outcome, TransportError):
            if outcome.kind == "timeout":
                return measured_from_output(test, -1, outcome.stdout, outcome.stderr, True, took,
                                            self.settings)
            return Measured(test=test, failure="launch", duration_s=round(took, 3),
                            message=_one_line(f"{test.nodes[0]}: {outcome}"),
                            log=trim_log(outcome.output_tail(self.settings.log_limit), self.settings.log_limit))
        return Measured(test=test, failure="launch", message="the transport returned no outcome")

    def _ib_sweep(self, test: NcclTest, rails: list[str], timeout: float) -> Measured:
        from clusterkit.transport import CommandResult, Task

        s = self.settings
        started = time.monotonic()
        client, server = self._node(test.nodes[0]), self._node(test.nodes[1])
        secs = str(max(1, int(timeout)))
        servers = [Task(key=f"server-{i}", nodes=(server,),
                        argv=["timeout", secs, *ib_server_argv(r, i, s)], timeout=timeout)
                   for i, r in enumerate(rails)]
        clients = [Task(key=f"client-{i}", nodes=(client,),
                        argv=["/bin/sh", "-c", IB_CLIENT_RETRY, "clusterkit-ib-client",
                              *ib_client_argv(r, i, test.nodes[1], s)], timeout=timeout)
                   for i, r in enumerate(rails)]
        done_servers: dict[str, Outcome] = {}
        th = threading.Thread(target=lambda: done_servers.update(self._run_tasks(list(servers))) if servers else None,
                              daemon=True, name="ck-ib-servers")
        th.start()  # the clients retry until a server listens (IB_CLIENT_RETRY)
        outcomes = self._run_tasks(list(clients)) if clients else {}
        th.join(timeout=5.0)
        per_rail: dict[str, tuple[Optional[int], str, str, bool]] = {}
        for i, rail in enumerate(rails):
            o = outcomes.get(f"client-{i}")
            if isinstance(o, CommandResult):
                per_rail[rail] = (o.rc, o.stdout, o.stderr, False)
            elif isinstance(o, TransportError):
                if o.kind == "timeout":
                    per_rail[rail] = (-1, o.stdout, o.stderr, True)
                else:
                    per_rail[rail] = (None, "", str(o), False)
            else:
                per_rail[rail] = (None, "", "no outcome", False)
        return measured_ib_sweep(test, per_rail, time.monotonic() - started, s)


# --------------------------------------------------------------------------- by name
LAUNCHERS = ("sim", "slurm", "mpirun")


def make_launcher(name: str, *, settings: Optional[LaunchSettings] = None, spec: Optional[str] = None,
                  transport: Optional[Transport] = None, **options: object) -> Launcher:
    """A launcher by name: ``sim`` (needs ``spec``), ``slurm`` (SlurmLauncher's options as
    keywords), ``mpirun`` (needs ``transport``)."""
    if name == "sim":
        if not spec:
            raise UsageError("the sim launcher needs a simulated fleet ('builtin' or a fleet file)")
        return SimLauncher(spec, settings, **options)  # type: ignore[arg-type]
    if name == "slurm":
        return SlurmLauncher(settings, **options)  # type: ignore[arg-type]
    if name == "mpirun":
        if transport is None:
            raise UsageError("the mpirun launcher needs a transport to reach the nodes")
        return MpirunSshLauncher(transport, settings, **options)  # type: ignore[arg-type]
    raise UsageError(f"unknown launcher {name!r}; one of: {', '.join(LAUNCHERS)}")


__all__ = ["Launcher", "LaunchSettings", "IbWriteBwSettings", "SimLauncher", "SlurmLauncher",
           "MpirunSshLauncher", "make_launcher", "measured_from_output", "measured_ib_sweep",
           "render_batch", "env_for_test", "nccl_args", "srun_argv", "mpirun_argv", "ib_sweep_argv",
           "ib_server_argv", "ib_client_argv", "supports_json", "failed_node", "split_rails_output",
           "program", "LAUNCHERS"]
