"""Transports: run an argv on a node and return a CommandResult; run many tasks with a bound.

The contract (one for every transport, picked by name: ``local``, ``paramiko``, ``openssh``;
``srun`` joins with the Slurm backend)::

    t.prepare(nodes)                       resolve every node's configuration; a bad ssh_config,
                                           known_hosts or identity raises ConfigError (exit 2)
                                           here, before any node is contacted
    t.run(node, argv, *, timeout, stdin=None, env=None, hold_stdin=False) -> CommandResult
                                           or raises a TransportError (errors.py); ``timeout``
                                           bounds everything, connection included; a timed-out
                                           command leaves nothing running and its partial
                                           output rides on the CommandTimeout
    t.run_tasks(tasks, *, fanout, on_done=None, cancel=None) -> {task.key: CommandResult |
                                           TransportError}; bounded, never raises halfway
    t.close()                              stop whatever still runs (Ctrl-C), by handle

A :class:`Task` runs one argv for one node or for a group of nodes (an NCCL pair, an srun step
over an allocation). The base implementation of ``run_tasks`` runs each task on its first node
through ``run``, at most ``fanout`` at once; a transport that can do better (one ``srun`` step
over N nodes) overrides it. ``env`` is passed as variables of the command (over SSH as an
``env NAME=value …`` prefix, argv-quoted), never interpolated into a shell string.

``hold_stdin``: after ``stdin`` is written, the command's standard input stays open until the
transport is done with it, and closes when the controller goes away (timeout, Ctrl-C, crash).
``node-check --lifeline`` watches for that end-of-file and stops, so no node-check outlives the
controller that started it, over any transport.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Protocol, Sequence, Union

from clusterkit.errors import ClusterkitError, InternalError, TransportError, UsageError
from clusterkit.models import Node

#: Transports a user can pick by name (``--transport``); ``local`` runs on this machine.
TRANSPORTS = ("openssh", "paramiko")
DEFAULT_TRANSPORT = "openssh"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class CommandResult:
    node: str
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = field(default=False)

    def tail(self, n: int = 300) -> str:
        """The last ``n`` characters of stderr (or stdout), on one line, for messages."""
        text = (self.stderr or self.stdout).strip()
        return " ".join(text[-n:].split())


Outcome = Union[CommandResult, TransportError]


@dataclass
class Task:
    """One command for one node, or for a group of nodes (run from the group's first node)."""

    key: str
    nodes: tuple[Node, ...]
    argv: list[str]
    timeout: float
    stdin: Optional[bytes] = None
    env: Optional[Mapping[str, str]] = None
    hold_stdin: bool = False

    @property
    def node(self) -> Node:
        return self.nodes[0]


def check_env(env: Optional[Mapping[str, str]]) -> dict[str, str]:
    """The environment as a plain dict, names checked (a bad name is a usage error)."""
    out: dict[str, str] = {}
    for k, v in (env or {}).items():
        if not _ENV_NAME.match(k):
            raise UsageError(f"bad environment variable name {k!r}")
        if "\x00" in v:
            raise UsageError(f"environment variable {k} holds a NUL byte")
        out[k] = v
    return out


def env_argv(argv: list[str], env: Optional[Mapping[str, str]]) -> list[str]:
    """``argv`` with ``env NAME=value …`` in front when there is an environment (for SSH)."""
    e = check_env(env)
    if not e:
        return list(argv)
    return ["env", *(f"{k}={v}" for k, v in e.items()), *argv]


class Transport(Protocol):
    name: str

    def prepare(self, nodes: Sequence[Node]) -> None: ...

    def run(self, node: Node, argv: list[str], *, timeout: float, stdin: Optional[bytes] = None,
            env: Optional[Mapping[str, str]] = None, hold_stdin: bool = False) -> CommandResult: ...

    def run_tasks(self, tasks: Iterable[Task], *, fanout: int = 64,
                  on_done: Optional[Callable[[Task, Outcome], None]] = None,
                  cancel: Optional[threading.Event] = None) -> dict[str, Outcome]: ...

    def close(self) -> None: ...


def _guarded(fn: Callable[[], CommandResult], node: str) -> Outcome:
    """Run one command; every failure becomes an outcome. A TransportError stays itself; any
    other exception is a bug of ours (InternalError, exit 4), never 'unreachable'."""
    try:
        return fn()
    except TransportError as e:
        e.node = e.node or node
        return e
    except ClusterkitError as e:  # a ConfigError met late: still not the node's fault
        err = InternalError(f"{type(e).__name__}: {e}", node=node, cause=f"{type(e).__name__}")
        return err
    except Exception as e:  # noqa: BLE001 - never lose the other nodes to one bug
        return InternalError(f"{type(e).__name__}: {' '.join(str(e).split())}", node=node,
                             cause=f"{type(e).__name__} in clusterkit")


def run_bounded(transport: Transport, tasks: Iterable[Task], *, fanout: int = 64,
                on_done: Optional[Callable[[Task, Outcome], None]] = None,
                cancel: Optional[threading.Event] = None) -> dict[str, Outcome]:
    """Run each task on its first node through ``transport.run``, at most ``fanout`` at once.

    Tasks are submitted lazily (no more than ``fanout`` futures exist), so thousands of nodes
    cost a bounded amount of memory and threads. Never raises for a task; on an interrupt it
    stops submitting, does not wait for commands still running, and re-raises.
    """
    results: dict[str, Outcome] = {}
    todo = iter(list(tasks))
    workers = max(1, int(fanout))
    cancel = cancel or threading.Event()

    def one(task: Task) -> Outcome:
        return _guarded(lambda: transport.run(task.node, task.argv, timeout=task.timeout,
                                              stdin=task.stdin, env=task.env,
                                              hold_stdin=task.hold_stdin), task.node.name)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ck-fanout")
    inflight: dict[Future[Outcome], Task] = {}

    def refill() -> None:
        while len(inflight) < workers and not cancel.is_set():
            task = next(todo, None)
            if task is None:
                return
            inflight[pool.submit(one, task)] = task

    try:
        refill()
        while inflight:
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in done:
                task = inflight.pop(fut)
                outcome = fut.result()
                results[task.key] = outcome
                if on_done is not None:
                    on_done(task, outcome)
            refill()
    except BaseException:
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


class BaseTransport:
    """Shared behaviour: no preparation needed, tasks run through :func:`run_bounded`."""

    name = "base"

    def prepare(self, nodes: Sequence[Node]) -> None:  # noqa: B027 - optional hook
        """Check every node's configuration before anything runs (ConfigError = exit 2)."""

    def run(self, node: Node, argv: list[str], *, timeout: float, stdin: Optional[bytes] = None,
            env: Optional[Mapping[str, str]] = None, hold_stdin: bool = False
            ) -> CommandResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_tasks(self, tasks: Iterable[Task], *, fanout: int = 64,
                  on_done: Optional[Callable[[Task, Outcome], None]] = None,
                  cancel: Optional[threading.Event] = None) -> dict[str, Outcome]:
        return run_bounded(self, tasks, fanout=fanout, on_done=on_done, cancel=cancel)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop whatever still runs."""


def fan_out(
    transport: Transport,
    nodes: Iterable[Node],
    argv: list[str],
    *,
    timeout: float,
    fanout: int = 64,
    stdin_for: Optional[Callable[[Node], Optional[bytes]]] = None,
    env_for: Optional[Callable[[Node], Optional[Mapping[str, str]]]] = None,
    hold_stdin: bool = False,
    on_done: Optional[Callable[[Node, Outcome], None]] = None,
    cancel: Optional[threading.Event] = None,
) -> dict[str, Outcome]:
    """Run ``argv`` on every node (one task per node): ``{node name: outcome}``."""
    tasks = [Task(key=n.name, nodes=(n,), argv=list(argv), timeout=timeout,
                  stdin=stdin_for(n) if stdin_for else None,
                  env=env_for(n) if env_for else None, hold_stdin=hold_stdin) for n in nodes]
    done_cb = (lambda t, o: on_done(t.node, o)) if on_done is not None else None
    return transport.run_tasks(tasks, fanout=fanout, on_done=done_cb, cancel=cancel)


def make_transport(name: str, **options: object) -> Transport:
    """A transport by name: ``openssh``, ``paramiko`` (SSH options as keywords)."""
    if name == "openssh":
        from clusterkit.transport.openssh import OpenSSHTransport

        return OpenSSHTransport(**options)  # type: ignore[arg-type]
    if name == "paramiko":
        from clusterkit.transport.ssh import SSHTransport

        return SSHTransport(**options)  # type: ignore[arg-type]
    raise UsageError(f"unknown transport {name!r}; one of: {', '.join(TRANSPORTS)}")
