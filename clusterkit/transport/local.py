"""Local transport: run the argv as a subprocess on this machine (used by ``--sim``).

Per-node environment comes from ``env_for(node)``, e.g. ``CLUSTERKIT_NODE`` for a simulated node.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Callable, Optional

from clusterkit.errors import CommandTimeout, ConnectError
from clusterkit.models import Node
from clusterkit.transport import CommandResult


class LocalTransport:
    def __init__(self, env_for: Optional[Callable[[Node], dict[str, str]]] = None) -> None:
        self._env_for = env_for
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def run(self, node: Node, argv: list[str], *, timeout: float,
            stdin: Optional[bytes] = None) -> CommandResult:
        env = dict(os.environ)
        if self._env_for is not None:
            env.update(self._env_for(node))
        started = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env)
        except OSError as e:
            raise ConnectError(f"cannot run {argv[0]}: {e.strerror or e}", node=node.name) from None
        with self._lock:
            if self._closed:
                proc.kill()
            self._running.add(proc)
        try:
            out, err = proc.communicate(input=stdin or b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise CommandTimeout(f"command did not finish within {timeout:g}s", node=node.name) from None
        finally:
            with self._lock:
                self._running.discard(proc)
        return CommandResult(node=node.name, argv=list(argv), rc=proc.returncode,
                             stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                             duration_s=round(time.monotonic() - started, 3))

    def close(self) -> None:
        """Stop commands still running (after an interrupt): only the processes we started."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for proc in running:
            try:
                proc.kill()
            except OSError:
                pass
