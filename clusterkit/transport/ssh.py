"""SSH transport on paramiko, strict about host keys.

ssh_config is honoured for each node (HostName, Port, User, IdentityFile, IdentitiesOnly,
ProxyJump, ProxyCommand, UserKnownHostsFile, GlobalKnownHostsFile); keys or the agent
authenticate. The file is parsed once and each host is resolved once per run. (fabric's
Connection was used at first; it deep-copies its Config and re-resolves the whole ssh_config for
every connection, and its Config is not thread-safe: at 128 nodes the controller spent more
CPU there than on SSH itself.)

Host keys: the known_hosts files (ssh_config's UserKnownHostsFile and GlobalKnownHostsFile, else
~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts) are read once; every connection — ProxyJump
hops included — checks the server's key against them and refuses an unknown or changed key
before anything runs. ``accept_new=True`` (``--accept-new-hostkeys``) is the explicit opt-in that
records unknown keys, like OpenSSH's ``accept-new``; a *changed* key is refused even then.

The command is sent as one string (SSH carries no argv): ``shlex.join(argv)``, so every name is
quoted for the remote shell and nothing is interpolated. The channel is read directly (no
threads per command) with one deadline for the whole command, connection included.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import logging
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
MAX_STDERR = 1024 * 1024

# paramiko logs connection failures with tracebacks through the logging module; the transport
# reports them itself, once, in the node's report.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


def _fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _split_paths(value: Any, default: list[str]) -> list[str]:
    if not value:
        return [os.path.expanduser(p) for p in default]
    items = value if isinstance(value, list) else str(value).split()
    return [os.path.expanduser(p) for p in items if p.lower() != "none"]


class _KnownHosts:
    """known_hosts files read once, shared by every connection (read-only after loading)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], Any] = {}

    def keys_for(self, paths: list[str]) -> Any:
        import paramiko

        key = tuple(paths)
        with self._lock:
            if key not in self._cache:
                hk = paramiko.HostKeys()
                for path in paths:
                    if os.path.isfile(path):
                        try:
                            hk.load(path)
                        except Exception as e:  # noqa: BLE001 - corrupt file: one clear line
                            raise ConfigError(f"known_hosts {path}: {e}") from None
                self._cache[key] = hk
            return self._cache[key]

    def add(self, paths: list[str], record_to: Optional[str], hostname: str, key: Any) -> None:
        with self._lock:
            self._cache[tuple(paths)].add(hostname, key.get_name(), key)
            if record_to:
                os.makedirs(os.path.dirname(os.path.abspath(record_to)), exist_ok=True)
                with open(record_to, "a", encoding="utf-8") as fh:
                    fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _policy(known: _KnownHosts, paths: list[str], accept_new: bool, record_to: Optional[str]) -> Any:
    """A paramiko policy that does all host-key checking against the shared known_hosts.

    The SSHClient is given no host keys of its own, so paramiko hands every server key to this
    policy: a listed matching key passes, a listed different key is a changed key (refused
    always), an unlisted host is unknown (refused unless accept_new).
    """
    import paramiko

    class Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):  # noqa: D401 - paramiko API
            listed = known.keys_for(paths).lookup(hostname)
            if listed is not None and key.get_name() in listed:
                if listed[key.get_name()] == key:
                    return
                raise HostKeyError(
                    f"host key for {hostname} CHANGED: got {key.get_name()} {_fingerprint(key)}, "
                    "known_hosts has another; refusing (reinstalled node or man-in-the-middle)")
            if listed is not None and not accept_new:
                raise HostKeyError(
                    f"host key for {hostname} CHANGED: got {key.get_name()} {_fingerprint(key)}, "
                    f"known_hosts lists only {', '.join(sorted(listed.keys()))}; refusing")
            if accept_new and listed is None:
                known.add(paths, record_to, hostname, key)
                return
            raise HostKeyError(
                f"unknown host key for {hostname} ({key.get_name()} {_fingerprint(key)}): not in "
                "known_hosts; verify and add it, or pass --accept-new-hostkeys")

    return Policy()


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
        import paramiko

        if ssh_config is not None and not os.path.isfile(ssh_config):
            raise ConfigError(f"ssh config {ssh_config}: no such file")
        if identity is not None and not os.path.isfile(identity):
            raise ConfigError(f"identity {identity}: no such file")
        path = ssh_config or os.path.expanduser("~/.ssh/config")
        self._config = paramiko.SSHConfig()
        if os.path.isfile(path):
            try:
                self._config = paramiko.SSHConfig.from_path(path)
            except Exception as e:  # noqa: BLE001 - paramiko's parser raises assorted errors
                raise ConfigError(f"ssh config {path}: {e}") from None
        self._user = user
        self._identity = identity
        self._connect_timeout = connect_timeout
        self._accept_new = accept_new
        self._known = _KnownHosts()
        self._lock = threading.Lock()
        self._resolved: dict[str, dict[str, Any]] = {}
        self._open_clients: set[Any] = set()
        self._closed = False

    # -- configuration ------------------------------------------------------------------------
    def resolve(self, host: str) -> dict[str, Any]:
        """ssh_config options for ``host`` (cached: each host is looked up once)."""
        with self._lock:
            opts = self._resolved.get(host)
        if opts is None:
            try:
                opts = dict(self._config.lookup(host))
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"ssh config for {host}: {e}") from None
            with self._lock:
                self._resolved[host] = opts
        return opts

    def _target(self, host: str, *, user: Optional[str] = None, port: Optional[int] = None
                ) -> dict[str, Any]:
        o = self.resolve(host)
        try:
            resolved_port = int(port or o.get("port") or 22)
        except ValueError:
            raise ConfigError(f"ssh config for {host}: bad Port {o.get('port')!r}") from None
        identities = [os.path.expanduser(p) for p in o.get("identityfile", [])]
        if self._identity:
            identities.insert(0, self._identity)
        identities_only = str(o.get("identitiesonly", "no")).lower() == "yes"
        users = _split_paths(o.get("userknownhostsfile"), ["~/.ssh/known_hosts"])
        globs = _split_paths(o.get("globalknownhostsfile"), ["/etc/ssh/ssh_known_hosts"])
        return {
            "alias": host,
            "hostname": o.get("hostname", host),
            "port": resolved_port,
            "user": self._user or user or o.get("user") or getpass.getuser(),
            "identities": [p for p in identities if os.path.isfile(p)],
            "identities_only": identities_only,
            "known_hosts": globs + users,
            "record_to": users[0] if users else None,
            "proxyjump": o.get("proxyjump"),
            "proxycommand": o.get("proxycommand"),
        }

    # -- connecting ------------------------------------------------------------------------
    def _client(self, t: dict[str, Any], sock: Any, node: Node) -> Any:
        import paramiko

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(
            _policy(self._known, t["known_hosts"], self._accept_new, t["record_to"]))
        kwargs: dict[str, Any] = dict(
            hostname=t["hostname"], port=t["port"], username=t["user"], timeout=self._connect_timeout,
            banner_timeout=self._connect_timeout, auth_timeout=self._connect_timeout,
            channel_timeout=self._connect_timeout, sock=sock,
        )
        if t["identities"]:
            kwargs["key_filename"] = t["identities"]
            kwargs["look_for_keys"] = False
            kwargs["allow_agent"] = not t["identities_only"]
        try:
            client.connect(**kwargs)
        except (HostKeyError, ConfigError) as e:
            e.node = node.name
            client.close()
            raise
        except Exception as e:  # noqa: BLE001 - translated below
            client.close()
            raise self._translate(e, t, node) from None
        return client

    def _translate(self, e: Exception, t: dict[str, Any], node: Node) -> Exception:
        import paramiko

        where = f"{t['hostname']}:{t['port']}"
        if isinstance(e, paramiko.AuthenticationException):
            return AuthError(f"authentication failed for {t['user']}@{where}: {e}", node=node.name)
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            why = "; ".join(sorted({(err.strerror or str(err)) for err in e.errors.values()})) or "refused"
            return ConnectError(f"cannot connect to {where}: {why}", node=node.name)
        if isinstance(e, (socket.timeout, TimeoutError)):
            return ConnectError(f"connect to {where} timed out after {self._connect_timeout:g}s", node=node.name)
        if isinstance(e, socket.gaierror):
            return ConnectError(f"cannot resolve {t['hostname']}: {e.strerror or e}", node=node.name)
        if isinstance(e, paramiko.SSHException):
            text = " ".join(str(e).split())
            if "banner" in text.lower() or text == "No existing session":
                return ConnectError(f"no SSH handshake with {where} within {self._connect_timeout:g}s: the "
                                    f"server sent no SSH banner or closed the connection ({text})",
                                    node=node.name)
            return ConnectError(f"SSH error with {where}: {text}", node=node.name)
        if isinstance(e, OSError):
            return ConnectError(f"cannot connect to {where}: {e.strerror or e}", node=node.name)
        return ConnectError(f"cannot connect to {where}: {type(e).__name__}: {e}", node=node.name)

    def _connect(self, node: Node) -> tuple[Any, list[Any]]:
        """The connected client for ``node`` and every client opened on the way (to close)."""
        import paramiko

        t = self._target(node.address, user=node.user, port=node.port)
        opened: list[Any] = []
        sock: Any = None
        try:
            jump = t["proxyjump"]
            if jump and str(jump).lower() != "none":
                # user@host:port,user@host:port,... each hop reached through the one before
                chain = []
                for hop in (h.strip() for h in str(jump).split(",") if h.strip()):
                    hop_user, _, rest = hop.rpartition("@")
                    hop_host, _, hop_port = rest.partition(":")
                    try:
                        port = int(hop_port) if hop_port else None
                    except ValueError:
                        raise ConfigError(f"ssh config for {node.address}: bad ProxyJump {hop!r}") from None
                    chain.append(self._target(hop_host, user=hop_user or None, port=port))
                chain.append(t)
                for hop_t, next_t in zip(chain, chain[1:]):
                    client = self._client(hop_t, sock, node)
                    opened.append(client)
                    sock = self._channel(client, next_t, node)
            elif t["proxycommand"] and str(t["proxycommand"]).lower() != "none":
                sock = paramiko.ProxyCommand(t["proxycommand"])
            final = self._client(t, sock, node)
            opened.append(final)
            return final, opened
        except BaseException:
            for c in opened:
                c.close()
            raise

    def _channel(self, client: Any, t: dict[str, Any], node: Node) -> Any:
        """A direct-tcpip channel from a jump host to the next hop or the target."""
        try:
            return client.get_transport().open_channel(
                "direct-tcpip", (t["hostname"], t["port"]), ("127.0.0.1", 0), timeout=self._connect_timeout)
        except Exception as e:  # noqa: BLE001
            raise ConnectError(f"jump host could not reach {t['hostname']}:{t['port']}: {e}",
                               node=node.name) from None

    # -- running -----------------------------------------------------------------------------
    def run(self, node: Node, argv: list[str], *, timeout: float,
            stdin: Optional[bytes] = None) -> CommandResult:
        started = time.monotonic()
        deadline = started + timeout
        client, opened = self._connect(node)
        with self._lock:
            self._open_clients.update(opened)
            closed = self._closed
        try:
            if closed:
                raise ConnectError("run interrupted", node=node.name)
            return self._exec(client, node, argv, stdin, started, deadline, timeout)
        finally:
            with self._lock:
                self._open_clients.difference_update(opened)
            for c in reversed(opened):
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass

    def _exec(self, client: Any, node: Node, argv: list[str], stdin: Optional[bytes], started: float,
              deadline: float, timeout: float) -> CommandResult:
        import paramiko

        def left() -> float:
            rem = deadline - time.monotonic()
            if rem <= 0:
                raise CommandTimeout(f"command did not finish within {timeout:g}s", node=node.name)
            return rem

        try:
            chan = client.get_transport().open_session(timeout=left())
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
                    if len(err) < MAX_STDERR:
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
        """Close connections still open (after an interrupt): their commands end with them."""
        with self._lock:
            self._closed = True
            clients = list(self._open_clients)
        for c in clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
