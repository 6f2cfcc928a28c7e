"""Local transport: run the argv as a subprocess on this machine (used by ``--sim``).

Per-node environment comes from ``env_for(node)`` (e.g. ``CLUSTERKIT_NODE`` for a simulated node)
and from each command's own ``env``. Each command runs in its own process group; a timeout or
:meth:`close` ends the whole group.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional

from clusterkit.errors import CommandTimeout, ConnectError
from clusterkit.models import Node
from clusterkit.procs import ProcessGroup
from clusterkit.transport import BaseTransport, CommandResult, check_env


class LocalTransport(BaseTransport):
    name = "local"

    def __init__(self, env_for: Optional[Callable[[Node], dict[str, str]]] = None) -> None:
        self._env_for = env_for
        self._procs = ProcessGroup()

    def run(self, node: Node, argv: list[str], *, timeout: float, stdin: Optional[bytes] = None,
            env: Optional[Mapping[str, str]] = None, hold_stdin: bool = False) -> CommandResult:
        full = dict(os.environ)
        if self._env_for is not None:
            full.update(self._env_for(node))
        full.update(check_env(env))
        try:
            r = self._procs.run(argv, timeout=timeout, stdin=stdin, env=full, hold_stdin=hold_stdin)
        except OSError as e:
            raise ConnectError(f"cannot run {argv[0]}: {e.strerror or e}", node=node.name,
                               cause=f"cannot run {os.path.basename(argv[0])}") from None
        if r.timed_out:
            raise CommandTimeout(f"command did not finish within {timeout:g}s", node=node.name,
                                 cause=f"did not finish within {timeout:g}s",
                                 stdout=r.stdout, stderr=r.stderr)
        return CommandResult(node=node.name, argv=list(argv), rc=r.rc, stdout=r.stdout,
                             stderr=r.stderr, duration_s=r.duration_s, truncated=r.truncated)

    def close(self) -> None:
        """Stop commands still running (after an interrupt): only the process groups we started."""
        self._procs.kill_all()
