"""Transports: run an argv on a node and return a CommandResult; fan out with a bound.

``Transport.run(node, argv, timeout=, stdin=)`` -> :class:`CommandResult` or raises a
:class:`clusterkit.errors.TransportError`. :func:`fan_out` runs one command on many nodes with at
most ``fanout`` in flight and returns ``{node name: CommandResult | TransportError}``: it never
raises halfway, so no result is lost to one bad node.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Protocol, Union

from clusterkit.errors import TransportError
from clusterkit.models import Node


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


class Transport(Protocol):
    def run(self, node: Node, argv: list[str], *, timeout: float,
            stdin: Optional[bytes] = None) -> CommandResult: ...

    def close(self) -> None: ...


def fan_out(
    transport: Transport,
    nodes: Iterable[Node],
    argv: list[str],
    *,
    timeout: float,
    fanout: int = 64,
    stdin_for: Optional[Callable[[Node], Optional[bytes]]] = None,
    on_done: Optional[Callable[[Node, Outcome], None]] = None,
    cancel: Optional[threading.Event] = None,
) -> dict[str, Outcome]:
    """Run ``argv`` on every node, at most ``fanout`` at once. Never raises for a node.

    Nodes are submitted lazily (no more than ``fanout`` futures exist), so thousands of nodes
    cost a bounded amount of memory and threads.
    """
    results: dict[str, Outcome] = {}
    todo = iter(list(nodes))
    workers = max(1, int(fanout))
    cancel = cancel or threading.Event()

    def one(node: Node) -> Outcome:
        try:
            data = stdin_for(node) if stdin_for else None
            return transport.run(node, argv, timeout=timeout, stdin=data)
        except TransportError as e:
            e.node = e.node or node.name
            return e
        except Exception as e:  # noqa: BLE001 - never lose the other nodes to one bug
            return TransportError(f"{type(e).__name__}: {e}", node=node.name)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ck-fanout")
    inflight: dict[Future[Outcome], Node] = {}

    def refill() -> None:
        while len(inflight) < workers and not cancel.is_set():
            node = next(todo, None)
            if node is None:
                return
            inflight[pool.submit(one, node)] = node

    try:
        refill()
        while inflight:
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in done:
                node = inflight.pop(fut)
                outcome = fut.result()
                results[node.name] = outcome
                if on_done is not None:
                    on_done(node, outcome)
            refill()
    except BaseException:
        # Interrupted: stop submitting, do not wait for commands still running.
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
