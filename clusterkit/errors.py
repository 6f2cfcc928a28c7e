"""The one error tree of clusterkit.

::

    ClusterkitError                 any error clusterkit raises on purpose (exit 4 if unhandled)
    ├── UsageError                  bad input from the user (exit 2)
    │   ├── HostlistError           a hostlist expression that does not parse
    │   ├── ConfigError             a malformed inventory, profile, sim fleet or ssh_config
    │   └── ParseError              tool output that is not that tool's output (quotes the line)
    └── TransportError              a node could not be reached or a command could not run
        ├── ConnectError            TCP/SSH connection failed: node is *unreachable*
        ├── HostKeyError            unknown or changed host key: refused before anything runs
        ├── AuthError               authentication refused
        └── CommandTimeout          the command ran past its timeout

Third-party exceptions (paramiko, socket, yaml, pydantic) are translated into these at the
boundary where they happen; nothing above the transport sees a paramiko exception.
"""

from __future__ import annotations


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


class TransportError(ClusterkitError):
    """A node-level failure to run a command. ``kind`` is the short status word for reports."""

    kind = "error"

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class ConnectError(TransportError):
    kind = "unreachable"


class HostKeyError(TransportError):
    kind = "hostkey"


class AuthError(TransportError):
    kind = "auth"


class CommandTimeout(TransportError):
    kind = "timeout"
