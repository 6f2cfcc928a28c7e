"""Running a local process with a deadline, and ending all of it when the deadline passes.

One helper serves the local transport, the OpenSSH transport (each node is an ``ssh`` child)
and the node side's tool runner. Every process starts in its own session (process group), so a
timeout or an interrupt ends the whole group, background children included: ``sh -c "sleep 8 &
sleep 8"`` with a 1 s timeout returns after 1 s, not 8. Output is read without threads (one
``selectors`` loop), bounded in size, and kept when the process is cut off.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

MAX_STDOUT = 32 * 1024 * 1024
MAX_STDERR = 1024 * 1024


@dataclass
class ProcResult:
    argv: list[str]
    rc: int  # the exit status; -N when killed by signal N
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    truncated: bool = False
    ended_after_result: bool = False  # ended by us ``done_grace`` after ``done`` said the result was complete


#: How often ``done`` is asked while the command prints nothing (it may watch a file).
DONE_IDLE_CHECK_S = 0.5


class ProcessGroup:
    """Starts processes (each in its own session) and can end every one still running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def run(self, argv: list[str], *, timeout: float, stdin: Optional[bytes] = None,
            env: Optional[Mapping[str, str]] = None, hold_stdin: bool = False,
            max_stdout: int = MAX_STDOUT, max_stderr: int = MAX_STDERR, grace: float = 0.0,
            done: Optional[Callable[[bytes], bool]] = None, done_grace: float = 5.0,
            cwd: Optional[str] = None, linger: Optional[float] = None) -> ProcResult:
        """Run ``argv``; raises OSError when it cannot start. Never waits past ``timeout``
        (plus the moment it takes to kill the group, plus ``grace``).

        ``grace``: on a timeout, first close stdin and send SIGTERM, and wait this long for the
        command to end by itself before SIGKILL (srun turns SIGTERM into ending its job step on
        every node; SIGKILL would leave the step running).

        ``done(stdout so far)``: asked after each piece of output and every
        :data:`DONE_IDLE_CHECK_S` while the command is quiet; once it says the result is complete,
        the command gets ``done_grace`` seconds to exit by itself and is then ended as on a
        timeout, but reported ``ended_after_result`` instead of ``timed_out`` (a tool that hangs
        after printing its result, as nccl-tests can).

        ``linger``: once the command itself has exited, wait at most this long for its pipes
        to close, then end its group (a background child that still holds them) and return;
        None waits for the pipes until the deadline."""
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
                                start_new_session=True, cwd=cwd)
        with self._lock:
            self._running.add(proc)
            closed = self._closed
        if closed:
            _kill_group(proc)
        try:
            out, err, timed_out, truncated, after = _pump(proc, stdin or b"", hold_stdin, deadline,
                                                          max_stdout, max_stderr, grace, done, done_grace,
                                                          linger)
        finally:
            with self._lock:
                self._running.discard(proc)
        return ProcResult(argv=list(argv), rc=proc.returncode if proc.returncode is not None else -9,
                          stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                          duration_s=round(time.monotonic() - started, 3), timed_out=timed_out,
                          truncated=truncated, ended_after_result=after)

    def kill_all(self) -> None:
        """End every process group still running (after an interrupt); refuse new ones."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for proc in running:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, also_kill: bool = True) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass
    if not also_kill:
        return
    try:
        proc.kill()
    except OSError:
        pass


def _pump(proc: subprocess.Popen[bytes], data: bytes, hold_stdin: bool, deadline: float,
          max_stdout: int, max_stderr: int, grace: float = 0.0,
          done: Optional[Callable[[bytes], bool]] = None, done_grace: float = 5.0,
          linger: Optional[float] = None) -> tuple[bytes, bytes, bool, bool, bool]:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    truncated = False
    timed_out = False
    result_seen = False  # ``done`` said the result is complete: the deadline moved up to its grace
    last_check = time.monotonic()

    def result_complete() -> bool:
        nonlocal last_check
        last_check = time.monotonic()
        try:
            return bool(done(bytes(out))) if done is not None else False
        except Exception:  # noqa: BLE001 - a predicate's bug must not lose the command
            return False

    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdout.fileno(), False)
    os.set_blocking(proc.stderr.fileno(), False)
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    pending = memoryview(data)
    stdin_open = True
    if pending:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
    elif not hold_stdin:
        proc.stdin.close()
        stdin_open = False
    readers = 2
    exited_at: Optional[float] = None
    try:
        while readers:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if linger is not None and proc.poll() is not None:
                exited_at = exited_at if exited_at is not None else time.monotonic()
                if time.monotonic() - exited_at >= linger:
                    _kill_group(proc)  # a background child still holds the pipes
                    break
            got_out = False
            for key, _ in sel.select(min(left, DONE_IDLE_CHECK_S if done is not None else 1.0)):
                if key.data == "in":
                    try:
                        n = os.write(proc.stdin.fileno(), pending[:65536])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except OSError as e:  # the command did not read its input: fine
                        if e.errno not in (errno.EPIPE, errno.EINVAL):
                            raise
                        pending = memoryview(b"")
                    if not pending:
                        sel.unregister(proc.stdin)
                        if not hold_stdin:
                            proc.stdin.close()
                            stdin_open = False
                    continue
                fobj = key.fileobj
                try:
                    chunk = os.read(fobj.fileno(), 65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fobj)
                    readers -= 1
                    continue
                buf, cap = (out, max_stdout) if key.data == "out" else (err, max_stderr)
                if len(buf) < cap:
                    buf += chunk[: cap - len(buf)]
                if len(buf) >= cap:
                    truncated = True
                got_out = got_out or key.data == "out"
            if (done is not None and not result_seen and
                    (got_out or time.monotonic() - last_check >= DONE_IDLE_CHECK_S) and result_complete()):
                result_seen = True
                deadline = min(deadline, time.monotonic() + max(0.0, done_grace))
        if not timed_out:
            # both pipes closed: the process (and any child holding them) is done or detached
            left = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(0.0, left))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        sel.close()
        if timed_out and grace > 0 and proc.poll() is None:
            if stdin_open:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                stdin_open = False
            _kill_group(proc, signal.SIGTERM, also_kill=False)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if timed_out or proc.poll() is None:
            _kill_group(proc)
        if stdin_open:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass
        for f in (proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
    if result_seen and timed_out:  # ended after its result was complete: no hang
        return bytes(out), bytes(err), False, truncated, True
    return bytes(out), bytes(err), timed_out, truncated, False
