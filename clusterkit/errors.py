"""The one error tree of clusterkit.

::

    ClusterkitError                 any error clusterkit raises on purpose (exit 4 if unhandled)
    ├── UsageError                  bad input from the user (exit 2)
    │   ├── HostlistError           a hostlist expression that does not parse
    │   ├── ConfigError             a malformed inventory, profile, sim fleet, ssh_config,
    │   │                           known_hosts or identity: found before any node is contacted
    │   └── ParseError              tool output that is not that tool's output (quotes the line)
    ├── OutputError                 a report file that cannot be written (the run's verdict stands)
    └── TransportError              one node's command could not run (or not to the end)
        ├── ConnectError            TCP/SSH connection failed: node is *unreachable*
        ├── HostKeyError            unknown, changed or revoked host key: refused before anything runs
        ├── AuthError               authentication refused
        ├── ConnectionLost          the connection dropped while the command ran (it did start)
        ├── CommandTimeout          the command ran past its deadline (partial output kept)
        ├── TaskNotStarted          srun: the node's task never started (no allocation, node
        │                           down, step refused): nothing ran there
        └── InternalError           a bug in clusterkit met while running one node (exit 4)

    clusterkit.slurm.backend.SlurmError   Slurm could not be asked or refused (exit 3)
    └── SlurmUnavailable                  slurmctld does not answer

Every TransportError carries ``kind`` (a short status word for reports), ``cause`` (a short
description with no addresses or node names, so that 40 nodes refused for one reason group into
one line) and ``node``. Third-party exceptions (paramiko, socket, yaml, pydantic, subprocess) are
translated into these at the boundary where they happen; nothing above the transport sees a
paramiko exception.
"""

from __future__ import annotations

from typing import Optional


class ClusterkitError(Exception):
    """Base of every error clusterkit raises on purpose."""

    exit_code = 4

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(str(self.message).split()) or self.__class__.__name__


class UsageError(ClusterkitError):
    exit_code = 2


class HostlistError(UsageError):
    pass


class ConfigError(UsageError):
    pass


class ParseError(UsageError):
    """Text that a parser cannot read. Carries the line number (1-based) and the line."""

    def __init__(
        self,
        message: str,
        *,
        line_no: int | None = None,
        line: str | None = None,
        tool: str | None = None,
    ) -> None:
        self.line_no = line_no
        self.line = line
        self.tool = tool
        where = f"line {line_no}: " if line_no is not None else ""
        quoted = ""
        if line is not None:
            shown = line.strip()
            if len(shown) > 120:
                shown = shown[:117] + "..."
            quoted = f": {shown!r}"
        prefix = f"{tool}: " if tool else ""
        super().__init__(f"{prefix}{where}{message}{quoted}")


class OutputError(ClusterkitError):
    """A report file could not be written. The other outputs are still written and the exit
    code still gives the fleet's verdict; only a check before the run turns this into exit 2."""

    exit_code = 2


class TransportError(ClusterkitError):
    """A node-level failure to run a command.

    ``kind``: the short status word for reports; ``cause``: what went wrong without addresses or
    names (groups nodes); ``stdout``/``stderr``: whatever the command printed before it ended.
    """

    kind = "error"
    #: True when nothing ran on the node (the node is *unreachable*, not *error*).
    nothing_ran = False
    default_cause = "command failed"

    def __init__(self, message: str, *, node: str | None = None, cause: Optional[str] = None,
                 stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.cause = cause or self.default_cause
        self.stdout = stdout
        self.stderr = stderr

    def output_tail(self, n: int = 2000) -> str:
        """The end of what the command printed (stderr after stdout), for the report."""
        parts = [p for p in (self.stdout.strip(), self.stderr.strip()) if p]
        text = "\n".join(parts)
        return text[-n:]


class ConnectError(TransportError):
    kind = "unreachable"
    nothing_ran = True
    default_cause = "cannot connect"


class HostKeyError(TransportError):
    kind = "hostkey"
    nothing_ran = True
    default_cause = "host key refused"


class AuthError(TransportError):
    kind = "auth"
    nothing_ran = True
    default_cause = "authentication failed"


class ConnectionLost(TransportError):
    kind = "lost"
    default_cause = "connection lost while the command ran"


class CommandTimeout(TransportError):
    kind = "timeout"
    default_cause = "did not finish within the deadline"


class TaskNotStarted(TransportError):
    """srun never started this node's task (the allocation or step was refused, the node is
    down or drained): nothing ran there."""

    kind = "unreachable"
    nothing_ran = True
    default_cause = "srun task never started"


class InternalError(TransportError):
    """A bug in clusterkit met while handling one node: never reported as unreachable."""

    kind = "internal"
    exit_code = 4
    default_cause = "internal error"
