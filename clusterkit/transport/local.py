"""Local transport: run the argv as a subprocess on this machine (used by ``--sim``).

Per-node environment comes from ``env_for(node)``, e.g. ``CLUSTERKIT_NODE`` for a simulated node.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Callable, Optional

from clusterkit.errors import CommandTimeout, ConnectError
from clusterkit.models import Node
from clusterkit.transport import CommandResult


class LocalTransport:
    def __init__(self, env_for: Optional[Callable[[Node], dict[str, str]]] = None) -> None:
        self._env_for = env_for

    def run(self, node: Node, argv: list[str], *, timeout: float,
            stdin: Optional[bytes] = None) -> CommandResult:
        env = dict(os.environ)
        if self._env_for is not None:
            env.update(self._env_for(node))
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, input=stdin if stdin is not None else b"",
                                  capture_output=True, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"command did not finish within {timeout:g}s", node=node.name) from None
        except OSError as e:
            raise ConnectError(f"cannot run {argv[0]}: {e.strerror or e}", node=node.name) from None
        return CommandResult(node=node.name, argv=list(argv), rc=proc.returncode,
                             stdout=proc.stdout.decode("utf-8", "replace"),
                             stderr=proc.stderr.decode("utf-8", "replace"),
                             duration_s=round(time.monotonic() - started, 3))

    def close(self) -> None:
        pass
