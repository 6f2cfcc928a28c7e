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

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from clusterkit.procs import DONE_IDLE_CHECK_S, MAX_STDERR, MAX_STDOUT

#: How often ``done`` is asked while the command prints nothing (it may watch a file).
IDLE_CHECK_S = DONE_IDLE_CHECK_S
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


class Watchdog:
    """Starts watched commands (each in its own session) and can end every one still running:
    :class:`clusterkit.procs.ProcessGroup` with its ``done`` hook, the one process runner."""

    def __init__(self) -> None:
        from clusterkit.procs import ProcessGroup

        self._group = ProcessGroup()

    def run(self, argv: list[str], *, env: Optional[Mapping[str, str]], timeout: float,
            done: Optional[Callable[[str], bool]] = None, grace: float = 5.0, kill_grace: float = 5.0,
            cwd: Optional[str] = None, max_stdout: int = MAX_STDOUT,
            max_stderr: int = MAX_STDERR) -> WatchResult:
        """Run ``argv`` (see the module docstring). Raises OSError when it cannot start."""
        seen: Optional[Callable[[bytes], bool]] = None
        if done is not None:
            test = done

            def seen(out: bytes) -> bool:
                return bool(test(out.decode("utf-8", "replace")))
        r = self._group.run(argv, timeout=max(0.0, timeout), env=env, grace=max(0.0, kill_grace), done=seen,
                            done_grace=max(0.0, grace), cwd=cwd, max_stdout=max_stdout, max_stderr=max_stderr,
                            linger=PIPE_LINGER_S)
        return WatchResult(rc=r.rc, stdout=r.stdout, stderr=r.stderr, timed_out=r.timed_out,
                           ended_after_result=r.ended_after_result, duration_s=r.duration_s,
                           truncated=r.truncated)

    def kill_all(self) -> None:
        """End every command still running; refuse new ones."""
        self._group.kill_all()


def run_watched(argv: list[str], *, env: Optional[Mapping[str, str]], timeout: float,
                done: Optional[Callable[[str], bool]] = None, grace: float = 5.0,
                cwd: Optional[str] = None, kill_grace: float = 5.0,
                watchdog: Optional[Watchdog] = None) -> WatchResult:
    """Run ``argv`` with a timeout and an end once ``done(stdout so far)`` is true (see the
    module docstring). ``done`` is asked after each piece of output and, while the command is
    quiet, every :data:`IDLE_CHECK_S` seconds. Raises OSError when the command cannot start."""
    return (watchdog or Watchdog()).run(argv, env=env, timeout=timeout, done=done, grace=grace,
                                        kill_grace=kill_grace, cwd=cwd)


__all__ = ["WatchResult", "Watchdog", "run_watched", "result_complete", "IDLE_CHECK_S"]
