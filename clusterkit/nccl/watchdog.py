"""Running one test's command here, with a timeout and an end once its result is complete.

nccl-tests is known to hang after printing its result (in ``ncclCommDestroy``, ``MPI_Finalize``,
or an srun step whose other tasks never exit). A test must not cost its whole timeout for that:
:func:`run_watched` streams the command's output, and once ``done(stdout)`` says the result is
complete it gives the command ``grace`` seconds to exit by itself, then sends SIGTERM to its
process group (srun turns that into ending its job step on every node), waits ``kill_grace``
seconds, and sends SIGKILL. Such a run is ``ended_after_result``: a normal result, not a hang.

A command still running at ``timeout`` is ended the same way and is ``timed_out``; its partial
output is kept. Every command starts in its own session, so the whole group (background children
included) is ended, and :meth:`Watchdog.kill_all` ends every command still running (Ctrl-C).

Standard library only: this module may run on a node.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from clusterkit.procs import MAX_STDERR, MAX_STDOUT

#: How often ``done`` is asked while the command prints nothing (it may watch a file).
IDLE_CHECK_S = 0.5
#: How long a command that has exited gets for a background child to let go of its pipes.
PIPE_LINGER_S = 1.0


@dataclass
class WatchResult:
    rc: int  # exit status; -N when ended by signal N
    stdout: str
    stderr: str
    timed_out: bool  # still running at the timeout (ended by us)
    ended_after_result: bool  # ended by us after its result was complete
    duration_s: float
    truncated: bool = False


def result_complete(stdout: str) -> bool:
    """Whether nccl-tests' text output holds a finished result: an ``# Avg bus bandwidth`` line
    followed by the closing ``#`` line (any later comment line)."""
    at = stdout.rfind("# Avg bus bandwidth")
    if at < 0:
        return False
    nl = stdout.find("\n", at)
    if nl < 0:
        return False
    for line in stdout[nl + 1:].splitlines():
        if line.strip().startswith("#"):
            return True
    return False


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass
    if sig == signal.SIGKILL:
        try:
            proc.kill()
        except OSError:
            pass


class Watchdog:
    """Starts watched commands (each in its own session) and can end every one still running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def run(self, argv: list[str], *, env: Optional[Mapping[str, str]], timeout: float,
            done: Optional[Callable[[str], bool]] = None, grace: float = 5.0, kill_grace: float = 5.0,
            cwd: Optional[str] = None, max_stdout: int = MAX_STDOUT,
            max_stderr: int = MAX_STDERR) -> WatchResult:
        """Run ``argv`` (see the module docstring). Raises OSError when it cannot start."""
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
                                cwd=cwd, start_new_session=True)
        with self._lock:
            self._running.add(proc)
            closed = self._closed
        if closed:
            _signal_group(proc, signal.SIGKILL)
        try:
            out, err, timed_out, after, truncated = _watch(
                proc, started + max(0.0, timeout), done, max(0.0, grace), max(0.0, kill_grace),
                max_stdout, max_stderr)
        finally:
            with self._lock:
                self._running.discard(proc)
        return WatchResult(rc=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
                           stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                           timed_out=timed_out, ended_after_result=after,
                           duration_s=round(time.monotonic() - started, 3), truncated=truncated)

    def kill_all(self) -> None:
        """End every command still running; refuse new ones."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for proc in running:
            _signal_group(proc, signal.SIGKILL)


def run_watched(argv: list[str], *, env: Optional[Mapping[str, str]], timeout: float,
                done: Optional[Callable[[str], bool]] = None, grace: float = 5.0,
                cwd: Optional[str] = None, kill_grace: float = 5.0,
                watchdog: Optional[Watchdog] = None) -> WatchResult:
    """Run ``argv`` with a timeout and an end once ``done(stdout so far)`` is true (see the
    module docstring). ``done`` is asked after each piece of output and, while the command is
    quiet, every :data:`IDLE_CHECK_S` seconds. Raises OSError when the command cannot start."""
    return (watchdog or Watchdog()).run(argv, env=env, timeout=timeout, done=done, grace=grace,
                                        kill_grace=kill_grace, cwd=cwd)


def _watch(proc: subprocess.Popen[bytes], deadline: float, done: Optional[Callable[[str], bool]],
           grace: float, kill_grace: float, max_stdout: int, max_stderr: int
           ) -> tuple[bytes, bytes, bool, bool, bool]:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    truncated = timed_out = after_result = False
    sel = selectors.DefaultSelector()
    for f, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ, tag)
    readers = 2
    # phases: run -> (result seen) wait -> (grace over / timeout) term -> (kill_grace over) kill
    phase = "run"
    phase_end = deadline
    exited_at: Optional[float] = None
    last_check = 0.0

    def check_done(now: float) -> bool:
        nonlocal last_check
        last_check = now
        if done is None:
            return False
        try:
            return bool(done(out.decode("utf-8", "replace")))
        except Exception:  # noqa: BLE001 - a predicate's bug must not lose the command
            return False

    try:
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                if readers == 0:
                    break
                if exited_at is None:
                    exited_at = now
                elif now - exited_at >= PIPE_LINGER_S:
                    _signal_group(proc, signal.SIGKILL)  # a background child holds the pipes
                    if now - exited_at >= PIPE_LINGER_S + 1.0:
                        break
            if phase in ("run", "wait") and now >= deadline:
                if phase == "run":
                    timed_out = True
                phase, phase_end = "term", now + kill_grace
                _signal_group(proc, signal.SIGTERM)
            elif phase == "wait" and now >= phase_end:
                phase, phase_end = "term", now + kill_grace
                _signal_group(proc, signal.SIGTERM)
            elif phase == "term" and now >= phase_end:
                phase, phase_end = "kill", now + 2.0
                _signal_group(proc, signal.SIGKILL)
            elif phase == "kill" and now >= phase_end:
                break  # unkillable (D state) or pipes held elsewhere: give up on the rest
            wait_for = max(0.0, min(phase_end - now, IDLE_CHECK_S))
            if readers == 0:
                time.sleep(min(wait_for, 0.05) or 0.01)
                events = []
            else:
                events = sel.select(wait_for)
            got_out = False
            for key, _ in events:
                try:
                    chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    readers -= 1
                    continue
                buf, cap = (out, max_stdout) if key.data == "out" else (err, max_stderr)
                if len(buf) < cap:
                    buf += chunk[: cap - len(buf)]
                if len(buf) >= cap:
                    truncated = True
                if key.data == "out":
                    got_out = True
            now = time.monotonic()
            if phase == "run" and proc.poll() is None and (
                    got_out or now - last_check >= IDLE_CHECK_S) and check_done(now):
                after_result = True
                phase, phase_end = "wait", min(now + grace, deadline)
    finally:
        sel.close()
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass
        for f in (proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
    if after_result and not timed_out and phase == "wait":
        after_result = False  # it exited by itself within the grace: an ordinary end
    return bytes(out), bytes(err), timed_out, after_result, truncated


__all__ = ["WatchResult", "Watchdog", "run_watched", "result_complete", "IDLE_CHECK_S"]
