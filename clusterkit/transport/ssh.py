"""SSH transport on paramiko (``--transport paramiko``), strict about host keys.

What it honours, read by :mod:`clusterkit.transport.sshconfig` (the user's ``~/.ssh/config``
then ``/etc/ssh/ssh_config``, or only ``--ssh-config FILE``, like ``ssh -F``), each host
resolved once per run:

- ``Include`` (recursive, globs, relative to ``~/.ssh``), ``Host``/``Match`` (``host``,
  ``originalhost``, ``user``, ``localuser``, ``tagged``, ``all``, ``canonical``/``final``),
  ``HostName``, ``Port``, ``User``, ``IdentityFile`` (and ``FILE-cert.pub`` beside it),
  ``IdentitiesOnly``, ``IdentityAgent``, ``ProxyJump`` (chains; a hop's own config applies),
  ``ProxyCommand`` (run by ``/bin/sh``), ``UserKnownHostsFile``, ``GlobalKnownHostsFile``,
  ``HostKeyAlias``, ``HashKnownHosts`` (for keys recorded with ``--accept-new-hostkeys``),
  ``HostKeyAlgorithms``, ``KexAlgorithms``, ``Ciphers``, ``MACs``,
  ``PubkeyAcceptedAlgorithms``, ``AddressFamily``, ``BindAddress``, ``Compression``,
  ``SetEnv``/``SendEnv`` (subject to the server's AcceptEnv), ``IgnoreUnknown``.
- Refused in one line from :meth:`SSHTransport.prepare` (ConfigError, exit 2), for the hosts
  they apply to, pointing to ``--transport openssh``: ``Match exec`` (and ``localnetwork``),
  ``CanonicalizeHostname yes|always``, ``CertificateFile``, ``PKCS11Provider``,
  ``KnownHostsCommand``, ``RevokedHostKeys``, ``ProxyUseFdpass``, ``BindInterface``.
- Accepted and ignored (they do not change what a non-interactive command does, or clusterkit
  decides them itself): ControlMaster/ControlPath/ControlPersist (one connection per command
  here), forwardings, X11, agent forwarding, LogLevel, BatchMode, RequestTTY (never a tty),
  ServerAlive*, GSSAPI* (only keys and the agent authenticate), ``ConnectTimeout`` (the
  ``--connect-timeout`` option decides) and ``StrictHostKeyChecking`` (always strict; only
  ``--accept-new-hostkeys`` records unknown keys).
- An unknown keyword is an error, as for ssh(1), unless ``IgnoreUnknown`` covers it.

Who and where: ``--user`` (else the inventory's ``user``) and the inventory's ``port`` act like
``ssh -l``/``-p`` for the node itself; a jump host's user and port come from the ProxyJump
entry or its own Host block (as with ``ssh -J``). ``--identity`` is offered on every hop.

Identities: ``--identity`` (must exist), then the host's ``IdentityFile`` lines; an
IdentityFile named for the host that exists neither as a file nor as ``FILE.pub`` is a
ConfigError (a typo would otherwise surface as "authentication failed" on every node). With no
IdentityFile, the default keys (``~/.ssh/id_ed25519`` …) that exist are used and the missing
ones skipped silently, as OpenSSH does. A passphrase-protected identity is used through the
agent key with the same public key (from ``FILE.pub`` or the OpenSSH key header), so
``IdentitiesOnly yes`` + an agent-loaded key works; with no agent holding it the node fails with
an AuthError that says so. Without ``IdentitiesOnly`` the agent's other keys are offered too.

Host keys (:mod:`clusterkit.transport.knownhosts`): the known_hosts files are read once and
shared by every thread; every connection, jump hosts included, is checked against them. The
name looked up is the HostKeyAlias, else ``host`` (port 22) or ``[host]:port``. Only the
host-key algorithms of the keys known_hosts lists for that host are offered (``ssh-rsa`` means
the rsa-sha2 signatures), so a server with several key types connects with the one listed. An
unknown key is refused unless ``--accept-new-hostkeys`` (then recorded, hashed if
HashKnownHosts); a changed or ``@revoked`` key is refused always; a host covered only by a
``@cert-authority`` line is refused in one line pointing to ``--transport openssh`` (paramiko
cannot verify host certificates) — such a line never affects other hosts.

Jump hosts: one SSH connection per jump host (per chain) is opened once, under a lock, and
shared by every node behind it (one ``direct-tcpip`` channel each); a dead one is reopened. A
stock bastion (``MaxStartups 10:30:100``) then sees one handshake, not one per node.

Running: the argv is sent as one ``shlex.join`` string (every word quoted for the remote shell)
with ``env NAME=value`` in front for ``env``. ``timeout`` bounds everything, connection
included (connect, banner and authentication wait ``min(connect_timeout, time left)``); one
watchdog thread closes the connection of a run whose deadline passed, so no call blocks past
it. A timed-out command gets SIGTERM (a ``signal`` request) and its connection closed; its
partial output rides on the CommandTimeout. ``hold_stdin``: stdin is written and left open
until the command exits; closing the connection gives the remote command end-of-file. A
connection that drops while the command runs is a ConnectionLost at once (with the output so
far). Errors carry short causes (``connection refused``, ``no SSH banner``, ``unknown host
key``, …) without addresses; paramiko's logging is silenced; an exception this module does not
expect propagates (the fan-out reports it as an internal error, exit 4).
"""

from __future__ import annotations

import base64
import heapq
import itertools
import logging
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from clusterkit.errors import (
    AuthError,
    CommandTimeout,
    ConfigError,
    ConnectError,
    ConnectionLost,
    HostKeyError,
    TransportError,
)
from clusterkit.models import Node
from clusterkit.transport import BaseTransport, CommandResult, env_argv
from clusterkit.transport.knownhosts import (
    HostKeys,
    KnownHosts,
    KnownHostsCache,
    match_pattern,
    fingerprint,
    key_type_of,
    lookup_name,
)
from clusterkit.transport.sshconfig import (
    HostConfig,
    SSHConfig,
    algorithm_list,
    host_config,
)

MAX_OUTPUT = 32 * 1024 * 1024  # bytes of stdout kept per command
MAX_STDERR = 1024 * 1024
MAX_ROUTE_DEPTH = 8  # jump hosts behind jump hosts
POLL_S = 0.2  # longest wait between liveness checks while a command runs
#: the watchdog closes a run's connection this long after its deadline: every step meets the
#: deadline itself (and a timed-out command first gets its SIGTERM); the watchdog is only there
#: for a call that would block past it
WATCHDOG_GRACE_S = 0.5

DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk",
                      "~/.ssh/id_ed25519", "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss")

#: host-key algorithms paramiko can use for a key type found in known_hosts
HOSTKEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}
#: OpenSSH names paramiko knows under another name
ALGORITHM_ALIASES = {"curve25519-sha256": "curve25519-sha256@libssh.org"}

# paramiko logs connection failures with tracebacks through the logging module; the transport
# reports them itself, once, in the node's report.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------- watchdog
class _Watchdog:
    """One thread that calls a function when its deadline passes (unless cancelled first)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def add(self, when: float, fn: Callable[[], None]) -> int:
        with self._cv:
            token = next(self._seq)
            heapq.heappush(self._heap, (when, token, fn))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="ck-ssh-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cv:
            self._cancelled.add(token)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    while self._heap and self._heap[0][1] in self._cancelled:
                        self._cancelled.discard(heapq.heappop(self._heap)[1])
                    if not self._heap:
                        self._cv.wait(30.0)
                        if not self._heap:
                            self._thread = None
                            return
                        continue
                    when = self._heap[0][0]
                    now = time.monotonic()
                    if when <= now:
                        _, token, fn = heapq.heappop(self._heap)
                        break
                    self._cv.wait(when - now)
            try:
                fn()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


class _Run:
    """One node's run: its deadline, and what to close when the deadline passes."""

    def __init__(self, node: Node, timeout: float, connect_timeout: float) -> None:
        self.node = node
        self.started = time.monotonic()
        self.timeout = timeout
        self.deadline = self.started + max(0.0, timeout)
        self.connect_timeout = connect_timeout
        self.expired = False
        self.aborted = False
        self._lock = threading.Lock()
        self._open: list[Any] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self) -> float:
        """How long one connection step may wait: min(connect_timeout, time left)."""
        return max(0.0, min(self.connect_timeout, self.left()))

    def track(self, obj: Any) -> None:
        with self._lock:
            dead = self.expired or self.aborted
            if not dead:
                self._open.append(obj)
        if dead:
            _close_quietly(obj)

    def untrack(self, obj: Any) -> None:
        with self._lock:
            if obj in self._open:
                self._open.remove(obj)

    def _close_all(self) -> None:
        with self._lock:
            objs, self._open = list(self._open), []
        for obj in reversed(objs):
            _close_quietly(obj)

    def expire(self) -> None:
        self.expired = True
        self._close_all()

    def abort(self) -> None:
        self.aborted = True
        self._close_all()

    def close(self) -> None:
        self._close_all()


def _close_quietly(obj: Any) -> None:
    try:
        obj.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


# ----------------------------------------------------------------------------- paramiko glue
def _paramiko() -> Any:
    import paramiko

    return paramiko


_TRANSPORT_CLASS: Any = None


def _transport_class() -> Any:
    """paramiko.Transport that also records ``exit-signal`` (paramiko drops it)."""
    global _TRANSPORT_CLASS
    if _TRANSPORT_CLASS is None:
        paramiko = _paramiko()
        from paramiko.channel import Channel
        from paramiko.common import MSG_CHANNEL_CLOSE, MSG_CHANNEL_REQUEST

        def handle_request(chan: Any, m: Any) -> None:
            pos = m.packet.tell()
            try:
                if m.get_text() == "exit-signal":
                    m.get_boolean()
                    chan.ck_exit_signal = m.get_text() or "KILL"
                    chan.status_event.set()
                    return
            except Exception:  # noqa: BLE001 - not ours to judge: let paramiko read it
                pass
            m.packet.seek(pos)
            Channel._handle_request(chan, m)  # type: ignore[attr-defined]

        def handle_close(chan: Any, m: Any) -> None:
            # paramiko builds a message under the channel's lock and sends it after releasing
            # it, so the CLOSE answering the server's could overtake DATA that another thread
            # is sending: OpenSSH then drops the whole connection ("data packet referred to
            # nonexistent channel") - on a shared jump host, every node behind it.
            lock = getattr(chan, "ck_send_lock", None)
            if lock is None:
                Channel._handle_close(chan, m)  # type: ignore[attr-defined]
                return
            with lock:
                Channel._handle_close(chan, m)  # type: ignore[attr-defined]

        class _Transport(paramiko.Transport):  # type: ignore[name-defined]
            _channel_handler_table = dict(paramiko.Transport._channel_handler_table)
            _channel_handler_table[MSG_CHANNEL_REQUEST] = handle_request
            _channel_handler_table[MSG_CHANNEL_CLOSE] = handle_close

        _TRANSPORT_CLASS = _Transport
    return _TRANSPORT_CLASS


def disabled_hostkey_algorithms(known: HostKeys, allowed: Sequence[str], hostkey_name: str, node: str,
                                remedy: str = "use --transport openssh") -> list[str]:
    """The host-key algorithms paramiko must not accept from this host: those outside
    ``allowed`` and, when known_hosts lists the host, those none of its keys can vouch for (so
    that the server shows a key known_hosts can check). HostKeyError when none is left."""
    offered = _paramiko().Transport._preferred_keys
    allowed = list(allowed)
    types = known.key_types()
    if types:
        wanted = {a for t in types for a in HOSTKEY_ALGORITHMS.get(t, ())}
        allowed = [a for a in allowed if a in wanted]
        if not allowed:
            raise HostKeyError(f"host key for {hostkey_name}: known_hosts lists only {', '.join(types)} keys, "
                               f"which paramiko cannot check here; {remedy}", node=node,
                               cause=f"host key type unsupported ({remedy})")
    return [a for a in offered if a not in allowed]


class _ProxyCommandSock:
    """A ProxyCommand run by /bin/sh (as ssh runs it), used as the connection's socket."""

    def __init__(self, command: str) -> None:
        self.command = command
        self._err = tempfile.TemporaryFile()
        self.process = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._err, bufsize=0, start_new_session=True)
        self.timeout: Optional[float] = None
        self.closed = False
        self._tail: Optional[str] = None

    def send(self, data: bytes) -> int:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(data)
            return len(data)
        except (OSError, ValueError) as e:
            raise OSError(f"ProxyCommand: {e}") from None

    def recv(self, size: int) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        r, _, _ = select.select([fd], [], [], self.timeout)
        if not r:
            raise socket.timeout()
        return os.read(fd, size)

    def settimeout(self, timeout: Optional[float]) -> None:
        self.timeout = timeout

    def stderr_tail(self) -> str:
        """The end of what the command wrote to stderr. Asked when the connection failed: a
        command that is ending gets a moment to finish (and finish writing) first, and what a
        running one has said so far is not kept as its last word."""
        if self._tail is not None:
            return self._tail
        try:
            self.process.wait(0.5)
        except subprocess.TimeoutExpired:
            pass
        try:
            self._err.seek(0)
            tail = _one_line(self._err.read()[-300:].decode("utf-8", "replace"))
        except (OSError, ValueError):
            return ""
        if self.process.poll() is not None:
            self._tail = tail
        return tail

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except OSError:
                pass
        for f in (self.process.stdin, self.process.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            self.process.wait(2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
            self.process.wait()
        self.stderr_tail()  # kept for the error message: the file goes now
        self._err.close()


class _ChannelSock:
    """A jump host's direct-tcpip channel used as the next connection's socket.

    A send and a close never overlap (see ``handle_close``): the CLOSE of a channel can then
    never reach the jump host before DATA sent just before it."""

    def __init__(self, chan: Any) -> None:
        self.chan = chan
        self.lock = threading.Lock()
        chan.ck_send_lock = self.lock

    def send(self, data: bytes) -> int:
        with self.lock:
            return int(self.chan.send(data))

    def recv(self, size: int) -> bytes:
        return bytes(self.chan.recv(size))

    def settimeout(self, timeout: Optional[float]) -> None:
        self.chan.settimeout(timeout)

    def close(self) -> None:
        with self.lock:
            self.chan.close()


class _Agent:
    """A connection to an ssh-agent socket (one per connection attempt: not thread-safe)."""

    def __init__(self, path: str, timeout: float) -> None:
        from paramiko.agent import AgentSSH

        self._agent = AgentSSH()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(max(0.5, timeout))
        conn.connect(path)
        try:
            self._agent._connect(conn)  # type: ignore[attr-defined]
        except BaseException:
            conn.close()
            raise

    def keys(self) -> tuple[Any, ...]:
        return tuple(self._agent.get_keys())

    def close(self) -> None:
        self._agent._close()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- identities
@dataclass
class _Identity:
    path: str
    key: Any = None  # a paramiko PKey we can sign with
    public_blob: Optional[bytes] = None
    encrypted: bool = False


def _openssh_header(data: bytes) -> tuple[Optional[str], Optional[bytes]]:
    """(cipher name, public key blob) from an ``openssh-key-v1`` private key; Nones if not."""
    text = data.decode("ascii", "replace")
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin not in text or end not in text:
        return None, None
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        raw = base64.b64decode("".join(body.split()))
    except ValueError:
        return None, None
    magic = b"openssh-key-v1\x00"
    if not raw.startswith(magic):
        return None, None
    pos = len(magic)

    def string() -> bytes:
        nonlocal pos
        (n,) = struct.unpack(">I", raw[pos:pos + 4])
        pos += 4
        out = raw[pos:pos + n]
        pos += n
        return out

    try:
        cipher = string().decode("ascii")
        string()  # kdf name
        string()  # kdf options
        (count,) = struct.unpack(">I", raw[pos:pos + 4])
        pos += 4
        blob = string() if count >= 1 else None
    except (struct.error, UnicodeDecodeError):
        return None, None
    return cipher, blob


def _pub_file_blob(path: str) -> Optional[bytes]:
    try:
        with open(path + ".pub", encoding="utf-8", errors="replace") as fh:
            fields = fh.read().split()
    except OSError:
        return None
    for i in range(len(fields) - 1):
        try:
            blob = base64.b64decode(fields[i + 1], validate=True)
        except ValueError:
            continue
        if key_type_of(blob) == fields[i]:
            return blob
    return None


def load_identity(path: str) -> _Identity:
    """Read one identity without a passphrase; ConfigError when it is no key paramiko reads."""
    paramiko = _paramiko()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        blob = _pub_file_blob(path)
        if blob is None:
            raise ConfigError(f"identity {path}: no such file") from None
        return _Identity(path, public_blob=blob)  # its private half lives in an agent
    except OSError as e:
        raise ConfigError(f"identity {path}: cannot read it: {e.strerror or e}") from None
    cipher, blob = _openssh_header(data)
    encrypted = (cipher is not None and cipher != "none") or (
        cipher is None and (b"ENCRYPTED" in data[:400]))
    if encrypted:
        return _Identity(path, public_blob=blob or _pub_file_blob(path), encrypted=True)
    try:
        key = paramiko.PKey.from_path(path)
    except paramiko.UnknownKeyType:
        kind = key_type_of(blob) if blob else "this key type"
        raise ConfigError(f"identity {path}: {kind} keys are not supported by paramiko; use "
                          "--transport openssh (or an agent that holds the key)") from None
    except (paramiko.SSHException, ValueError, TypeError, OSError) as e:
        raise ConfigError(f"identity {path}: not a private key paramiko can read "
                          f"({_one_line(e) or type(e).__name__})") from None
    return _Identity(path, key=key, public_blob=key.asbytes())


class _KeyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _Identity | ConfigError] = {}

    def get(self, path: str) -> _Identity:
        with self._lock:
            got = self._keys.get(path)
        if got is None:
            try:
                got = load_identity(path)
            except ConfigError as e:
                got = e
            with self._lock:
                got = self._keys.setdefault(path, got)
        if isinstance(got, ConfigError):
            raise ConfigError(got.message)
        return got


# ----------------------------------------------------------------------------- routes
@dataclass(frozen=True)
class _Hop:
    """One SSH connection to make: the host's configuration and what it is reached through."""

    cfg: HostConfig
    via: Optional["_Hop"]  # the jump host's connection (shared), or None
    identities: tuple[str, ...]  # --identity, then IdentityFile lines
    explicit: tuple[str, ...]  # where each identity was named (for messages)

    @property
    def where(self) -> str:
        return f"{self.cfg.hostname}:{self.cfg.port}"

    @property
    def hostkey_name(self) -> str:
        c = self.cfg
        return lookup_name(c.hostname.lower(), c.port, c.host_key_alias)


@dataclass
class _HopInfo:
    known: KnownHosts
    disabled: dict[str, list[str]] = field(default_factory=dict)  # kex, ciphers, macs, pubkeys
    hostkey_algorithms: list[str] = field(default_factory=list)  # allowed by the config


class _JumpSlot:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.transport: Any = None
        self.attempts = 0
        self.failure: Optional[tuple[int, TransportError]] = None


# ----------------------------------------------------------------------------- transport
class SSHTransport(BaseTransport):
    """Runs commands over SSH with paramiko. One connection per command (jump hosts shared);
    safe to use from many threads."""

    name = "paramiko"

    def __init__(
        self,
        *,
        ssh_config: Optional[str] = None,
        user: Optional[str] = None,
        identity: Optional[str] = None,
        connect_timeout: float = 10.0,
        accept_new: bool = False,
    ) -> None:
        self._ssh_config_path = ssh_config
        self._user = user
        self._identity = os.path.abspath(os.path.expanduser(identity)) if identity else None
        self._connect_timeout = float(connect_timeout)
        self._accept_new = accept_new
        self._lock = threading.Lock()
        self._config: Optional[SSHConfig] = None
        self._known = KnownHostsCache()
        self._keys = _KeyCache()
        self._routes: dict[tuple[str, Optional[str], Optional[int]], _Hop | ConfigError] = {}
        self._infos: dict[_Hop, _HopInfo] = {}
        self._jumps: dict[_Hop, _JumpSlot] = {}
        self._runs: set[_Run] = set()
        self._watchdog = _Watchdog()
        self._closed = False

    # -- configuration ------------------------------------------------------------------------
    def _ssh_config(self) -> SSHConfig:
        with self._lock:
            if self._config is not None:
                return self._config
        if self._ssh_config_path is not None:
            files = [(os.path.expanduser(self._ssh_config_path), True)]
        else:
            files = [(os.path.expanduser("~/.ssh/config"), False), ("/etc/ssh/ssh_config", False)]
        cfg = SSHConfig(files)
        with self._lock:
            if self._config is None:
                self._config = cfg
            return self._config

    def prepare(self, nodes: Sequence[Node]) -> None:
        """Resolve every node's route (jump hosts included), read its known_hosts files and
        identities: any ConfigError is raised here, before a node is contacted."""
        if self._identity is not None and not (os.path.isfile(self._identity)
                                               or os.path.isfile(self._identity + ".pub")):
            raise ConfigError(f"identity {self._identity}: no such file")
        self._ssh_config()
        seen: set[_Hop] = set()
        for node in nodes:
            hop: Optional[_Hop] = self._route_for(node)
            while hop is not None and hop not in seen:
                seen.add(hop)
                self._info(hop)
                self._identities(hop)
                hop = hop.via

    def _route_for(self, node: Node) -> _Hop:
        key = (node.address, self._user or node.user, node.port)
        with self._lock:
            got = self._routes.get(key)
        if got is None:
            try:
                got = self._route(node.address, self._user or node.user, node.port, 0)
            except ConfigError as e:
                got = e
            with self._lock:
                got = self._routes.setdefault(key, got)
        if isinstance(got, ConfigError):
            raise ConfigError(got.message)
        return got

    def _route(self, host: str, user: Optional[str], port: Optional[int], depth: int,
               via: Optional[_Hop] = None, use_own_proxy: bool = True) -> _Hop:
        if depth > MAX_ROUTE_DEPTH:
            raise ConfigError(f"ssh config: ProxyJump chain to {host} is deeper than "
                              f"{MAX_ROUTE_DEPTH} hops (a loop?)")
        cfg = host_config(self._ssh_config().lookup(host, user=user, port=port))
        if cfg.refusals:
            raise ConfigError(cfg.refusals[0])
        if use_own_proxy and cfg.proxy_jump:
            first = cfg.proxy_jump[0]
            via = self._route(first.host, first.user, first.port, depth + 1)
            for hop in cfg.proxy_jump[1:]:
                via = self._route(hop.host, hop.user, hop.port, depth + 1, via=via,
                                  use_own_proxy=False)
        if not use_own_proxy or cfg.proxy_jump:
            cfg = _replace(cfg, proxy_command=None)
        identities = tuple(([self._identity] if self._identity else []) + list(cfg.identity_files))
        explicit = tuple((["--identity"] if self._identity else []) + list(cfg.identity_where))
        return _Hop(cfg, via, identities, explicit)

    def _info(self, hop: _Hop) -> _HopInfo:
        with self._lock:
            got = self._infos.get(hop)
        if got is not None:
            return got
        cfg = hop.cfg
        paths = list(cfg.user_known_hosts) + list(cfg.global_known_hosts)
        known = self._known.view(paths, record_to=cfg.user_known_hosts[0]
                                 if cfg.user_known_hosts else None,
                                 hash_names=cfg.hash_known_hosts)
        known.load()
        info = _HopInfo(known)
        T = _paramiko().Transport
        defaults = {"kexalgorithms": ("kex", T._preferred_kex),
                    "ciphers": ("ciphers", T._preferred_ciphers),
                    "macs": ("macs", T._preferred_macs),
                    "pubkeyacceptedalgorithms": ("pubkeys", T._preferred_pubkeys),
                    "pubkeyacceptedkeytypes": ("pubkeys", T._preferred_pubkeys),
                    "hostkeyalgorithms": ("keys", T._preferred_keys)}
        info.hostkey_algorithms = list(T._preferred_keys)
        for option, value in cfg.algorithms:
            kind, offered = defaults[option]
            op = value[:1] if value[:1] in ("+", "-", "^") else ""
            value = op + ",".join(ALGORITHM_ALIASES.get(x, x) for x in value[len(op):].split(","))
            allowed = [a for a in algorithm_list(value, offered) if a in offered]
            if not allowed:
                raise ConfigError(f"ssh config: {option} {value!r} for {cfg.alias} leaves "
                                  "nothing paramiko supports; use --transport openssh")
            if kind == "keys":
                info.hostkey_algorithms = allowed
            elif kind not in info.disabled:
                info.disabled[kind] = [a for a in offered if a not in allowed]
        with self._lock:
            return self._infos.setdefault(hop, info)

    def _identities(self, hop: _Hop) -> list[_Identity]:
        """The hop's identities, loaded (ConfigError for a named one that is missing)."""
        out: list[_Identity] = []
        if hop.identities:
            for path, where in zip(hop.identities, hop.explicit):
                if not (os.path.exists(path) or os.path.exists(path + ".pub")):
                    named = "--identity" if where == "--identity" else f"IdentityFile ({where})"
                    raise ConfigError(f"identity {path}: no such file (named by {named} for "
                                      f"{hop.cfg.alias})")
                out.append(self._keys.get(path))
            return out
        for p in DEFAULT_IDENTITIES:
            path = os.path.expanduser(p)
            if os.path.exists(path):
                try:
                    out.append(self._keys.get(path))
                except ConfigError:
                    continue  # a default key paramiko cannot read: skipped, like OpenSSH
        return out

    # -- running -----------------------------------------------------------------------------
    def run(self, node: Node, argv: list[str], *, timeout: float, stdin: Optional[bytes] = None,
            env: Optional[Mapping[str, str]] = None, hold_stdin: bool = False) -> CommandResult:
        command = shlex.join(env_argv(argv, env))
        hop = self._route_for(node)
        run = _Run(node, timeout, self._connect_timeout)
        with self._lock:
            closed = self._closed
            if not closed:
                self._runs.add(run)
        if closed:
            raise ConnectError("run interrupted before connecting", node=node.name,
                               cause="interrupted")
        token = self._watchdog.add(run.deadline + WATCHDOG_GRACE_S, run.expire)
        try:
            t = self._open(hop, run, shared=False)
            return self._exec(t, hop, run, argv, command, stdin, hold_stdin)
        finally:
            self._watchdog.cancel(token)
            run.close()
            with self._lock:
                self._runs.discard(run)

    # -- connecting ----------------------------------------------------------------------------
    def _timeout_error(self, run: _Run, hop: _Hop, what: str, cause: str) -> TransportError:
        if run.aborted:
            return ConnectError("run interrupted", node=run.node.name, cause="interrupted")
        waited = min(run.connect_timeout, run.timeout)
        return ConnectError(f"{what} {hop.where} within {waited:g}s", node=run.node.name,
                            cause=cause)

    def _open(self, hop: _Hop, run: _Run, *, shared: bool) -> Any:
        """An authenticated paramiko Transport to ``hop`` (tracked by ``run`` unless shared)."""
        info = self._info(hop)
        known = info.known.lookup(hop.hostkey_name)
        self._refuse_early(hop, known, run)
        disabled = dict(info.disabled)
        disabled["keys"] = self._hostkey_disabled(hop, info, known, run)
        sock = self._sock(hop, run)
        t = _transport_class()(sock, disabled_algorithms=disabled)
        run.track(t)
        try:
            step = run.step()
            t.banner_timeout = max(0.05, step)
            t.handshake_timeout = max(0.05, run.left())
            t.auth_timeout = max(0.05, step)
            if hop.cfg.compression:
                t.use_compression(True)
            self._handshake(t, hop, run, known, sock)
            self._check_host_key(t, hop, info, known, run)
            self._auth(t, hop, run)
        except BaseException:
            run.untrack(t)
            _close_quietly(t)
            raise
        if shared:  # the jump host's connection outlives this run
            run.untrack(t)
            run.untrack(sock)
        return t

    def _refuse_early(self, hop: _Hop, known: HostKeys, run: _Run) -> None:
        name = hop.hostkey_name
        if not known.keys and known.authorities:
            ca = known.authorities[0]
            raise HostKeyError(
                f"host key for {name}: known_hosts trusts only a host certificate authority "
                f"({ca.where}) and paramiko cannot verify host certificates; use --transport "
                "openssh", node=run.node.name, cause="host certificate (use --transport openssh)")

    def _hostkey_disabled(self, hop: _Hop, info: _HopInfo, known: HostKeys,
                          run: _Run) -> list[str]:
        return disabled_hostkey_algorithms(known, info.hostkey_algorithms, hop.hostkey_name, run.node.name)

    def _sock(self, hop: _Hop, run: _Run) -> Any:
        cfg = hop.cfg
        if hop.via is not None:
            return self._jump_channel(hop, run)
        if cfg.proxy_command:
            try:
                sock = _ProxyCommandSock(cfg.proxy_command)
            except OSError as e:
                raise ConnectError(f"ProxyCommand for {cfg.alias} could not start: "
                                   f"{e.strerror or e}", node=run.node.name,
                                   cause="ProxyCommand failed") from None
            run.track(sock)
            return sock
        step = run.step()
        if step <= 0:
            raise self._timeout_error(run, hop, "cannot connect to", "connect timed out")
        try:
            infos = socket.getaddrinfo(cfg.hostname, cfg.port, cfg.address_family,
                                       socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ConnectError(f"cannot resolve host {cfg.hostname}: {e.strerror or e}",
                               node=run.node.name, cause="cannot resolve host") from None
        last: Optional[OSError] = None
        for family, kind, proto, _name, addr in infos:
            s = socket.socket(family, kind, proto)
            run.track(s)
            try:
                s.settimeout(max(0.01, run.step()))
                if cfg.bind_address:
                    s.bind((cfg.bind_address, 0))
                s.connect(addr)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return s
            except OSError as e:
                run.untrack(s)
                s.close()
                last = e
                if run.expired or run.aborted or run.step() <= 0:
                    break
        if run.expired or run.aborted or isinstance(last, socket.timeout):
            raise self._timeout_error(run, hop, "cannot connect to", "connect timed out")
        why = (last.strerror if last is not None and last.strerror else str(last)).lower()
        cause = {"connection refused": "connection refused"}.get(why, why or "cannot connect")
        raise ConnectError(f"cannot connect to {hop.where}: {why}", node=run.node.name,
                           cause=cause)

    def _handshake(self, t: Any, hop: _Hop, run: _Run, known: HostKeys, sock: Any) -> None:
        paramiko = _paramiko()
        event = threading.Event()
        banner_by = time.monotonic() + run.step()
        t.start_client(event=event)
        while not event.is_set():
            now = time.monotonic()
            limit = run.deadline if t.remote_version else banner_by
            if now >= limit or run.expired or run.aborted:
                _close_quietly(t)
                if not t.remote_version:
                    raise self._timeout_error(run, hop, "no SSH banner from", "no SSH banner")
                raise self._timeout_error(run, hop, "SSH handshake not finished with",
                                          "handshake timed out")
            event.wait(min(0.05, max(0.0, limit - now)))
        if t.is_active():
            return
        e = t.get_exception()
        if run.expired or run.aborted:
            raise self._timeout_error(run, hop, "no SSH banner from" if not t.remote_version
                                      else "SSH handshake not finished with",
                                      "no SSH banner" if not t.remote_version
                                      else "handshake timed out")
        node = run.node.name
        extra = ""
        if isinstance(sock, _ProxyCommandSock):
            tail = sock.stderr_tail()
            extra = f" (ProxyCommand said: {tail})" if tail else " (ProxyCommand ended)"
        text = _one_line(e) if e is not None else "negotiation failed"
        if isinstance(e, paramiko.ssh_exception.IncompatiblePeer) or "Incompatible" in text:
            if "host key" in text and known.keys:
                raise HostKeyError(
                    f"host key for {hop.hostkey_name} CHANGED: the server offers none of the "
                    f"key types known_hosts lists for it ({', '.join(known.key_types())}); "
                    "refusing", node=node, cause="changed host key")
            if "version" in text.lower():
                raise ConnectError(f"{hop.where} does not speak SSH-2: {text}", node=node,
                                   cause="incompatible SSH version")
            raise ConnectError(f"no common SSH algorithms with {hop.where}: {text}", node=node,
                               cause="no common algorithms")
        if not t.remote_version:
            ctx = e.__context__ if e is not None else None
            if isinstance(ctx, socket.timeout) or isinstance(e, socket.timeout):
                raise self._timeout_error(run, hop, "no SSH banner from", "no SSH banner")
            if isinstance(sock, _ProxyCommandSock):
                raise ConnectError(f"ProxyCommand for {hop.cfg.alias} gave no SSH banner{extra}",
                                   node=node, cause="ProxyCommand failed")
            raise ConnectError(f"no SSH banner from {hop.where}: the server closed the "
                               f"connection{extra}", node=node, cause="no SSH banner")
        if e is None or isinstance(e, (paramiko.SSHException, EOFError, OSError)):
            raise ConnectError(f"SSH negotiation with {hop.where} failed: {text}{extra}",
                               node=node, cause="connection closed during handshake")
        raise e  # not a connection problem: a bug, reported as such

    def _check_host_key(self, t: Any, hop: _Hop, info: _HopInfo, known: HostKeys,
                        run: _Run) -> None:
        key = t.get_remote_server_key()
        blob = key.asbytes()
        ktype = key_type_of(blob) or key.get_name()
        fp = fingerprint(blob)
        name = hop.hostkey_name
        node = run.node.name
        verdict, entry = known.check(blob)
        if verdict == "ok":
            return
        if verdict == "revoked":
            raise HostKeyError(f"host key for {name} is REVOKED ({ktype} {fp}, "
                               f"@revoked in {entry.where if entry else 'known_hosts'}); refusing",
                               node=node, cause="revoked host key")
        if verdict == "changed":
            raise HostKeyError(
                f"host key for {name} CHANGED: got {ktype} {fp}, known_hosts "
                f"({entry.where if entry else '?'}) has another; refusing (reinstalled node or "
                "man-in-the-middle)", node=node, cause="changed host key")
        if verdict == "cert-authority":  # pragma: no cover - refused before connecting
            raise HostKeyError(f"host key for {name}: host certificate needed; use "
                               "--transport openssh", node=node,
                               cause="host certificate (use --transport openssh)")
        if self._accept_new:
            try:
                info.known.add(name, ktype, blob)
            except OSError as e:
                raise HostKeyError(f"host key for {name} accepted but not recorded: "
                                   f"{e.strerror or e}", node=node,
                                   cause="cannot record host key") from None
            return
        raise HostKeyError(f"unknown host key for {name} ({ktype} {fp}): not in known_hosts; "
                           "verify and add it, or pass --accept-new-hostkeys", node=node,
                           cause="unknown host key")

    def _auth(self, t: Any, hop: _Hop, run: _Run) -> None:
        paramiko = _paramiko()
        cfg = hop.cfg
        node = run.node.name
        identities = self._identities(hop)
        need_agent = (not cfg.identities_only) or any(i.key is None for i in identities)
        agent: Optional[_Agent] = None
        agent_path = os.environ.get("SSH_AUTH_SOCK") if cfg.identity_agent is None \
            else cfg.identity_agent
        if need_agent and agent_path:
            try:
                agent = _Agent(agent_path, run.step())
            except (OSError, paramiko.SSHException):
                agent = None  # a dangling socket: no agent, as for ssh
        try:
            agent_keys = agent.keys() if agent is not None else ()
            candidates: list[tuple[str, Any]] = []
            locked: list[str] = []
            used: set[bytes] = set()
            for ident in identities:
                match = next((k for k in agent_keys if ident.public_blob is not None
                              and k.asbytes() == ident.public_blob), None)
                if ident.key is not None:
                    candidates.append((ident.path, ident.key))
                elif match is not None:
                    candidates.append((f"{ident.path} (agent)", match))
                elif ident.encrypted:
                    locked.append(ident.path)
                    continue
                else:
                    continue
                if ident.public_blob is not None:
                    used.add(ident.public_blob)
            if not cfg.identities_only:
                candidates += [("agent key", k) for k in agent_keys if k.asbytes() not in used]
            if not candidates:
                if locked:
                    raise self._locked_error(locked[0], run)
                raise AuthError(f"authentication failed for {cfg.user}@{hop.where}: no key to "
                                "offer (no usable identity file, no agent key)", node=node,
                                cause="no identity to offer")
            tried = 0
            for label, key in candidates:
                step = run.step()
                if step <= 0 or run.expired or run.aborted:
                    raise self._timeout_error(run, hop, "authentication not finished with",
                                              "authentication timed out")
                t.auth_timeout = max(0.05, step)
                tried += 1
                try:
                    t.auth_publickey(cfg.user, key)
                except paramiko.BadAuthenticationType as e:
                    allowed = ", ".join(e.allowed_types or []) or "nothing"
                    raise AuthError(f"authentication failed for {cfg.user}@{hop.where}: the "
                                    f"server accepts only {allowed}", node=node,
                                    cause="authentication failed") from None
                except (paramiko.AuthenticationException, paramiko.SSHException, EOFError,
                        OSError) as e:
                    if run.expired or run.aborted:
                        raise self._timeout_error(run, hop, "authentication not finished with",
                                                  "authentication timed out") from None
                    if "timeout" in str(e).lower():
                        raise self._timeout_error(run, hop, "authentication not finished with",
                                                  "authentication timed out") from None
                    if not t.is_active():
                        raise AuthError(
                            f"authentication failed for {cfg.user}@{hop.where}: the server "
                            f"closed the connection after {tried} key(s)", node=node,
                            cause="authentication failed") from None
                    continue
                if t.is_authenticated():
                    return
            if locked:
                raise self._locked_error(locked[0], run)
            raise AuthError(f"authentication failed for {cfg.user}@{hop.where}: the server "
                            f"refused every key offered ({len(candidates)})", node=node,
                            cause="authentication failed")
        finally:
            if agent is not None:
                agent.close()

    @staticmethod
    def _locked_error(path: str, run: _Run) -> AuthError:
        return AuthError(f"identity {path} is passphrase-protected and no agent holds it; load "
                         "it with ssh-add", node=run.node.name,
                         cause="identity passphrase-protected, not in agent")

    # -- jump hosts ------------------------------------------------------------------------------
    def _jump_transport(self, jump: _Hop, run: _Run) -> Any:
        with self._lock:
            slot = self._jumps.setdefault(jump, _JumpSlot())
        t = slot.transport
        if t is not None and t.is_active():
            return t
        seen = slot.attempts
        wait = run.left()
        if wait <= 0 or not slot.lock.acquire(timeout=wait):
            raise ConnectError(f"jump host {jump.cfg.alias}: not connected within "
                               f"{run.timeout:g}s", node=run.node.name,
                               cause="jump host: connect timed out")
        try:
            t = slot.transport
            if t is not None and t.is_active():
                return t
            if slot.failure is not None and slot.failure[0] > seen:
                e = slot.failure[1]
                raise type(e)(e.message, node=run.node.name, cause=e.cause)
            slot.attempts += 1
            try:
                t = self._open(jump, run, shared=True)
            except TransportError as e:
                err = type(e)(f"jump host {jump.cfg.alias}: {e.message}", node=run.node.name,
                              cause=e.cause if e.cause.startswith("jump host")
                              else f"jump host: {e.cause}")
                if run.left() > 0.05 and not run.aborted:  # the jump's fault, not our deadline
                    slot.failure = (slot.attempts, err)
                raise err from None
            slot.transport = t
            slot.failure = None
            with self._lock:
                closed = self._closed
            if closed:
                _close_quietly(t)
                raise ConnectError("run interrupted", node=run.node.name, cause="interrupted")
            return t
        finally:
            slot.lock.release()

    def _jump_channel(self, hop: _Hop, run: _Run) -> Any:
        paramiko = _paramiko()
        assert hop.via is not None
        jump = hop.via
        for attempt in (1, 2):
            jt = self._jump_transport(jump, run)
            step = run.step()
            if step <= 0:
                raise self._timeout_error(run, hop, "cannot connect (through a jump host) to",
                                          "connect timed out")
            try:
                chan = jt.open_channel("direct-tcpip", (hop.cfg.hostname, hop.cfg.port),
                                       ("127.0.0.1", 0), timeout=step)
            except paramiko.ChannelException as e:
                raise ConnectError(f"jump host {jump.cfg.alias} could not reach {hop.where} "
                                   f"({(e.text or str(e.code)).lower()})", node=run.node.name,
                                   cause="jump host cannot reach target") from None
            except (paramiko.SSHException, EOFError, OSError) as e:
                if run.expired or run.aborted:
                    raise self._timeout_error(run, hop, "cannot connect (through a jump host) "
                                              "to", "connect timed out") from None
                if not jt.is_active() and attempt == 1:
                    continue  # the shared connection died: open a new one, once
                if jt.is_active():
                    raise ConnectError(f"jump host {jump.cfg.alias} could not reach {hop.where} "
                                       f"({_one_line(e).lower()})", node=run.node.name,
                                       cause="jump host cannot reach target") from None
                raise ConnectError(f"jump host {jump.cfg.alias}: connection lost",
                                   node=run.node.name,
                                   cause="jump host: connection lost") from None
            sock = _ChannelSock(chan)
            run.track(sock)
            return sock
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the command -----------------------------------------------------------------------------
    def _exec(self, t: Any, hop: _Hop, run: _Run, argv: list[str], command: str,
              stdin: Optional[bytes], hold_stdin: bool) -> CommandResult:
        paramiko = _paramiko()
        node = run.node.name
        out, err = bytearray(), bytearray()
        truncated = False
        started = False
        chan: Any = None

        def text(b: bytearray) -> str:
            return b.decode("utf-8", "replace")

        def drain() -> bool:
            """Read what has arrived (at most a few MiB, then look at the clock again)."""
            nonlocal truncated
            got = False
            budget = 4 * 1024 * 1024
            while chan.recv_ready() and budget > 0:
                data = chan.recv(65536)
                if not data:
                    break
                got = True
                budget -= len(data)
                room = MAX_OUTPUT - len(out)
                out.extend(data[:room])
                if len(data) > room:
                    truncated = True
            while chan.recv_stderr_ready() and budget > 0:
                data = chan.recv_stderr(65536)
                if not data:
                    break
                got = True
                budget -= len(data)
                if len(err) < MAX_STDERR:
                    err.extend(data[:MAX_STDERR - len(err)])
            return got

        def timed_out() -> CommandTimeout:
            if chan is not None and started:
                _send_signal(t, chan, "TERM")
            return CommandTimeout(f"command did not finish within {run.timeout:g}s", node=node,
                                  cause=f"did not finish within {run.timeout:g}s",
                                  stdout=text(out), stderr=text(err))

        def lost(why: str = "") -> ConnectionLost:
            if run.aborted:
                return ConnectionLost("interrupted while the command ran", node=node,
                                      cause="interrupted", stdout=text(out), stderr=text(err))
            took = time.monotonic() - run.started
            return ConnectionLost(f"connection lost while the command ran (after {took:.1f}s)"
                                  f"{': ' + why if why else ''}", node=node,
                                  cause="connection lost", stdout=text(out), stderr=text(err))

        try:
            if run.left() <= 0:
                raise timed_out()
            try:
                chan = t.open_session(timeout=max(0.05, run.left()))
                for name, value in self._env_requests(hop):
                    chan.set_environment_variable(name, value)
            except (paramiko.SSHException, EOFError, OSError) as e:
                if run.expired or run.left() <= 0:
                    raise timed_out() from None
                if run.aborted:
                    raise ConnectError("run interrupted", node=node, cause="interrupted") from None
                if not t.is_active():
                    raise ConnectError(f"connection to {hop.where} closed before the command "
                                       "started", node=node,
                                       cause="connection closed before the command") from None
                raise ConnectError(f"{hop.where} refused a session: {_one_line(e)}", node=node,
                                   cause="session refused") from None
            started = True
            try:
                chan.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as e:
                if run.expired or run.aborted or not t.is_active():
                    raise
                raise ConnectError(f"{hop.where} refused to run the command: {_one_line(e)}",
                                   node=node, cause="exec refused") from None
            if stdin:
                chan.sendall(stdin)
            if not hold_stdin:
                chan.shutdown_write()
            while True:
                got = drain()
                status = chan.exit_status != -1 or getattr(chan, "ck_exit_signal", None)
                if status and (chan.eof_received or chan.closed):
                    drain()
                    break
                if chan.closed:
                    drain()
                    if chan.exit_status != -1 or getattr(chan, "ck_exit_signal", None):
                        break
                    if run.expired:
                        raise timed_out()
                    raise lost("the channel closed without an exit status"
                               if t.is_active() else "")
                if not t.is_active():
                    drain()
                    if run.expired:
                        raise timed_out()
                    raise lost()
                left = run.left()
                if left <= 0 or run.expired:
                    raise timed_out()
                if got:
                    continue
                wait = min(POLL_S, left)
                if chan.eof_received:
                    chan.status_event.wait(wait)
                else:
                    select.select([chan], [], [], wait)
        except (paramiko.SSHException, EOFError, OSError) as e:
            if run.expired or run.left() <= 0:
                raise timed_out() from None
            if run.aborted:
                raise lost("interrupted") from None
            if not started:
                raise ConnectError(f"could not start the command on {hop.where}: "
                                   f"{_one_line(e)}", node=node,
                                   cause="connection closed before the command") from None
            raise lost(_one_line(e)) from None
        sig = getattr(chan, "ck_exit_signal", None)
        if chan.exit_status != -1:
            rc = chan.exit_status
        else:
            num = getattr(signal, f"SIG{sig}", None)
            rc = -int(num) if num is not None else -1
        _close_quietly(chan)
        return CommandResult(node=node, argv=list(argv), rc=rc, stdout=text(out),
                             stderr=text(err), duration_s=round(time.monotonic() - run.started, 3),
                             truncated=truncated)

    @staticmethod
    def _env_requests(hop: _Hop) -> list[tuple[str, str]]:
        out = list(hop.cfg.set_env)
        names = {n for n, _ in out}
        patterns = [p for p in hop.cfg.send_env if not p.startswith("-")]
        removed = [p[1:] for p in hop.cfg.send_env if p.startswith("-")]
        if patterns:
            for name, value in os.environ.items():
                if name in names:
                    continue
                if any(match_pattern(name, p) for p in patterns) and \
                        not any(match_pattern(name, p) for p in removed):
                    out.append((name, value))
        return out

    # -- shutting down --------------------------------------------------------------------------
    def close(self) -> None:
        """Close every connection still open (after an interrupt): their commands get EOF."""
        with self._lock:
            self._closed = True
            runs = list(self._runs)
            slots = list(self._jumps.values())
        for r in runs:
            r.abort()
        for slot in slots:
            if slot.transport is not None:
                _close_quietly(slot.transport)



def _send_signal(t: Any, chan: Any, name: str) -> None:
    """Best effort: ask sshd to signal the command (RFC 4254 ``signal`` request)."""
    try:
        from paramiko.common import cMSG_CHANNEL_REQUEST
        from paramiko.message import Message

        if chan.closed or not t.is_active():
            return
        m = Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(name)
        t._send_user_message(m)
    except Exception:  # noqa: BLE001 - the connection is closed right after anyway
        pass


def _replace(cfg: HostConfig, **changes: Any) -> HostConfig:
    from dataclasses import replace

    return replace(cfg, **changes)


__all__ = ["SSHTransport", "load_identity"]
