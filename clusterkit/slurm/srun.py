"""The srun transport: one ``srun`` step runs a command on every node of a set (``--via slurm``).

For sites where the controller cannot SSH to the nodes, and for fleets larger than one
controller's SSH fan-out: Slurm starts the tasks, one per node, and carries their output back.

- Inside an allocation (``$SLURM_JOB_ID`` set: an sbatch job, salloc) the step runs in it;
  otherwise srun asks for a new allocation of exactly those nodes (``--exclusive``, a time limit
  from the timeout, the partition and reservation when given).
- Every task starts with a fixed wrapper that prints ``@@clusterkit-task <rank> <node>`` from the
  task's own ``SLURM_PROCID`` / ``SLURMD_NODENAME`` (computed in the task, never expanded here),
  then ``exec``s the argv: with ``--label`` every line names its rank, so each node's output is
  told apart, and a node whose task never started is reported by name.
- A task's exit status comes from srun's ``task N: Exited with exit code C`` lines.
- stdin (the profile, then the lifeline) goes to every task (srun's default); closing it ends
  every node-check. On a timeout srun gets SIGTERM first, which ends the step on every node.
- The command's environment reaches the tasks through srun's own (``--export=ALL``);
  ``CLUSTERKIT_NODE`` is removed, since a task learns its node from Slurm.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Mapping, Optional, Sequence

from clusterkit.errors import CommandTimeout, TaskNotStarted, UsageError
from clusterkit.models import Node
from clusterkit.procs import ProcessGroup
from clusterkit.transport import BaseTransport, CommandResult, Outcome, Task, check_env

PRELUDE = "@@clusterkit-task"
#: The fixed wrapper every task runs (POSIX sh; the argv follows as "$@"). It prints the task's
#: rank and node from the task's own environment, then runs the argv with its stdout framed:
#: srun --label cuts lines longer than 1024 bytes into separately labelled pieces, so each line
#: goes out in pieces of at most 1000 bytes, '+' marking a piece that continues and '=' a line's
#: end. The argv's exit status survives the pipe (through fd 3).
WRAPPER = (
    'printf "' + PRELUDE + ' %s %s\\n" "${SLURM_PROCID:-?}" "${SLURMD_NODENAME:-$(hostname -s)}"\n'
    'exec 4>&1\n'
    'rc=$( { { "$@"; echo "$?" >&3; } | LC_ALL=C awk \'{ while (length($0) > 1000) '
    '{ print "+" substr($0, 1, 1000); $0 = substr($0, 1001) } print "=" $0 }\' >&4; } 3>&1 )\n'
    'exit "${rc:-125}"\n'
)
_LABEL = re.compile(r"^\s*(\d+): ?(.*)$")
_TASK_EXIT = re.compile(r"^srun: error: (\S+): tasks? ([0-9,\-]+): (.*)$")
_EXIT_CODE = re.compile(r"Exited with exit code (\d+)")
SIGTERM_GRACE = 10.0  # seconds srun gets to end its step before SIGKILL


def _ranks(expr: str) -> list[int]:
    out: list[int] = []
    for part in expr.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a.isdigit() and b.isdigit():
                out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
    return out


class StepOutput:
    """What one srun step printed, split by task."""

    def __init__(self, stdout: str, stderr: str) -> None:
        self.node_of: dict[int, str] = {}
        self.out: dict[int, list[str]] = {}
        self.err: dict[int, list[str]] = {}
        self.rc: dict[int, int] = {}
        self.srun_lines: list[str] = []  # srun's own messages (unlabelled stderr)
        self._pieces: dict[int, list[str]] = {}
        for line in stdout.splitlines():
            m = _LABEL.match(line)
            if not m:
                continue
            rank, text = int(m.group(1)), m.group(2)
            if text.startswith(PRELUDE + " ") and rank not in self.node_of:
                parts = text.split()
                if len(parts) >= 3:
                    self.node_of[rank] = parts[2]
                    continue
            pieces = self._pieces.setdefault(rank, [])
            if text.startswith("+"):
                pieces.append(text[1:])
                continue
            body = text[1:] if text.startswith("=") else text
            self.out.setdefault(rank, []).append("".join(pieces) + body)
            pieces.clear()
        for rank, pieces in self._pieces.items():  # a line cut off mid-way (timeout)
            if pieces:
                self.out.setdefault(rank, []).append("".join(pieces))
        for line in stderr.splitlines():
            m = _LABEL.match(line)
            if m and not line.startswith("srun:"):
                self.err.setdefault(int(m.group(1)), []).append(m.group(2))
                continue
            self.srun_lines.append(line)
            t = _TASK_EXIT.match(line.strip())
            if t:
                code = _EXIT_CODE.search(t.group(3))
                for r in _ranks(t.group(2)):
                    self.rc[r] = int(code.group(1)) if code else 128 + 9
                    self.node_of.setdefault(r, t.group(1))

    def rank_of(self) -> dict[str, int]:
        return {node: rank for rank, node in self.node_of.items()}

    def srun_error(self) -> str:
        """srun's own first error, on one line (why tasks never started)."""
        errs = [ln.strip() for ln in self.srun_lines if ln.strip().startswith("srun:")
                and not _TASK_EXIT.match(ln.strip()) and "error" in ln.lower()]
        if not errs:
            errs = [ln.strip() for ln in self.srun_lines if ln.strip()]
        return " ".join(" ".join(errs[:2]).split())[:300]


def in_allocation(env: Optional[Mapping[str, str]] = None) -> bool:
    e = os.environ if env is None else env
    return bool(e.get("SLURM_JOB_ID") or e.get("SLURM_JOBID"))


class SrunTransport(BaseTransport):
    """Runs tasks as srun steps (see the module docstring). Tasks with the same argv, stdin,
    environment and timeout share one step across their nodes."""

    name = "srun"

    def __init__(self, *, partition: Optional[str] = None, reservation: Optional[str] = None,
                 gres: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                 job_name: str = "clusterkit", srun: str = "srun",
                 new_allocation: Optional[bool] = None) -> None:
        self.partition = partition
        self.reservation = reservation
        self.gres = gres
        self.env = dict(env or {})
        self.job_name = job_name
        self.srun = srun
        self._procs = ProcessGroup()
        base = {**os.environ, **self.env}
        self.new_allocation = (not in_allocation(base)) if new_allocation is None else new_allocation

    def prepare(self, nodes: Sequence[Node]) -> None:
        if shutil.which(self.srun) is None and not os.path.isfile(self.srun):
            raise UsageError(f"--via slurm: {self.srun} not found on PATH (run this where Slurm's "
                             "commands are installed)")

    def srun_argv(self, nodes: Sequence[str], timeout: float) -> list[str]:
        """srun's own options for one step over ``nodes`` (one task per node)."""
        from clusterkit.hostlist import fold

        n = len(nodes)
        argv = [self.srun, f"--job-name={self.job_name}", f"--nodes={n}", f"--ntasks={n}",
                "--ntasks-per-node=1", f"--nodelist={fold(list(nodes))}", "--label",
                "--kill-on-bad-exit=0", "--export=ALL"]
        if self.new_allocation:
            argv += ["--exclusive", f"--time={max(1, math.ceil(timeout / 60.0)) + 1}"]
            if self.partition:
                argv.append(f"--partition={self.partition}")
        if self.reservation:
            argv.append(f"--reservation={self.reservation}")
        if self.gres:
            argv.append(f"--gres={self.gres}")
        return argv

    def step_env(self, extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
        env = {**os.environ, **self.env, **check_env(extra)}
        env.pop("CLUSTERKIT_NODE", None)  # each task learns its node from Slurm
        return env

    def run(self, node: Node, argv: list[str], *, timeout: float, stdin: Optional[bytes] = None,
            env: Optional[Mapping[str, str]] = None, hold_stdin: bool = False) -> CommandResult:
        task = Task(key=node.name, nodes=(node,), argv=argv, timeout=timeout, stdin=stdin, env=env,
                    hold_stdin=hold_stdin)
        out = self.run_step(task.nodes, task)[node.name]
        if isinstance(out, CommandResult):
            return out
        raise out

    def run_step(self, nodes: Sequence[Node], task: Task) -> dict[str, Outcome]:
        """One srun step running ``task``'s argv on every node of ``nodes``: node -> outcome."""
        names = [n.name for n in nodes]
        argv = [*self.srun_argv(names, task.timeout), "/bin/sh", "-c", WRAPPER, "clusterkit-task",
                *task.argv]
        started = time.monotonic()
        try:
            r = self._procs.run(argv, timeout=task.timeout, stdin=task.stdin, env=self.step_env(task.env),
                                hold_stdin=task.hold_stdin, grace=SIGTERM_GRACE)
        except OSError as e:
            failed = TaskNotStarted(f"cannot run {self.srun}: {e.strerror or e}", cause=f"cannot run {self.srun}")
            return {nm: _with_node(failed, nm) for nm in names}
        step = StepOutput(r.stdout, r.stderr)
        ranks = step.rank_of()
        why = step.srun_error()
        if r.timed_out and not ranks and "queued and waiting for resources" in r.stderr:
            why = f"no allocation within {task.timeout:g}s: the nodes are busy or reserved ({why})"
        results: dict[str, Outcome] = {}
        from clusterkit.fsutil import last_json_object

        for nm in names:
            rank = ranks.get(nm)
            if rank is None:
                cause = "srun task never started" + (f": {why}" if why else "")
                results[nm] = TaskNotStarted(f"srun: the task on {nm} never started: {why or f'srun exit {r.rc}'}",
                                             node=nm, cause=cause[:200], stderr=r.stderr[-2000:])
                continue
            out = "\n".join(step.out.get(rank, [])) + ("\n" if step.out.get(rank) else "")
            err = "\n".join(step.err.get(rank, []))
            if r.timed_out and last_json_object(out) is None:
                results[nm] = CommandTimeout(f"command did not finish within {task.timeout:g}s", node=nm,
                                             cause=f"did not finish within {task.timeout:g}s",
                                             stdout=out, stderr=err)
                continue
            results[nm] = CommandResult(node=nm, argv=list(task.argv), rc=step.rc.get(rank, 0), stdout=out,
                                        stderr=err, duration_s=round(time.monotonic() - started, 3),
                                        truncated=r.truncated)
        return results

    def run_tasks(self, tasks: Iterable[Task], *, fanout: int = 64,
                  on_done: Optional[Callable[[Task, Outcome], None]] = None,
                  cancel: Optional[threading.Event] = None) -> dict[str, Outcome]:
        """Tasks that differ only in their node share one step; a task over several nodes
        (an NCCL group) is its own step. Steps run side by side; never raises for a task."""
        groups: dict[tuple, list[Task]] = {}
        for t in tasks:
            if len(t.nodes) == 1:
                key: tuple = ("one", tuple(t.argv), t.stdin, tuple(sorted((t.env or {}).items())),
                              t.hold_stdin, t.timeout)
            else:
                key = ("group", t.key)
            groups.setdefault(key, []).append(t)
        results: dict[str, Outcome] = {}
        lock = threading.Lock()

        def one(group: list[Task]) -> None:
            if cancel is not None and cancel.is_set():
                return
            first = group[0]
            nodes = [t.node for t in group] if len(first.nodes) == 1 else list(first.nodes)
            try:
                outcomes = self.run_step(nodes, first)
            except Exception as e:  # noqa: BLE001 - never lose the other groups to one bug
                from clusterkit.errors import InternalError

                outcomes = {n.name: InternalError(f"{type(e).__name__}: {e}", node=n.name,
                                                  cause=f"{type(e).__name__} in clusterkit") for n in nodes}
            with lock:
                if len(first.nodes) == 1:
                    for t in group:
                        results[t.key] = outcomes[t.node.name]
                        if on_done is not None:
                            on_done(t, results[t.key])
                else:
                    results[first.key] = _combine(first, outcomes)
                    if on_done is not None:
                        on_done(first, results[first.key])

        with ThreadPoolExecutor(max_workers=max(1, min(len(groups), fanout)),
                                thread_name_prefix="ck-srun") as pool:
            list(pool.map(one, list(groups.values())))
        return results

    def close(self) -> None:
        self._procs.kill_all()


def _with_node(err: TaskNotStarted, node: str) -> TaskNotStarted:
    return TaskNotStarted(str(err), node=node, cause=err.cause)


def _combine(task: Task, outcomes: Mapping[str, Outcome]) -> Outcome:
    """A multi-node task's outcome: the first node's error, else every node's output in order."""
    for n in task.nodes:
        o = outcomes[n.name]
        if not isinstance(o, CommandResult):
            return o
    results = [outcomes[n.name] for n in task.nodes]
    assert all(isinstance(o, CommandResult) for o in results)
    rs = [o for o in results if isinstance(o, CommandResult)]
    return CommandResult(node=task.node.name, argv=list(task.argv), rc=max(o.rc for o in rs),
                         stdout="".join(o.stdout for o in rs), stderr="\n".join(o.stderr for o in rs if o.stderr),
                         duration_s=max(o.duration_s for o in rs))
