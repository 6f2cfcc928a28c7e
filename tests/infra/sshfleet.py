"""A fleet of real OpenSSH ``sshd`` daemons on loopback addresses, one per simulated node.

Each node is its own ``sshd`` with its own config, ed25519 host key, log and PID file,
listening on its own 127.x address (port 22 unless taken there). A plain user logs in with
one client key; per-node identity reaches the remote command through ``SetEnv`` in that
node's sshd_config (``CLUSTERKIT_NODE=<name>``, ``PATH=<node venv>/bin:/usr/bin:/bin`` and any
extra variables, e.g. ``CLUSTERKIT_SIM``). One generated ``ssh_config`` and one
``known_hosts`` serve every client (OpenSSH ``ssh``, pdsh, paramiko, fabric)::

    with SshFleet(tmp, loopback_nodes(16), env={"CLUSTERKIT_SIM": "builtin"}) as fleet:
        subprocess.run(["ssh", "-F", fleet.ssh_config, "gpu-001", "env"])

Variants for negative tests: ``known_hosts_exclude`` (host key missing from known_hosts ->
"unknown host"), ``known_hosts_wrong`` (known_hosts lists another key -> "changed host key"),
``unreachable`` (Host block exists, nothing listens on that address).

Set-ups of real sites (keyword options; each one a plain OpenSSH feature, see
``../shared/TEST-INFRA.md``):

- ``host_key_types=("ed25519", "ecdsa")`` + ``known_hosts_key_types=("ecdsa",)``: sshd serves
  both key types, known_hosts lists only the ECDSA one.
- ``host_certificates=True``: one fleet CA (``ca/host_ca``) signs every host key
  (``ssh-keygen -s ca -I NAME -h -n NAME,IP``), sshd serves ``HostCertificate``, and known_hosts
  holds only ``@cert-authority NAMES ssh-ed25519 <ca.pub>``.
- ``hash_known_hosts=True``: known_hosts hashed with ``ssh-keygen -H``.
- ``ports={"gpu-004": 2222}``: a node on another port; known_hosts says ``[name]:port``.
- ``host_key_aliases={"gpu-005": "alias-005"}``: its Host block says ``HostKeyAlias``, and
  known_hosts lists its key under the alias only.
- ``include_config=True``: ``ssh_config`` only has ``Include ssh_config.d/*.conf``, which hold
  the Host blocks (one file per node).
- ``bastion="bastion"``: that node's sshd keeps the stock ``MaxStartups 10:30:100`` (and logs at
  DEBUG1, so :meth:`SshFleet.bastion_logins` counts its logins and
  :meth:`SshFleet.bastion_forwards` the connections it forwarded); every other node's Host block
  says ``ProxyJump bastion``.
- ``client_key_passphrase="…"``: the client key is passphrase-protected (``ssh-keygen -p``);
  :meth:`SshFleet.start_agent` starts an ``ssh-agent`` of ours holding it (stopped by PID).
- ``silent=["gpu-007"]``: no sshd there, but a Python listener that accepts TCP connections and
  never sends an SSH banner (started and stopped with the fleet).
- A node killed mid-run: :meth:`SshFleet.stop_node` (and :meth:`SshFleet.node_processes` to see
  that its command is running first).

Needs root (sshd binds port 22 and switches to the login user) and ``/usr/sbin/sshd``;
:func:`unavailable_reason` says why not, for a clean skip.

Processes: every sshd is a child of this process (``sshd -D``); their PIDs are in ``pids`` and
in ``<workdir>/sshd.pids``. :meth:`SshFleet.stop` ends exactly those PIDs (SIGTERM, then
SIGKILL after a timeout), their descendants (live sessions), and the session processes that
carry this fleet's unique marker variable (commands left running after their client went
away, e.g. a simulated hang). Nothing is ever killed by name.

Addresses: tests use 127.0.10.0/24 (:data:`TEST_NETWORK`), benchmarks 127.0.20.0/23
(:data:`BENCH_NETWORK`), away from the ranges other suites pick.
"""

from __future__ import annotations

import atexit
import ipaddress
import selectors
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
DEFAULT_USER = "ckuser"
TEST_NETWORK = "127.0.10.0/24"
BENCH_NETWORK = "127.0.20.0/23"
MARKER_ENV = "CLUSTERKIT_SSHFLEET"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
NODE_PATH_TAIL = "/usr/bin:/bin"

EnvSpec = Mapping[str, str] | Callable[[str], Mapping[str, str]] | None

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BAD_ENV_VALUE = re.compile(r"[\"'\\\n\r\x00]")


class FleetError(RuntimeError):
    """The fleet could not be started or stopped (details, with log tails, in the message)."""


class FleetUnavailable(FleetError):
    """This machine cannot run a fleet at all (not root, no sshd): tests skip."""


# ----------------------------------------------------------------------------- helpers
def unavailable_reason(sshd: str = SSHD) -> str | None:
    """None when a fleet can run here; else a one-line reason (for pytest.skip)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "real sshd fleets need a POSIX system"
    if os.geteuid() != 0:
        return "real sshd fleets need root (sshd binds port 22 and switches users)"
    if not (os.path.isfile(sshd) and os.access(sshd, os.X_OK)):
        return f"no {sshd} (install openssh-server)"
    for tool in ("useradd", "usermod"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"no {tool} to create the login user"
    return None


def loopback_nodes(count: int, network: str = TEST_NETWORK, *, prefix: str = "gpu-",
                   width: int = 3, first: int = 1, offset: int = 0) -> list[tuple[str, str]]:
    """`count` (name, ip) pairs: gpu-001.. on consecutive addresses of `network`.

    Addresses ending in .0 or .255 are skipped; `offset` skips that many usable addresses.
    """
    net = ipaddress.ip_network(network)
    if not net.subnet_of(ipaddress.ip_network("127.0.0.0/8")):  # type: ignore[arg-type]
        raise ValueError(f"{network} is not a loopback network")
    usable = (a for a in net.hosts() if a.packed[-1] not in (0, 255))
    out: list[tuple[str, str]] = []
    for i, addr in enumerate(usable):
        if i < offset:
            continue
        if len(out) == count:
            break
        out.append((f"{prefix}{first + len(out):0{width}d}", str(addr)))
    if len(out) < count:
        raise ValueError(f"{network} has room for {len(out)} nodes after offset {offset}, "
                         f"not {count}")
    return out


def _ed25519_keypair(comment: str) -> tuple[bytes, str]:
    """(OpenSSH private key PEM, 'ssh-ed25519 AAAA… comment')."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def _host_keypair(kind: str, comment: str) -> tuple[bytes, str]:
    """(OpenSSH private key PEM, 'TYPE AAAA… comment') for ed25519, ecdsa (P-256) or rsa."""
    if kind == "ed25519":
        return _ed25519_keypair(comment)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unknown host key type {kind!r}; one of {', '.join(HOST_KEY_TYPES)}")
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def _tool(argv: list[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None
          ) -> None:
    """Run ssh-keygen / ssh-add; FleetError with its stderr when it fails."""
    cp = subprocess.run(argv, input=input, capture_output=True, check=False, timeout=60,
                        stdin=None if input is not None else subprocess.DEVNULL,
                        env=dict(env) if env is not None else None)
    if cp.returncode != 0:
        raise FleetError(f"{' '.join(argv[:3])}… failed (exit {cp.returncode}): "
                         f"{cp.stderr.decode(errors='replace').strip()}")


class SilentListener:
    """Accepts TCP connections on ip:port and never says anything (no SSH banner): the kind of
    node whose port is open but whose sshd is wedged. Connections are held until stop()."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((ip, port))
        self.port = self._sock.getsockname()[1]   # the one bound when port is 0
        self._sock.listen(128)
        self._sock.setblocking(False)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._loop, name=f"silent-{ip}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for _ in sel.select(0.1):
                    try:
                        conn, _addr = self._sock.accept()
                    except OSError:
                        continue
                    self._held.append(conn)
                    self.accepted += 1
        finally:
            sel.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._held:
            try:
                c.close()
            except OSError:
                pass
        self._held.clear()
        self._sock.close()


def _write(path: Path, data: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _run_admin(argv: list[str], ok_codes: Iterable[int] = (0,), tries: int = 50) -> int:
    """Run useradd/usermod, retrying while another process holds the passwd lock."""
    rc = -1
    err = ""
    for _ in range(tries):
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            check=False)
        rc, err = cp.returncode, cp.stderr
        if rc in ok_codes:
            return rc
        if "lock" not in err.lower():
            break
        time.sleep(0.2)
    raise FleetError(f"{' '.join(argv)} failed (exit {rc}): {err.strip()}")


def ensure_user(user: str) -> pwd.struct_passwd:
    """Create the plain login user if missing (home, /bin/sh) and make sure it is not locked."""
    if not _NAME_RE.match(user) or user == "root":
        raise ValueError(f"bad login user {user!r}")
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        _run_admin(["useradd", "-m", "-s", "/bin/sh", user], ok_codes=(0, 9))  # 9: exists
        pw = pwd.getpwnam(user)
    # A fresh useradd account has password "!" (locked): sshd without PAM refuses it even for
    # public keys. "*" = no password login possible, account usable.
    try:
        with open("/etc/shadow", encoding="utf-8", errors="replace") as f:
            field = next((ln.split(":")[1] for ln in f if ln.split(":")[0] == user), "")
    except OSError:
        field = "!"
    if field.startswith("!"):
        _run_admin(["usermod", "-p", "*", user])
    return pw


def _port_free(ip: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _free_port(ip: str) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _answers_ssh(ip: str, port: int) -> bool:
    """True when ip:port accepts TCP and sends an SSH identification banner."""
    try:
        with socket.create_connection((ip, port), timeout=1.0) as s:
            s.settimeout(3.0)
            data = b""
            while b"\n" not in data and len(data) < 512:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"SSH-")
            if ok:
                # Finish the identification exchange politely so sshd has nothing to log.
                try:
                    s.sendall(b"SSH-2.0-sshfleet-probe\r\n")
                except OSError:
                    pass
            return ok
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _proc_alive(pid: int) -> bool:
    """True while /proc/<pid> exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return False
    state = stat_line.rsplit(b")", 1)[-1].split()[0:1]
    return state != [b"Z"]


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[-1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return children


def _descendants(roots: Iterable[int]) -> set[int]:
    children = _ppid_map()
    out: set[int] = set()
    stack = list(roots)
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


def _marked(token: str) -> set[int]:
    """PIDs whose environment carries this fleet's marker (session commands it started)."""
    needle = f"{MARKER_ENV}={token}".encode()
    me = os.getpid()
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.add(int(entry))
    return out


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# ----------------------------------------------------------------------------- nodes
@dataclass
class SshNode:
    """One simulated node: where it listens and where its files are."""

    name: str
    ip: str
    port: int
    reachable: bool
    config: Path
    log: Path
    stderr: Path
    pidfile: Path
    host_key: Path
    host_public: str = ""
    pid: int | None = None
    #: every host key sshd serves: type -> private key path / 'TYPE AAAA… comment'
    host_keys: dict[str, Path] = field(default_factory=dict)
    host_publics: dict[str, str] = field(default_factory=dict)
    #: host certificates (type -> *-cert.pub) when the fleet has a CA
    certificates: dict[str, Path] = field(default_factory=dict)
    host_key_alias: str | None = None
    silent: bool = False
    #: the ProxyJump host of this node's Host block, if any
    proxy_jump: str | None = None

    @property
    def known_hosts_names(self) -> str:
        if self.port == 22:
            return f"{self.name},{self.ip}"
        return f"[{self.name}]:{self.port},[{self.ip}]:{self.port}"


_LIVE: weakref.WeakSet[SshFleet] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - safety net for aborted sessions
    for fleet in list(_LIVE):
        try:
            fleet.stop()
        except Exception:  # noqa: BLE001
            pass


class SshFleet:
    """N real sshd on loopback, a client ssh_config + known_hosts + key for all of them.

    Attributes once started: ``ssh_config``, ``known_hosts``, ``identity`` (paths),
    ``pids`` (node name -> sshd PID), ``nodes`` (name -> :class:`SshNode`), ``names``
    (all names, in order), ``venv`` (node virtualenv), ``timings`` (seconds: ``prepare``,
    ``venv`` (only when start() had to find the venv itself), ``prepare`` (keys and configs,
    including ``venv``), ``launch``, ``ready``, ``start`` (all of it); ``stop`` after stop()).
    ``on_stop``: callables run with the fleet at the end of stop().

    Site set-ups (module docstring): ``host_key_types``, ``known_hosts_key_types``,
    ``host_certificates`` (then ``ca_key``/``ca_public``), ``hash_known_hosts``, ``ports``,
    ``host_key_aliases``, ``include_config`` (then ``ssh_config_dir``), ``bastion``,
    ``client_key_passphrase`` (then :meth:`start_agent`), ``silent``.
    """

    def __init__(self, workdir: Path | str, nodes: Sequence[tuple[str, str]], env: EnvSpec = None,
                 user: str = DEFAULT_USER, *, venv: Path | str | None = None, port: int = 22,
                 known_hosts_exclude: Iterable[str] = (), known_hosts_wrong: Iterable[str] = (),
                 unreachable: Iterable[str] = (), sshd_options: Iterable[str] = (),
                 sshd: str = SSHD, host_key_types: Sequence[str] = ("ed25519",),
                 known_hosts_key_types: Sequence[str] | None = None,
                 host_certificates: bool = False, hash_known_hosts: bool = False,
                 ports: Mapping[str, int] | None = None,
                 host_key_aliases: Mapping[str, str] | None = None,
                 include_config: bool = False, bastion: str | None = None,
                 client_key_passphrase: str | None = None, silent: Iterable[str] = ()) -> None:
        self.workdir = Path(workdir).resolve()
        self.user = user
        self.env_spec = env
        self.venv = Path(venv) if venv is not None else None
        self.wanted_port = port
        self.sshd = sshd
        self.sshd_options = list(sshd_options)
        self.token = secrets.token_hex(8)
        self.names: list[str] = []
        seen_ips: set[str] = set()
        for name, ip in nodes:
            if not _NAME_RE.match(name):
                raise ValueError(f"bad node name {name!r}")
            if name in self.names:
                raise ValueError(f"duplicate node name {name!r}")
            addr = ipaddress.ip_address(ip)
            if not addr.is_loopback or addr.version != 4:
                raise ValueError(f"{name}: {ip} is not an IPv4 loopback address")
            if ip in seen_ips:
                raise ValueError(f"{name}: address {ip} used twice")
            seen_ips.add(ip)
            self.names.append(name)
        self._ips = dict(nodes)
        self.known_hosts_exclude = self._subset(known_hosts_exclude, "known_hosts_exclude")
        self.known_hosts_wrong = self._subset(known_hosts_wrong, "known_hosts_wrong")
        self.unreachable = self._subset(unreachable, "unreachable")
        self.host_key_types = tuple(host_key_types)
        if not self.host_key_types or any(t not in HOST_KEY_TYPES for t in self.host_key_types):
            raise ValueError(f"host_key_types: one or more of {HOST_KEY_TYPES}")
        self.known_hosts_key_types = tuple(known_hosts_key_types or self.host_key_types)
        if not set(self.known_hosts_key_types) <= set(self.host_key_types):
            raise ValueError("known_hosts_key_types must be among host_key_types")
        self.host_certificates = bool(host_certificates)
        self.hash_known_hosts = bool(hash_known_hosts)
        self.ports = dict(ports or {})
        self._subset(self.ports, "ports")
        self.host_key_aliases = dict(host_key_aliases or {})
        self._subset(self.host_key_aliases, "host_key_aliases")
        for alias in self.host_key_aliases.values():
            if not _NAME_RE.match(alias):
                raise ValueError(f"bad HostKeyAlias {alias!r}")
        self.include_config = bool(include_config)
        if bastion is not None and bastion not in self.names:
            raise ValueError(f"bastion {bastion!r} is not a node of the fleet")
        self.bastion = bastion
        if client_key_passphrase is not None and (not client_key_passphrase
                                                  or "\n" in client_key_passphrase):
            raise ValueError("client_key_passphrase: a non-empty single line")
        self.client_key_passphrase = client_key_passphrase
        self.silent = self._subset(silent, "silent")
        self.unreachable |= self.silent  # no sshd there
        self.ssh_config_dir = self.workdir / "ssh_config.d"
        self.ca_key = self.workdir / "ca" / "host_ca"
        self.ca_public = ""
        self.agent_socket: Path | None = None
        self.agent_pid: int | None = None
        self._agent: subprocess.Popen[bytes] | None = None
        self._identity_plain = b""
        self._listeners: dict[str, SilentListener] = {}
        self.ssh_config = self.workdir / "ssh_config"
        self.known_hosts = self.workdir / "known_hosts"
        self.identity = self.workdir / "client" / "id_ed25519"
        self.pids: dict[str, int] = {}
        self.nodes: dict[str, SshNode] = {}
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._public: Path | None = None
        self.on_stop: list[Callable[[SshFleet], None]] = []

    def _subset(self, names: Iterable[str], what: str) -> set[str]:
        out = set(names)
        unknown = out - set(self.names)
        if unknown:
            raise ValueError(f"{what}: not in the fleet: {sorted(unknown)}")
        return out

    # ------------------------------------------------------------------ public files
    @property
    def public_dir(self) -> Path:
        """A world-readable directory for files the node user must read (sim fleet YAML…)."""
        if self._public is None:
            self._public = Path(tempfile.mkdtemp(prefix="clusterkit-sshfleet-"))
            os.chmod(self._public, 0o755)
        return self._public

    def publish(self, name: str, data: str | bytes) -> Path:
        """Write `data` to public_dir/name (mode 0644) and return its path."""
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"bad file name {name!r}")
        path = self.public_dir / name
        _write(path, data, 0o644)
        return path

    # ------------------------------------------------------------------ env
    def node_env(self, name: str) -> dict[str, str]:
        """The variables sshd's SetEnv gives every session on `name`."""
        if self.venv is None:
            raise FleetError("node venv not known yet (start() sets it)")
        env = {"CLUSTERKIT_NODE": name, "PATH": f"{self.venv}/bin:{NODE_PATH_TAIL}"}
        spec = self.env_spec
        extra = spec(name) if callable(spec) else (spec or {})
        env.update({str(k): str(v) for k, v in extra.items()})
        env[MARKER_ENV] = self.token
        for k, v in env.items():
            if not _ENV_KEY_RE.match(k) or _BAD_ENV_VALUE.search(v):
                raise ValueError(f"{name}: environment {k}={v!r} cannot go into sshd SetEnv")
        return env

    # ------------------------------------------------------------------ files
    def _sshd_config(self, node: SshNode, authorized_keys: Path) -> str:
        setenv = " ".join(f'"{k}={v}"' for k, v in self.node_env(node.name).items())
        bastion = node.name == self.bastion
        host_keys = [f"HostKey {path}" for path in node.host_keys.values()] or [f"HostKey {node.host_key}"]
        certs = [f"HostCertificate {path}" for path in node.certificates.values()]
        lines = [
            f"# sshd for simulated node {node.name} (generated by tests/infra/sshfleet.py)"
            + (" - a bastion with the stock MaxStartups 10:30:100" if bastion else ""),
            f"ListenAddress {node.ip}:{node.port}",
            *host_keys,
            *certs,
            f"PidFile {node.pidfile}",
            f"AuthorizedKeysFile {authorized_keys}",
            f"AllowUsers {self.user}",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            *([] if bastion else ["MaxStartups 200:30:400"]),
            "MaxSessions 64",
            "LogLevel DEBUG1" if bastion else "LogLevel ERROR",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "X11Forwarding no",
            "Subsystem sftp internal-sftp",
            f"SetEnv {setenv}",
            *self.sshd_options,
        ]
        return "\n".join(lines) + "\n"

    def _client_block(self, node: SshNode) -> str:
        extra = []
        if node.host_key_alias:
            extra.append(f"    HostKeyAlias {node.host_key_alias}")
        if node.proxy_jump:
            extra.append(f"    ProxyJump {node.proxy_jump}")
        return "\n".join([
            f"Host {node.name}",
            f"    HostName {node.ip}",
            f"    Port {node.port}",
            *extra,
            f"    User {self.user}",
            f"    IdentityFile {self.identity}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {self.known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    UpdateHostKeys no",
            "    BatchMode yes",
            "    KexAlgorithms curve25519-sha256",
            "    ConnectTimeout 10",
        ]) + "\n"

    def _prepare(self) -> None:
        wd = self.workdir
        for sub in ("cfg", "hostkeys", "log", "run", "client"):
            (wd / sub).mkdir(parents=True, exist_ok=True)
        private, public = _ed25519_keypair(f"{self.user}@sshfleet")
        self._identity_plain = private
        _write(self.identity, private, 0o600)
        _write(self.identity.with_suffix(".pub"), public + "\n", 0o644)
        if self.client_key_passphrase is not None:
            _tool(["ssh-keygen", "-q", "-p", "-P", "", "-N", self.client_key_passphrase,
                   "-f", str(self.identity)])
        # sshd reads AuthorizedKeysFile as the login user: it must sit on a path that user
        # can traverse (the workdir usually cannot), root-owned, mode 0644.
        authorized = self.publish("authorized_keys", public + "\n")
        if self.host_certificates:
            ca_private, self.ca_public = _ed25519_keypair("sshfleet-host-ca")
            _write(self.ca_key, ca_private, 0o600)
            _write(self.ca_key.with_suffix(".pub"), self.ca_public + "\n", 0o644)

        hosts: list[str] = []
        blocks: list[tuple[str, str]] = []
        taken: set[tuple[str, int]] = set()
        for name in self.names:
            ip = self._ips[name]
            port = self.ports.get(name, self.wanted_port)
            if (ip, port) in taken or not _port_free(ip, port):
                port = _free_port(ip)
            taken.add((ip, port))
            node = SshNode(
                name=name, ip=ip, port=port, reachable=name not in self.unreachable,
                config=wd / "cfg" / f"{name}.sshd_config", log=wd / "log" / f"{name}.log",
                stderr=wd / "log" / f"{name}.stderr", pidfile=wd / "run" / f"{name}.pid",
                host_key=wd / "hostkeys" / f"{name}_{self.host_key_types[0]}",
                host_key_alias=self.host_key_aliases.get(name), silent=name in self.silent,
                proxy_jump=self.bastion if self.bastion not in (None, name) else None,
            )
            for kind in self.host_key_types:
                path = wd / "hostkeys" / f"{name}_{kind}"
                hpriv, hpub = _host_keypair(kind, f"root@{name}")
                _write(path, hpriv, 0o600)
                _write(path.with_suffix(".pub"), hpub + "\n", 0o644)
                node.host_keys[kind] = path
                node.host_publics[kind] = hpub
                if self.host_certificates:
                    principals = ",".join(p for p in (name, ip, node.host_key_alias) if p)
                    _tool(["ssh-keygen", "-q", "-s", str(self.ca_key), "-I", name, "-h",
                           "-n", principals, str(path.with_suffix(".pub"))])
                    node.certificates[kind] = path.parent / f"{path.name}-cert.pub"
            node.host_public = node.host_publics[self.host_key_types[0]]
            _write(node.config, self._sshd_config(node, authorized), 0o644)
            self.nodes[name] = node
            blocks.append((name, self._client_block(node)))
            if name in self.known_hosts_exclude or self.host_certificates:
                continue
            names = node.host_key_alias or node.known_hosts_names
            for kind in self.known_hosts_key_types:
                listed = node.host_publics[kind]
                if name in self.known_hosts_wrong:
                    listed = _host_keypair(kind, f"root@{name}-impostor")[1]
                key_type, key_b64 = listed.split()[:2]
                hosts.append(f"{names} {key_type} {key_b64}")
        if self.host_certificates:
            patterns = ",".join(self.nodes[n].host_key_alias or self.nodes[n].known_hosts_names
                                for n in self.names if n not in self.known_hosts_exclude)
            ca_type, ca_b64 = self.ca_public.split()[:2]
            hosts.append(f"@cert-authority {patterns} {ca_type} {ca_b64}")
        header = "# generated by tests/infra/sshfleet.py\n\n"
        if self.include_config:
            self.ssh_config_dir.mkdir(parents=True, exist_ok=True)
            for name, block in blocks:
                _write(self.ssh_config_dir / f"{name}.conf", block, 0o644)
            _write(self.ssh_config, f"{header}Include {self.ssh_config_dir}/*.conf\n", 0o644)
        else:
            _write(self.ssh_config, header + "\n".join(b for _, b in blocks), 0o644)
        _write(self.known_hosts, "\n".join(hosts) + ("\n" if hosts else ""), 0o644)
        if self.hash_known_hosts and hosts:
            _tool(["ssh-keygen", "-q", "-H", "-f", str(self.known_hosts)])
            Path(f"{self.known_hosts}.old").unlink(missing_ok=True)
            os.chmod(self.known_hosts, 0o644)

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self._procs.values())

    def _launch(self, node: SshNode) -> None:
        for p in (node.log, node.stderr, node.pidfile):
            p.unlink(missing_ok=True)
        with open(node.stderr, "wb") as err:
            # -D: stay in the foreground as our child (exact PID, reaped by wait()).
            proc = subprocess.Popen(
                [self.sshd, "-D", "-f", str(node.config), "-E", str(node.log)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )
        self._procs[node.name] = proc
        node.pid = proc.pid
        self.pids[node.name] = proc.pid

    def log_tail(self, name: str, lines: int = 20) -> str:
        node = self.nodes[name]
        text = "\n".join(t for t in (_tail(node.stderr, lines), _tail(node.log, lines)) if t)
        return text or "(sshd wrote nothing)"

    def _wait_ready(self, names: Iterable[str], timeout: float) -> None:
        pending = [n for n in names if self.nodes[n].reachable]
        deadline = time.monotonic() + timeout
        while pending:
            still: list[str] = []
            for name in pending:
                node = self.nodes[name]
                proc = self._procs[name]
                rc = proc.poll()
                if rc is not None:
                    raise FleetError(f"sshd for {name} ({node.ip}:{node.port}) exited with {rc} "
                                     f"during start-up; config {node.config}; its log:\n"
                                     f"{self.log_tail(name)}")
                if not _answers_ssh(node.ip, node.port):
                    still.append(name)
            pending = still
            if not pending:
                break
            if time.monotonic() > deadline:
                name = pending[0]
                node = self.nodes[name]
                raise FleetError(f"{len(pending)} sshd not answering after {timeout:.0f} s, "
                                 f"e.g. {name} ({node.ip}:{node.port}); its log:\n"
                                 f"{self.log_tail(name)}")
            time.sleep(0.02)

    def _write_pids(self) -> None:
        text = "".join(f"{n} {pid}\n" for n, pid in self.pids.items())
        _write(self.workdir / "sshd.pids", text, 0o644)

    def start(self, timeout: float = 30.0) -> SshFleet:
        """Generate keys and configs, start every reachable node, wait until all answer SSH."""
        reason = unavailable_reason(self.sshd)
        if reason:
            raise FleetUnavailable(reason)
        if self._procs:
            raise FleetError("fleet already started")
        t0 = time.monotonic()
        if self.venv is None:
            from tests.infra.nodeenv import NodeEnvError, ensure_node_venv

            try:
                self.venv = ensure_node_venv()
            except NodeEnvError as e:
                raise FleetUnavailable(str(e)) from None
        self.timings["venv"] = time.monotonic() - t0
        ensure_user(self.user)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        t1 = time.monotonic()
        _LIVE.add(self)
        try:
            for name in self.names:
                if self.nodes[name].reachable:
                    self._launch(self.nodes[name])
                elif self.nodes[name].silent:
                    node = self.nodes[name]
                    self._listeners[name] = SilentListener(node.ip, node.port)
            self._write_pids()
            t2 = time.monotonic()
            self._wait_ready(self.names, timeout)
        except BaseException:
            self.stop()
            raise
        t3 = time.monotonic()
        self.timings.update(prepare=t1 - t0, launch=t2 - t1, ready=t3 - t2, start=t3 - t0)
        return self

    def stop_node(self, name: str, timeout: float = 5.0) -> None:
        """Stop one node's sshd (it becomes unreachable); start_node() brings it back."""
        proc = self._procs.pop(name, None)
        self.pids.pop(name, None)
        if proc is None:
            return
        victims = _descendants([proc.pid])
        if proc.poll() is None:
            proc.terminate()
        _signal_all(victims, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.nodes[name].pid = None
        self._write_pids()

    def start_node(self, name: str, timeout: float = 10.0) -> None:
        """(Re)start one node's sshd with its existing config and host key."""
        node = self.nodes[name]
        if node.silent:
            raise FleetError(f"{name} is a silent node (no sshd to start)")
        if name in self._procs and self._procs[name].poll() is None:
            return
        node.reachable = True
        self._launch(node)
        self._write_pids()
        self._wait_ready([name], timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every sshd we started, their live sessions and this fleet's leftover commands."""
        t0 = time.monotonic()
        self.stop_agent()
        for listener in self._listeners.values():
            listener.stop()
        self._listeners.clear()
        procs = list(self._procs.values())
        running = [p for p in procs if p.poll() is None]
        sessions = _descendants(p.pid for p in running) | _marked(self.token)
        for p in running:
            p.terminate()
        _signal_all(sessions, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # Session commands whose sshd went away before us (a client that gave up on a hang).
        left = {pid for pid in sessions | _marked(self.token) if _proc_alive(pid)}
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {pid for pid in left if _proc_alive(pid)}
        _signal_all(left, signal.SIGKILL)
        self._procs.clear()
        self.pids.clear()
        for node in self.nodes.values():
            node.pid = None
        if self._public is not None:
            shutil.rmtree(self._public, ignore_errors=True)
            self._public = None
        _LIVE.discard(self)
        self.timings["stop"] = time.monotonic() - t0
        callbacks, self.on_stop = self.on_stop, []
        for cb in callbacks:
            cb(self)

    def __enter__(self) -> SshFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ agent
    def start_agent(self, load: bool = True, timeout: float = 10.0) -> dict[str, str]:
        """Start an ssh-agent of ours (``ssh-agent -D``: a child with a known PID) and, with
        `load`, put the client key into it (the plain key goes to ``ssh-add -`` on stdin, so
        no passphrase prompt). Returns the environment a client needs: ``SSH_AUTH_SOCK``."""
        if self._agent is not None and self._agent.poll() is None:
            assert self.agent_socket is not None
            return {"SSH_AUTH_SOCK": str(self.agent_socket)}
        sock = Path(tempfile.mkdtemp(prefix="sshfleet-agent-")) / "agent.sock"
        self._agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        self.agent_pid, self.agent_socket = self._agent.pid, sock
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self._agent.poll() is not None or time.monotonic() > deadline:
                self.stop_agent()
                raise FleetError("ssh-agent did not start")
            time.sleep(0.02)
        env = {"SSH_AUTH_SOCK": str(sock)}
        if load:
            _tool(["ssh-add", "-q", "-"], input=self._identity_plain, env={**os.environ, **env})
        return env

    def stop_agent(self) -> None:
        """Stop the agent start_agent() started (by its PID) and remove its socket."""
        proc, self._agent = self._agent, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.agent_socket is not None:
            shutil.rmtree(self.agent_socket.parent, ignore_errors=True)
        self.agent_pid = self.agent_socket = None

    # ------------------------------------------------------------------ conveniences
    def node_processes(self, name: str, needle: str = "") -> list[int]:
        """PIDs of session commands running on node `name` (this fleet's marker and that
        node's CLUSTERKIT_NODE in their environment), optionally with `needle` in the command
        line: e.g. wait until node-check runs there before stopping the node."""
        want = f"CLUSTERKIT_NODE={name}".encode()
        out = []
        for pid in sorted(_marked(self.token)):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if want in env and needle in cmdline:
                out.append(pid)
        return out

    def bastion_logins(self) -> int:
        """How many SSH logins (handshake + authentication) the bastion's sshd has accepted."""
        if self.bastion is None:
            raise FleetError("this fleet has no bastion")
        try:
            text = self.nodes[self.bastion].log.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if "Accepted publickey for" in line)

    def bastion_forwards(self) -> list[str]:
        """``ip:port`` of every connection the bastion forwarded (ProxyJump's direct-tcpip)."""
        if self.bastion is None:
            raise FleetError("this fleet has no bastion")
        try:
            text = self.nodes[self.bastion].log.read_text(errors="replace")
        except OSError:
            return []
        found = re.findall(r"server_request_direct_tcpip: originator .*, target (\S+) port (\d+)", text)
        return [f"{ip}:{port}" for ip, port in found]

    def ssh_argv(self, name: str, *command: str) -> list[str]:
        """OpenSSH client command line for `command` on node `name`."""
        return ["ssh", "-F", str(self.ssh_config), name, *command]

    @property
    def hostlist(self) -> str:
        """Comma-separated node names (every tool accepts this; fold it where you need)."""
        return ",".join(self.names)


__all__ = [
    "BENCH_NETWORK", "DEFAULT_USER", "FleetError", "FleetUnavailable", "HOST_KEY_TYPES",
    "MARKER_ENV", "SSHD", "SilentListener", "SshFleet", "SshNode", "TEST_NETWORK", "ensure_user",
    "loopback_nodes", "unavailable_reason",
]
