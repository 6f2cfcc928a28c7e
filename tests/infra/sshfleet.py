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
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
DEFAULT_USER = "ckuser"
TEST_NETWORK = "127.0.10.0/24"
BENCH_NETWORK = "127.0.20.0/23"
MARKER_ENV = "CLUSTERKIT_SSHFLEET"
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
    """

    def __init__(self, workdir: Path | str, nodes: Sequence[tuple[str, str]], env: EnvSpec = None,
                 user: str = DEFAULT_USER, *, venv: Path | str | None = None, port: int = 22,
                 known_hosts_exclude: Iterable[str] = (), known_hosts_wrong: Iterable[str] = (),
                 unreachable: Iterable[str] = (), sshd_options: Iterable[str] = (),
                 sshd: str = SSHD) -> None:
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
        lines = [
            f"# sshd for simulated node {node.name} (generated by tests/infra/sshfleet.py)",
            f"ListenAddress {node.ip}:{node.port}",
            f"HostKey {node.host_key}",
            f"PidFile {node.pidfile}",
            f"AuthorizedKeysFile {authorized_keys}",
            f"AllowUsers {self.user}",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "MaxStartups 200:30:400",
            "MaxSessions 64",
            "LogLevel ERROR",
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
        return "\n".join([
            f"Host {node.name}",
            f"    HostName {node.ip}",
            f"    Port {node.port}",
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
        _write(self.identity, private, 0o600)
        _write(self.identity.with_suffix(".pub"), public + "\n", 0o644)
        # sshd reads AuthorizedKeysFile as the login user: it must sit on a path that user
        # can traverse (the workdir usually cannot), root-owned, mode 0644.
        authorized = self.publish("authorized_keys", public + "\n")

        hosts: list[str] = []
        blocks: list[str] = []
        taken: set[tuple[str, int]] = set()
        for name in self.names:
            ip = self._ips[name]
            port = self.wanted_port
            if (ip, port) in taken or not _port_free(ip, port):
                port = _free_port(ip)
            taken.add((ip, port))
            node = SshNode(
                name=name, ip=ip, port=port, reachable=name not in self.unreachable,
                config=wd / "cfg" / f"{name}.sshd_config", log=wd / "log" / f"{name}.log",
                stderr=wd / "log" / f"{name}.stderr", pidfile=wd / "run" / f"{name}.pid",
                host_key=wd / "hostkeys" / f"{name}_ed25519",
            )
            hpriv, hpub = _ed25519_keypair(f"root@{name}")
            _write(node.host_key, hpriv, 0o600)
            _write(node.host_key.with_suffix(".pub"), hpub + "\n", 0o644)
            node.host_public = hpub
            _write(node.config, self._sshd_config(node, authorized), 0o644)
            self.nodes[name] = node
            blocks.append(self._client_block(node))
            if name in self.known_hosts_exclude:
                continue
            listed = hpub
            if name in self.known_hosts_wrong:
                listed = _ed25519_keypair(f"root@{name}-impostor")[1]
            key_type, key_b64 = listed.split()[:2]
            hosts.append(f"{node.known_hosts_names} {key_type} {key_b64}")
        _write(self.ssh_config, "# generated by tests/infra/sshfleet.py\n\n" + "\n".join(blocks),
               0o644)
        _write(self.known_hosts, "\n".join(hosts) + ("\n" if hosts else ""), 0o644)

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
        if name in self._procs and self._procs[name].poll() is None:
            return
        node.reachable = True
        self._launch(node)
        self._write_pids()
        self._wait_ready([name], timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every sshd we started, their live sessions and this fleet's leftover commands."""
        t0 = time.monotonic()
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

    # ------------------------------------------------------------------ conveniences
    def ssh_argv(self, name: str, *command: str) -> list[str]:
        """OpenSSH client command line for `command` on node `name`."""
        return ["ssh", "-F", str(self.ssh_config), name, *command]

    @property
    def hostlist(self) -> str:
        """Comma-separated node names (every tool accepts this; fold it where you need)."""
        return ",".join(self.names)


__all__ = [
    "BENCH_NETWORK", "DEFAULT_USER", "FleetError", "FleetUnavailable", "MARKER_ENV", "SSHD",
    "SshFleet", "SshNode", "TEST_NETWORK", "ensure_user", "loopback_nodes",
    "unavailable_reason",
]
