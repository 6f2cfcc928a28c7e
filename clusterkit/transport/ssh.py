"""SSH transport on fabric/paramiko, strict about host keys.

Fabric resolves each node through ssh_config (HostName, Port, User, IdentityFile, ProxyJump,
ConnectTimeout) and keys or the agent authenticate. Fabric itself accepts any host key
(AutoAddPolicy) and reads no known_hosts, so every connection — ProxyJump hops included — is
hardened before use: known_hosts is loaded (ssh_config's UserKnownHostsFile and
GlobalKnownHostsFile, else ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts) and an unknown or
changed key is refused before anything runs. ``accept_new=True`` (``--accept-new-hostkeys``) is
the explicit opt-in that records unknown keys, like OpenSSH's ``accept-new``; a *changed* key is
refused even then.

The command is sent as one string (SSH carries no argv): ``shlex.join(argv)``, so every name is
quoted for the remote shell and nothing is interpolated. The channel is read directly (no
threads per command) with one deadline for the whole command.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import threading
import time
from typing import Any, Optional

from clusterkit.errors import AuthError, CommandTimeout, ConfigError, ConnectError, HostKeyError
from clusterkit.models import Node
from clusterkit.transport import CommandResult

MAX_OUTPUT = 32 * 1024 * 1024  # bytes of stdout kept per command
_KNOWN_HOSTS_LOCK = threading.Lock()


def _fingerprint(key: Any) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _make_policies():
    import paramiko

    class RejectUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):  # noqa: D401 - paramiko API
            raise HostKeyError(
                f"unknown host key for {hostname} ({key.get_name()} {_fingerprint(key)}): not in "
                "known_hosts; verify and add it, or pass --accept-new-hostkeys")

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        def __init__(self, path: Optional[str]) -> None:
            self.path = path

        def missing_host_key(self, client, hostname, key):
            client.get_host_keys().add(hostname, key.get_name(), key)
            if self.path:
                line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
                with _KNOWN_HOSTS_LOCK:
                    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                    with open(self.path, "a", encoding="utf-8") as fh:
                        fh.write(line)

    return RejectUnknown, AcceptNew


class SSHTransport:
    """Runs commands over SSH. One connection per command; safe to use from many threads."""

    def __init__(
        self,
        *,
        ssh_config: Optional[str] = None,
        user: Optional[str] = None,
        identity: Optional[str] = None,
        connect_timeout: float = 10.0,
        accept_new: bool = False,
    ) -> None:
        import fabric

        if ssh_config is not None and not os.path.isfile(ssh_config):
            raise ConfigError(f"ssh config {ssh_config}: no such file")
        if identity is not None and not os.path.isfile(identity):
            raise ConfigError(f"identity {identity}: no such file")
        overrides: dict[str, Any] = {"load_ssh_configs": True}
        try:
            if ssh_config is not None:
                self._config = fabric.Config(runtime_ssh_path=ssh_config, overrides=overrides)
            else:
                self._config = fabric.Config(overrides=overrides)
        except Exception as e:  # noqa: BLE001 - paramiko's parser raises assorted errors
            raise ConfigError(f"ssh config {ssh_config}: {e}") from None
        self._user = user
        self._identity = identity
        self._connect_timeout = connect_timeout
        self._accept_new = accept_new
        self._reject_cls, self._accept_cls = _make_policies()
        self._lock = threading.Lock()

    # -- host keys ---------------------------------------------------------------------------
    def _known_hosts_files(self, ssh_cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
        user = ssh_cfg.get("userknownhostsfile")
        glob = ssh_cfg.get("globalknownhostsfile")
        users = (user if isinstance(user, list) else str(user).split()) if user else ["~/.ssh/known_hosts"]
        globs = (glob if isinstance(glob, list) else str(glob).split()) if glob else ["/etc/ssh/ssh_known_hosts"]
        return [os.path.expanduser(p) for p in users], [os.path.expanduser(p) for p in globs]

    def _harden(self, conn: Any) -> None:
        """Strict host keys on this connection and on every ProxyJump hop behind it."""
        while conn is not None and not isinstance(conn, str):
            client = conn.client
            users, globs = self._known_hosts_files(conn.ssh_config)
            for path in globs + users:
                if os.path.isfile(path):
                    try:
                        client.load_system_host_keys(path)
                    except Exception as e:  # noqa: BLE001 - a corrupt known_hosts is a config error
                        raise ConfigError(f"known_hosts {path}: {e}") from None
            if self._accept_new:
                client.set_missing_host_key_policy(self._accept_cls(users[0] if users else None))
            else:
                client.set_missing_host_key_policy(self._reject_cls())
            conn = conn.gateway

    def _connection(self, node: Node) -> Any:
        import fabric

        kwargs: dict[str, Any] = {"connect_timeout": self._connect_timeout}
        user = node.user or self._user
        if user:
            kwargs["user"] = user
        if node.port:
            kwargs["port"] = node.port
        if self._identity:
            kwargs["connect_kwargs"] = {"key_filename": [self._identity]}
        try:
            # invoke's Config is not thread-safe: every connection gets its own copy, made
            # (with the ssh_config lookup) under a lock. Opening and running need no lock.
            with self._lock:
                conn = fabric.Connection(node.address, config=self._config.clone(), **kwargs)
        except Exception as e:  # noqa: BLE001 - bad ssh_config values surface here
            raise ConfigError(f"ssh settings for {node.name}: {e}") from None
        self._harden(conn)
        return conn

    def _open(self, conn: Any, node: Node) -> None:
        import paramiko

        try:
            conn.open()
        except (HostKeyError, ConfigError) as e:
            e.node = node.name
            raise
        except paramiko.BadHostKeyException as e:
            raise HostKeyError(
                f"host key for {e.hostname} CHANGED: got {e.key.get_name()} {_fingerprint(e.key)}, "
                "known_hosts has another; refusing (reinstalled node or man-in-the-middle)",
                node=node.name) from None
        except paramiko.AuthenticationException as e:
            raise AuthError(f"authentication failed for {conn.user}@{conn.host}: {e}", node=node.name) from None
        except paramiko.ssh_exception.NoValidConnectionsError as e:
            why = "; ".join(sorted({(err.strerror or str(err)) for err in e.errors.values()})) or "refused"
            raise ConnectError(f"cannot connect to {conn.host}:{conn.port}: {why}", node=node.name) from None
        except (socket.timeout, TimeoutError):
            raise ConnectError(f"connect to {conn.host}:{conn.port} timed out after {self._connect_timeout:g}s",
                               node=node.name) from None
        except socket.gaierror as e:
            raise ConnectError(f"cannot resolve {conn.host}: {e.strerror or e}", node=node.name) from None
        except paramiko.SSHException as e:
            raise ConnectError(f"SSH error with {conn.host}:{conn.port}: {e}", node=node.name) from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {conn.host}:{conn.port}: {e.strerror or e}",
                               node=node.name) from None

    # -- running -----------------------------------------------------------------------------
    def run(self, node: Node, argv: list[str], *, timeout: float,
            stdin: Optional[bytes] = None) -> CommandResult:
        started = time.monotonic()
        deadline = started + timeout
        conn = self._connection(node)
        try:
            self._open(conn, node)
            return self._exec(conn, node, argv, stdin, started, deadline, timeout)
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def _exec(self, conn: Any, node: Node, argv: list[str], stdin: Optional[bytes], started: float,
              deadline: float, timeout: float) -> CommandResult:
        import paramiko

        def left() -> float:
            rem = deadline - time.monotonic()
            if rem <= 0:
                raise CommandTimeout(f"command did not finish within {timeout:g}s", node=node.name)
            return rem

        try:
            chan = conn.client.get_transport().open_session(timeout=left())
            chan.exec_command(shlex.join(argv))
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            truncated = False
            while True:
                got = False
                while chan.recv_ready():
                    data = chan.recv(65536)
                    got = True
                    if len(out) < MAX_OUTPUT:
                        out += data
                    else:
                        truncated = True
                while chan.recv_stderr_ready():
                    data = chan.recv_stderr(65536)
                    got = True
                    if len(err) < 1024 * 1024:
                        err += data
                if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not got:
                    select.select([chan], [], [], min(left(), 1.0))
            if not chan.status_event.wait(left()):
                left()
            rc = chan.exit_status
            chan.close()
        except CommandTimeout:
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectError(f"connection lost while running the command: {e}", node=node.name) from None
        return CommandResult(node=node.name, argv=list(argv), rc=rc,
                             stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"),
                             duration_s=round(time.monotonic() - started, 3), truncated=truncated)

    def close(self) -> None:
        pass
