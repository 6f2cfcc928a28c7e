"""OpenSSH transport: every command is one run of the system ``ssh`` client.

Whatever the user's OpenSSH does works through it unchanged, because it *is* the user's ssh:
ssh_config with ``Include`` and ``Match``, host certificates (``@cert-authority``), hashed
known_hosts, ``[host]:port`` entries, ``HostKeyAlias``, ``ProxyJump``/``ProxyCommand``,
``ControlMaster``, the agent, ``IdentitiesOnly``, GSSAPI, FIDO keys. clusterkit parses none of
it; ``ssh -G`` resolves it when clusterkit needs to know something (see ``prepare``).

What one command runs (:meth:`OpenSSHTransport.command_line`)::

    ssh [-F CONFIG] -T -a -x -o BatchMode=yes -o StrictHostKeyChecking=yes
        -o ConnectTimeout=N -o ServerAliveInterval=N -o ServerAliveCountMax=3
        -o ClearAllForwardings=yes -o LogLevel=ERROR [-l USER] [-i IDENTITY] [-p PORT]
        -- ADDRESS 'env NAME=value … argv…'

- ``BatchMode=yes``: never prompt (a prompt would hang a fan-out); ``-T``: no terminal.
- ``StrictHostKeyChecking=yes`` always; ``accept-new`` only with ``accept_new=True``
  (``--accept-new-hostkeys``). A *changed* key is refused by ssh in both modes.
- ``ConnectTimeout``: ``min(connect_timeout, time left of the command's deadline)``, rounded up
  to whole seconds (ssh takes no fractions). It covers the TCP connect and the SSH banner.
- ``ServerAliveInterval``/``CountMax``: a link that dies silently is seen within ~3 intervals.
- ``-a -x -o ClearAllForwardings=yes``: no agent or X11 forwarding to the nodes, and no port
  forwardings from the user's config (N parallel sessions would fight over the same local
  ports); ``LogLevel=ERROR`` keeps informational chatter out of the command's stderr.
- ``-l``: the explicit user (``--user``) beats the inventory's ``Node.user``, which beats
  ssh_config's ``User`` (ssh itself lets the command line win). ``-i`` adds ``--identity``;
  ``-p`` is the inventory's port when it names one.
- The remote command is one argument, ``shlex.join(env_argv(argv, env))``: every word quoted
  for the remote shell, nothing interpolated. ``--`` ends ssh's options, and addresses and users
  with shell metacharacters or a leading ``-`` are refused before ssh runs (``%h``/``%r`` of a
  user's ProxyCommand are expanded into a shell command line by ssh).

Each ssh runs in its own process group (:class:`clusterkit.procs.ProcessGroup`): the
command's ``timeout`` bounds everything, connection included, and at the deadline (or on
:meth:`close`) the whole group is killed, ProxyCommand/ProxyJump helpers included, with the
output read so far kept. ``hold_stdin=True`` keeps ssh's standard input open after ``stdin`` is
written until the command ends, so the node sees end-of-file when the controller goes away.

How ssh's outcome maps onto the error tree (:func:`classify`). Exit status 255 is ssh's own
failure *or* the remote command's ``exit 255``; only ssh's own messages (matched as whole
lines in their OpenSSH formats) make it an error:

==================================================  ============================================
ssh said                                             raised (``cause``)
==================================================  ============================================
REMOTE HOST IDENTIFICATION HAS CHANGED               HostKeyError ("changed host key")
REVOKED HOST KEY                                     HostKeyError ("revoked host key")
No … host key is known / Host key verification       HostKeyError ("unknown host key")
failed
user@host: Permission denied (…), Too many           AuthError ("authentication refused (…)"), or
authentication failures                              "passphrase-protected identity not in agent"
                                                     when the resolved identity is encrypted and
                                                     the agent does not hold it
Could not resolve hostname                           ConnectError ("cannot resolve host")
Connection refused (also through a jump host)        ConnectError ("connection refused")
Connection timed out during banner exchange          ConnectError ("no SSH banner")
connect … Connection timed out                       ConnectError ("connect timed out")
No route to host / Network is unreachable            ConnectError
Unable to negotiate                                  ConnectError ("no common SSH algorithms")
kex_exchange_identification: …, Connection closed    ConnectError ("connection closed during SSH
/ reset by … port N — before the session started     handshake"); a bastion's MaxStartups drop
                                                     looks like this
Connection to … closed by remote host, Broken pipe,  ConnectionLost — at once, when ssh exits,
Connection reset / closed after output, keepalive    never after the timeout
timeout (Timeout, server … not responding)
the deadline passed                                  CommandTimeout, partial stdout/stderr kept
any other exit status                                CommandResult (the remote command's own)
==================================================  ============================================

``prepare(nodes)`` checks the configuration before any node is contacted and raises
:class:`~clusterkit.errors.ConfigError` (one line, exit 2): no ssh client, ``--ssh-config`` or
``--identity`` missing, a node address or user that is not a plain name, a config that ssh
rejects (``ssh -G [-F cfg] [-l user] [-p port] ADDRESS`` per distinct address, a few at a time;
a non-zero exit names the file and quotes ssh), and a known_hosts file named by the resolved
config that exists but cannot be read. ``ssh -G`` is a process start: measured 6.7 ms of CPU
per address (2-core VM, OpenSSH 9.2), so ~0.45 s for 128 addresses and ~3.5 s for 1000 on two
idle cores, paid once per run (results are cached per address, user and port; the passphrase
hint reuses them).

Jump hosts. With ``ProxyJump`` every node normally opens its own SSH handshake to the bastion,
and a stock bastion (``MaxStartups 10:30:100``) starts dropping connections once more than 10
handshakes are in flight: a 64-wide fan-out behind one bastion loses nodes. So ``prepare`` finds
from ``ssh -G`` the first hop of every node's ProxyJump chain; a hop used by two or more nodes
(and never as a later hop of another chain) gets *one* shared connection: a private wrapper
ssh_config in a 0700 temp dir sets ``ControlPath <tmp>/%C`` and ``ControlMaster no`` for those
hop hosts (plus ``BatchMode``, strict host keys and the connect timeout for every host, which
ssh does not pass to the inner ssh of a ProxyJump) and then ``Include``-s the user's config
(``--ssh-config``, or ``~/.ssh/config`` and ``/etc/ssh/ssh_config`` — included as user
configuration, so a *relative* ``Include`` inside the system file would resolve under
``~/.ssh``; Debian's uses an absolute path). Every ssh then runs with
``-F <wrapper>``; ProxyJump's inner ``ssh -W`` is started with the same ``-F``, so it rides the
hop's master connection. The master is opened once, by the first command that needs it
(``ssh -o ControlMaster=yes -o ControlPersist=120 -N HOP``; the others wait for it), and if it
cannot be opened the nodes simply connect on their own. :meth:`close` ends the masters with
``ssh -O exit`` (then SIGTERM to the master's recorded PID if it is still ours) and removes the
temp dir; ``ControlPersist`` ends a master left behind by a controller that was killed.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

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
from clusterkit.procs import ProcessGroup
from clusterkit.transport import BaseTransport, CommandResult, env_argv

#: A node address ssh may be given: a host name, IPv4 or IPv6 address (zone id allowed).
_ADDRESS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:%-]*")
#: A login name: no shell metacharacters, no leading '-'. '@' for realm users, '$' at the end.
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]*\$?")
#: ssh -G runs at once (prepare); each one is a short CPU-bound process.
_RESOLVE_WORKERS = 8
_RESOLVE_TIMEOUT_S = 15.0
_CONTROL_PERSIST_S = 120
_SERVER_ALIVE_COUNT = 3


# ----------------------------------------------------------------------------- classification
def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.M)


_HOSTKEY_CHANGED = _rx(r"^@+\s+WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!",
                       r"^Host key for .+ has changed and you have requested strict checking\.")
_HOSTKEY_REVOKED = _rx(r"^@+\s+WARNING: REVOKED HOST KEY DETECTED!", r"^Host key .* revoked")
_HOSTKEY_UNKNOWN = _rx(r"^No \S+ host key is known for .+",
                       r"^Host key verification failed\.",
                       r"^Certificate invalid: .+")
_AUTH = _rx(r"^\S+: Permission denied \((?P<methods>[^)]*)\)\.?$",
            r"^Received disconnect from .*: Too many authentication failures",
            r"^Disconnected from .*: Too many authentication failures")
_RESOLVE = _rx(r"^ssh: Could not resolve hostname .+", r"^ssh: .*Name or service not known",
               r"^ssh: .*Temporary failure in name resolution")
_REFUSED = _rx(r"^ssh: connect to host .+ port \d+: Connection refused",
               r"^channel \d+: open failed: connect failed: Connection refused",
               r"^stdio forwarding failed.*refused")
_BANNER = _rx(r"^Connection timed out during banner exchange")
_CONNECT_TIMEOUT = _rx(r"^ssh: connect to host .+ port \d+: (Connection|Operation) timed out",
                       r"^channel \d+: open failed: connect failed: (Connection|Operation) timed out")
_NO_ROUTE = _rx(r"^ssh: connect to host .+ port \d+: No route to host",
                r"^channel \d+: open failed: connect failed: No route to host")
_NET_UNREACH = _rx(r"^ssh: connect to host .+ port \d+: Network is unreachable",
                   r"^channel \d+: open failed: connect failed: Network is unreachable")
_NEGOTIATE = _rx(r"^Unable to negotiate with .+")
_HANDSHAKE_CLOSED = _rx(r"^kex_exchange_identification: .+",
                        r"^ssh_exchange_identification: .+",
                        r"^Connection (closed|reset) by \S+ port \d+",
                        r"^Connection (closed|reset) by (authenticating|invalid) user .+",
                        r"^banner exchange: .+",
                        r"^Received disconnect from .+",
                        r"^Disconnected from .+")
_LOST = _rx(r"^Connection to .+ closed by remote host\.?",
            r"^client_loop: send disconnect: .+",
            r"^Timeout, server .+ not responding\.?",
            r"^Read from remote host .+: .+",
            r"^Write failed: .+",
            r"^packet_write_wait: .+",
            r"^ssh_dispatch_run_fatal: .+")
_OTHER_SSH = _rx(r"^ssh: .+", r"^ssh_\w+: .+", r"^kex_\w+: .+", r"^channel \d+: open failed: .+",
                 r"^stdio forwarding failed", r"^Bad .+", r"^Load key .+", r"^Can't open .+",
                 r"^Control socket connect.+", r"^mux_client_\w+: .+", r"^percent_expand: .+",
                 r"^ProxyCommand .+", r"^Unable to .+")


def _first(rx: re.Pattern[str], text: str) -> Optional[re.Match[str]]:
    return rx.search(text)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def classify(rc: int, stdout: str, stderr: str, *, node: str, where: str, user: str = "",
             auth_hint: Optional[str] = None) -> Optional[TransportError]:
    """Turn one ssh run that *ended* (not timed out) into an error of the tree, or ``None``.

    ``where`` names the target for messages (``address`` or ``address:port``); causes never do.
    ``auth_hint`` (for a refused login) replaces ssh's bare ``Permission denied`` with why.
    """
    if rc == 255:
        err = stderr.replace("\r", "")
        kw = dict(node=node, stdout=stdout, stderr=stderr)

        def detail(m: Optional[re.Match[str]]) -> str:
            return _one_line(m.group(0)) if m else ""

        m = _first(_HOSTKEY_CHANGED, err)
        if m:
            return HostKeyError(f"host key for {where} CHANGED: it differs from the one in known_hosts; "
                                "refusing (reinstalled node or man-in-the-middle)",
                                cause="changed host key", **kw)
        m = _first(_HOSTKEY_REVOKED, err)
        if m:
            return HostKeyError(f"host key for {where} is REVOKED; refusing", cause="revoked host key", **kw)
        m = _first(_HOSTKEY_UNKNOWN, err)
        if m:
            why = [ln for ln in err.splitlines() if _HOSTKEY_UNKNOWN.match(ln)
                   and not ln.startswith("Host key verification failed")]
            extra = f" ({_one_line('; '.join(why))})" if why else ""
            return HostKeyError(f"unknown host key for {where}: not in known_hosts and strict checking is on"
                                f"{extra}; verify and add it, or pass --accept-new-hostkeys",
                                cause="unknown host key", **kw)
        m = _first(_AUTH, err)
        if m:
            who = f"{user}@{where}" if user else where
            if auth_hint:
                return AuthError(f"authentication failed for {who}: {auth_hint}",
                                 cause="passphrase-protected identity not in agent", **kw)
            methods = m.group("methods") if m.groupdict().get("methods") else None
            cause = f"authentication refused ({methods})" if methods else "authentication refused"
            return AuthError(f"authentication failed for {who}: {detail(m)}", cause=cause, **kw)
        for rx, cause, what in (
            (_RESOLVE, "cannot resolve host", "cannot resolve"),
            (_REFUSED, "connection refused", "connection refused"),
            (_BANNER, "no SSH banner", "no SSH banner within the connect timeout (the port accepts "
                                       "TCP but no SSH server answers)"),
            (_CONNECT_TIMEOUT, "connect timed out", "connect timed out"),
            (_NO_ROUTE, "no route to host", "no route to host"),
            (_NET_UNREACH, "network unreachable", "network unreachable"),
            (_NEGOTIATE, "no common SSH algorithms", "no common SSH algorithms"),
        ):
            m = _first(rx, err)
            if m:
                return ConnectError(f"cannot connect to {where}: {what} ({detail(m)})", cause=cause, **kw)
        lost = _first(_LOST, err)
        closed = _first(_HANDSHAKE_CLOSED, err)
        started = bool(stdout) or lost is not None
        if lost is not None or (closed is not None and stdout):
            m = lost or closed
            return ConnectionLost(f"connection to {where} lost while the command ran ({detail(m)})",
                                  cause="connection lost while the command ran", **kw)
        if closed is not None and not started:
            return ConnectError(f"cannot connect to {where}: connection closed during the SSH handshake "
                                f"({detail(closed)})", cause="connection closed during SSH handshake", **kw)
        m = _first(_OTHER_SSH, err)
        if m and not stdout:
            return ConnectError(f"cannot connect to {where}: ssh failed ({detail(m)})",
                                cause="ssh failed before the command ran", **kw)
        return None  # the remote command's own exit 255
    if rc < 0:
        sig = -rc
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return ConnectionLost(f"ssh to {where} ended by {name} while the command ran",
                              cause=f"ssh ended by {name}", node=node, stdout=stdout, stderr=stderr)
    return None


# ----------------------------------------------------------------------------- keys and agents
def _sshstr(buf: bytes, off: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", buf, off)
    off += 4
    if off + n > len(buf):
        raise ValueError("truncated")
    return buf[off:off + n], off + n


def key_info(path: str) -> tuple[bool, Optional[bytes]]:
    """(is the private key file passphrase-protected?, its public key blob when readable)."""
    try:
        with open(path, "rb") as f:
            data = f.read(256 * 1024)
    except OSError:
        return False, None
    text = data.decode("ascii", "replace")
    public: Optional[bytes] = None
    try:
        with open(path + ".pub", encoding="ascii", errors="replace") as f:
            parts = f.read().split()
        if len(parts) >= 2:
            public = base64.b64decode(parts[1])
    except (OSError, ValueError):
        public = None
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin in text and end in text:
        try:
            raw = base64.b64decode("".join(text.split(begin, 1)[1].split(end, 1)[0].split()))
            magic = b"openssh-key-v1\0"
            if not raw.startswith(magic):
                return False, public
            off = len(magic)
            cipher, off = _sshstr(raw, off)
            _kdf, off = _sshstr(raw, off)
            _kdfopts, off = _sshstr(raw, off)
            (count,) = struct.unpack_from(">I", raw, off)
            off += 4
            if count >= 1:
                public, off = _sshstr(raw, off)
            return cipher != b"none", public
        except (ValueError, struct.error):
            return False, public
    encrypted = "Proc-Type: 4,ENCRYPTED" in text or "BEGIN ENCRYPTED PRIVATE KEY" in text
    return encrypted, public


def agent_keys(sock_path: str, timeout: float = 2.0) -> Optional[set[bytes]]:
    """Public key blobs an ssh-agent holds (SSH2_AGENTC_REQUEST_IDENTITIES); None if unreachable."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(struct.pack(">IB", 1, 11))
            head = b""
            while len(head) < 4:
                chunk = s.recv(4 - len(head))
                if not chunk:
                    return None
                head += chunk
            (n,) = struct.unpack(">I", head)
            if n > 1 << 20:
                return None
            body = b""
            while len(body) < n:
                chunk = s.recv(n - len(body))
                if not chunk:
                    return None
                body += chunk
    except OSError:
        return None
    if not body or body[0] != 12:
        return None
    try:
        (count,) = struct.unpack_from(">I", body, 1)
        off = 5
        out: set[bytes] = set()
        for _ in range(count):
            blob, off = _sshstr(body, off)
            _comment, off = _sshstr(body, off)
            out.add(blob)
        return out
    except (ValueError, struct.error):
        return None


def _expand_path(path: str, user: str = "") -> Optional[str]:
    """~ and the %d/%u/%% tokens of ssh_config paths; None for paths with other tokens."""
    home = os.path.expanduser("~")
    p = path.replace("%%", "\0").replace("%d", home).replace("%u", user or os.environ.get("USER", ""))
    if "%" in p:
        return None
    p = p.replace("\0", "%")
    return os.path.expandvars(os.path.expanduser(p))


# ----------------------------------------------------------------------------- jump hosts
@dataclass
class _Hop:
    """A first ProxyJump hop shared by several nodes: one master connection, opened once."""

    host: str
    user: Optional[str]
    port: Optional[int]
    nodes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: str = "new"  # new | up | failed
    pid: Optional[int] = None
    error: str = ""

    def args(self) -> list[str]:
        out: list[str] = []
        if self.user:
            out += ["-l", self.user]
        if self.port:
            out += ["-p", str(self.port)]
        return out


def parse_jump(value: str) -> list[tuple[Optional[str], str, Optional[int]]]:
    """ProxyJump ``[user@]host[:port],…`` (or ``ssh://user@host:port``) as (user, host, port)."""
    hops: list[tuple[Optional[str], str, Optional[int]]] = []
    for item in (h.strip() for h in value.split(",")):
        if not item:
            continue
        if item.startswith("ssh://"):
            item = item[len("ssh://"):].rstrip("/")
        user, _, rest = item.rpartition("@")
        host, port = rest, None
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            if tail.startswith(":") and tail[1:].isdigit():
                port = int(tail[1:])
        elif rest.count(":") == 1:
            h, _, p = rest.partition(":")
            if p.isdigit():
                host, port = h, int(p)
        hops.append((user or None, host, port))
    return hops


class _Shared:
    """State that must be cleaned up even if the transport is never closed (masters, temp dir)."""

    def __init__(self) -> None:
        self.tmpdir: Optional[str] = None
        self.wrapper: Optional[str] = None
        self.ssh = "ssh"
        self.hops: dict[str, _Hop] = {}

    def cleanup(self) -> None:
        wrapper, tmpdir = self.wrapper, self.tmpdir
        for hop in self.hops.values():
            if hop.state != "up" or wrapper is None:
                continue
            try:
                subprocess.run([self.ssh, "-F", wrapper, "-o", "LogLevel=QUIET", "-O", "exit",
                                *hop.args(), "--", hop.host], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5,
                               check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if hop.pid and _is_our_master(hop.pid, wrapper):
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and _is_our_master(hop.pid, wrapper):
                    time.sleep(0.02)
                if _is_our_master(hop.pid, wrapper):
                    try:
                        os.kill(hop.pid, signal.SIGTERM)
                    except OSError:
                        pass
            hop.state = "closed"
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        self.tmpdir = self.wrapper = None


def _is_our_master(pid: int, wrapper: str) -> bool:
    """True while ``pid`` is alive and is the ssh master started with our wrapper config."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return wrapper.encode() in argv


# ----------------------------------------------------------------------------- the transport
class OpenSSHTransport(BaseTransport):
    """Runs each command through the system ``ssh`` (see the module docstring)."""

    name = "openssh"

    def __init__(self, *, ssh_config: Optional[str] = None, user: Optional[str] = None,
                 identity: Optional[str] = None, connect_timeout: float = 10.0,
                 accept_new: bool = False, ssh_binary: str = "ssh") -> None:
        self.ssh_config = os.path.abspath(os.path.expanduser(ssh_config)) if ssh_config else None
        self.user = user
        self.identity = os.path.abspath(os.path.expanduser(identity)) if identity else None
        self.connect_timeout = float(connect_timeout)
        self.accept_new = bool(accept_new)
        self.ssh_binary = ssh_binary
        self._procs = ProcessGroup()
        self._lock = threading.Lock()
        self._resolved: dict[tuple[str, Optional[str], Optional[int]], dict[str, list[str]]] = {}
        self._node_hop: dict[str, _Hop] = {}  # node address -> its shared first hop
        self._key_cache: dict[str, tuple[bool, Optional[bytes]]] = {}
        self._shared = _Shared()
        self._shared.ssh = ssh_binary
        self._finalizer = weakref.finalize(self, self._shared.cleanup)
        #: what prepare() cost: {"hosts": distinct addresses resolved, "seconds": wall time}
        self.prepare_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ command lines
    def _login(self, node: Node) -> Optional[str]:
        return self.user or node.user or None

    def _strict(self) -> str:
        return "accept-new" if self.accept_new else "yes"

    def _config_file(self) -> Optional[str]:
        return self._shared.wrapper or self.ssh_config

    def command_line(self, node: Node, argv: list[str], env: Optional[Mapping[str, str]] = None, *,
                     timeout: Optional[float] = None) -> list[str]:
        """The full ssh argv that runs ``argv`` (with ``env``) on ``node``.

        ``timeout``: time left of the command's deadline (ConnectTimeout never exceeds it).
        Raises ConnectError for an address or user that is not a plain name.
        """
        self._check_target(node)
        connect = self.connect_timeout if timeout is None else min(self.connect_timeout, timeout)
        alive = max(2, min(15, math.ceil(self.connect_timeout)))
        cmd = [self.ssh_binary]
        cfg = self._config_file()
        if cfg:
            cmd += ["-F", cfg]
        cmd += ["-T", "-a", "-x",
                "-o", "BatchMode=yes",
                "-o", f"StrictHostKeyChecking={self._strict()}",
                "-o", f"ConnectTimeout={max(1, math.ceil(connect))}",
                "-o", f"ServerAliveInterval={alive}",
                "-o", f"ServerAliveCountMax={_SERVER_ALIVE_COUNT}",
                "-o", "ClearAllForwardings=yes",
                "-o", "LogLevel=ERROR"]
        login = self._login(node)
        if login:
            cmd += ["-l", login]
        if self.identity:
            cmd += ["-i", self.identity]
        if node.port:
            cmd += ["-p", str(int(node.port))]
        cmd += ["--", node.address, shlex.join(env_argv(list(argv), env))]
        return cmd

    def _check_target(self, node: Node) -> None:
        if not _ADDRESS.fullmatch(node.address):
            raise ConnectError(f"refusing host {node.address!r}: not a host name or address",
                               node=node.name, cause="invalid host name")
        login = self._login(node)
        if login is not None and not _USER.fullmatch(login):
            raise ConnectError(f"refusing login name {login!r}: not a plain user name",
                               node=node.name, cause="invalid user name")

    # ------------------------------------------------------------------ prepare
    def prepare(self, nodes: Sequence[Node]) -> None:
        """Check every node's configuration before anything runs (ConfigError = exit 2)."""
        t0 = time.monotonic()
        if shutil.which(self.ssh_binary) is None:
            raise ConfigError(f"no OpenSSH client {self.ssh_binary!r} on PATH (install openssh-client, "
                              "or use --transport paramiko)")
        if self.ssh_config is not None and not os.path.isfile(self.ssh_config):
            raise ConfigError(f"ssh config {self.ssh_config}: no such file")
        if self.identity is not None:
            if not os.path.isfile(self.identity):
                raise ConfigError(f"identity {self.identity}: no such file")
            try:
                with open(self.identity, "rb"):
                    pass
            except OSError as e:
                raise ConfigError(f"identity {self.identity}: {e.strerror or e}") from None
        if self.user is not None and not _USER.fullmatch(self.user):
            raise ConfigError(f"--user {self.user!r} is not a plain user name")
        targets: dict[tuple[str, Optional[str], Optional[int]], Node] = {}
        for n in nodes:
            try:
                self._check_target(n)
            except ConnectError as e:
                raise ConfigError(f"node {n.name}: {e}") from None
            targets.setdefault((n.address, self._login(n), n.port), n)
        todo = [k for k in targets if k not in self._resolved]
        if todo:
            workers = min(_RESOLVE_WORKERS, max(2, 2 * (os.cpu_count() or 1)), len(todo))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ck-ssh-G") as pool:
                for key, opts in zip(todo, pool.map(lambda k: self._ssh_G(*k), todo)):
                    self._resolved[key] = opts
        self._check_known_hosts(self._resolved[k] for k in targets)
        self._plan_hops(nodes)
        self.prepare_stats = {"hosts": float(len(todo)), "seconds": round(time.monotonic() - t0, 3)}

    def _ssh_G(self, address: str, user: Optional[str], port: Optional[int]) -> dict[str, list[str]]:
        """``ssh -G``: the configuration ssh would use for this target (keys lower-case)."""
        cmd = [self.ssh_binary, "-G", "-T"]
        if self.ssh_config:
            cmd += ["-F", self.ssh_config]
        if user:
            cmd += ["-l", user]
        if port:
            cmd += ["-p", str(port)]
        cmd += ["--", address]
        where = self.ssh_config or "~/.ssh/config"
        try:
            cp = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=_RESOLVE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"ssh config {where}: `ssh -G {address}` did not finish within "
                              f"{_RESOLVE_TIMEOUT_S:g}s (a Match exec that hangs?)") from None
        except OSError as e:
            raise ConfigError(f"cannot run {self.ssh_binary}: {e.strerror or e}") from None
        if cp.returncode != 0:
            lines = [ln.strip() for ln in cp.stderr.splitlines()
                     if ln.strip() and "terminating," not in ln
                     and not ln.startswith("Pseudo-terminal will not be allocated")]
            msg = "; ".join(lines[:3]) or f"ssh -G exited {cp.returncode}"
            raise ConfigError(f"ssh config {where}: {_one_line(msg)}")
        opts: dict[str, list[str]] = {}
        for line in cp.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key:
                opts.setdefault(key.lower(), []).append(value.strip())
        return opts

    def resolved(self, node: Node) -> dict[str, list[str]]:
        """ssh's resolved configuration for ``node`` (``ssh -G``; cached)."""
        key = (node.address, self._login(node), node.port)
        with self._lock:
            opts = self._resolved.get(key)
        if opts is None:
            opts = self._ssh_G(*key)
            with self._lock:
                self._resolved[key] = opts
        return opts

    def _check_known_hosts(self, resolved: Iterable[dict[str, list[str]]]) -> None:
        seen: set[str] = set()
        for opts in resolved:
            user = (opts.get("user") or [""])[0]
            for key in ("userknownhostsfile", "globalknownhostsfile"):
                for value in opts.get(key, []):
                    for raw in value.split():
                        if raw.lower() == "none" or raw in seen:
                            continue
                        seen.add(raw)
                        path = _expand_path(raw, user)
                        if path is None or not os.path.lexists(path):
                            continue
                        if os.path.isdir(path):
                            raise ConfigError(f"known_hosts {path}: is a directory, not a file")
                        try:
                            with open(path, "rb"):
                                pass
                        except OSError as e:
                            raise ConfigError(f"known_hosts {path}: cannot be read: {e.strerror or e}") from None

    def _plan_hops(self, nodes: Sequence[Node]) -> None:
        first: dict[tuple[Optional[str], str, Optional[int]], list[str]] = {}
        later: set[str] = set()
        for n in nodes:
            opts = self._resolved.get((n.address, self._login(n), n.port), {})
            jump = (opts.get("proxyjump") or [""])[0]
            if not jump or jump.lower() == "none":
                continue
            hops = parse_jump(jump)
            if not hops:
                continue
            first.setdefault(hops[0], []).append(n.address)
            later.update(h for _, h, _ in hops[1:])
        shared = {k: addrs for k, addrs in first.items()
                  if len(set(addrs)) >= 2 and k[1] not in later and _ADDRESS.fullmatch(k[1])
                  and (k[0] is None or _USER.fullmatch(k[0]))}
        # one set of options per hop host name (the wrapper's Host block matches the name)
        by_host: dict[str, tuple[Optional[str], str, Optional[int]]] = {}
        for k in shared:
            if k[1] in by_host:  # same host with other user/port: share only the first
                continue
            by_host[k[1]] = k
        if not by_host:
            return
        if self._shared.wrapper is None:
            self._write_wrapper(sorted(by_host))
        for host, (user, _, port) in by_host.items():
            hop = self._shared.hops.setdefault(host, _Hop(host=host, user=user, port=port))
            for addr in shared[(user, host, port)]:
                hop.nodes += 1
                self._node_hop[addr] = hop

    def _write_wrapper(self, hosts: list[str]) -> None:
        base = tempfile.gettempdir()
        if len(base) > 40:  # ControlPath must fit a unix socket path (~104 bytes)
            base = "/tmp"
        tmpdir = tempfile.mkdtemp(prefix="ck-ssh-", dir=base)
        os.chmod(tmpdir, 0o700)
        if self.ssh_config:
            includes = [self.ssh_config]
        else:
            includes = [p for p in (os.path.expanduser("~/.ssh/config"), "/etc/ssh/ssh_config")
                        if os.path.isfile(p)]
        lines = [
            "# generated by clusterkit (OpenSSHTransport): one shared connection per jump host;",
            "# removed when the run ends. The user's configuration follows through Include.",
            f"Host {' '.join(hosts)}",
            "    ControlMaster no",
            f"    ControlPath {tmpdir}/%C",
            "Host *",
            "    BatchMode yes",
            f"    StrictHostKeyChecking {self._strict()}",
            f"    ConnectTimeout {max(1, math.ceil(self.connect_timeout))}",
            *(f'Include "{p}"' for p in includes),
        ]
        path = os.path.join(tmpdir, "ssh_config")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self._shared.tmpdir, self._shared.wrapper = tmpdir, path

    def _ensure_master(self, hop: _Hop, deadline: float) -> None:
        """Open the hop's shared connection once; every other node behind it waits for it."""
        if hop.state != "new":
            return
        with hop.lock:
            if hop.state != "new" or self._shared.wrapper is None:
                return
            left = deadline - time.monotonic()
            budget = max(1.0, min(left, self.connect_timeout + 5.0))
            cmd = [self.ssh_binary, "-F", self._shared.wrapper, "-N", "-T", "-a", "-x",
                   "-o", "ControlMaster=yes", "-o", f"ControlPersist={_CONTROL_PERSIST_S}",
                   "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={self._strict()}",
                   "-o", f"ConnectTimeout={max(1, math.ceil(min(self.connect_timeout, budget)))}",
                   "-o", "ClearAllForwardings=yes", "-o", "LogLevel=ERROR",
                   *hop.args(), "--", hop.host]
            try:
                r = self._procs.run(cmd, timeout=budget)
            except OSError as e:
                hop.state, hop.error = "failed", str(e)
                return
            if r.timed_out or r.rc != 0:
                hop.state, hop.error = "failed", _one_line(r.stderr) or f"exit {r.rc}"
                return
            hop.state = "up"
            try:
                chk = self._procs.run([self.ssh_binary, "-F", self._shared.wrapper, "-O", "check",
                                       *hop.args(), "--", hop.host], timeout=5)
                m = re.search(r"pid=(\d+)", chk.stderr + chk.stdout)
                hop.pid = int(m.group(1)) if m else None
            except OSError:
                hop.pid = None

    # ------------------------------------------------------------------ running
    def run(self, node: Node, argv: list[str], *, timeout: float, stdin: Optional[bytes] = None,
            env: Optional[Mapping[str, str]] = None, hold_stdin: bool = False) -> CommandResult:
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        hop = self._node_hop.get(node.address)
        if hop is not None:
            self._ensure_master(hop, deadline)
        left = deadline - time.monotonic()
        cmd = self.command_line(node, argv, env, timeout=max(left, 0.0))
        where = node.address if not node.port else f"{node.address}:{node.port}"
        try:
            r = self._procs.run(cmd, timeout=max(0.0, left), stdin=stdin, hold_stdin=hold_stdin)
        except OSError as e:
            raise ConnectError(f"cannot run {self.ssh_binary}: {e.strerror or e}", node=node.name,
                               cause=f"cannot run {os.path.basename(self.ssh_binary)}") from None
        if r.timed_out:
            raise CommandTimeout(f"command did not finish within {timeout:g}s", node=node.name,
                                 cause=f"did not finish within {timeout:g}s",
                                 stdout=r.stdout, stderr=r.stderr)
        hint = None
        if r.rc == 255 and _first(_AUTH, r.stderr.replace("\r", "")):
            hint = self._auth_hint(node)
        user = self._login(node) or self._resolved_user(node)
        err = classify(r.rc, r.stdout, r.stderr, node=node.name, where=where, user=user,
                       auth_hint=hint)
        if err is not None:
            raise err
        return CommandResult(node=node.name, argv=list(argv), rc=r.rc, stdout=r.stdout,
                             stderr=r.stderr, duration_s=r.duration_s, truncated=r.truncated)

    def _resolved_user(self, node: Node) -> str:
        key = (node.address, self._login(node), node.port)
        with self._lock:
            opts = self._resolved.get(key)
        return (opts or {}).get("user", [""])[0]

    def _auth_hint(self, node: Node) -> Optional[str]:
        """Why a login was refused, when the reason is a passphrase-protected identity that no
        agent holds (BatchMode cannot ask for the passphrase); None otherwise."""
        try:
            opts = self.resolved(node)
        except ConfigError:
            opts = {}
        user = (opts.get("user") or [""])[0]
        candidates: list[str] = []
        if self.identity:
            candidates.append(self.identity)
        for raw in opts.get("identityfile", []):
            p = _expand_path(raw, user)
            if p and p not in candidates:
                candidates.append(p)
        agent_setting = (opts.get("identityagent") or [""])[0]
        if agent_setting.lower() == "none":
            sock: Optional[str] = None
        elif agent_setting and agent_setting != "SSH_AUTH_SOCK":
            sock = _expand_path(agent_setting.strip('"'), user)
        else:
            sock = os.environ.get("SSH_AUTH_SOCK") or None
        held: Optional[set[bytes]] = None
        for path in candidates:
            if not os.path.isfile(path):
                continue
            with self._lock:
                info = self._key_cache.get(path)
            if info is None:
                info = key_info(path)
                with self._lock:
                    self._key_cache[path] = info
            encrypted, public = info
            if not encrypted:
                continue
            if held is None and sock:
                held = agent_keys(sock) or set()
            if public is not None and held and public in held:
                continue
            return f"identity {path} is passphrase-protected and no agent holds it; load it with ssh-add"
        return None

    def close(self) -> None:
        """Stop every ssh still running (their process groups), end the shared jump-host
        connections and remove the temp dir. Safe to call twice."""
        self._procs.kill_all()
        self._shared.cleanup()
