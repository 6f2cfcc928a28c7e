"""The paramiko transport without an SSH server: deadlines against local TCP listeners that
never speak SSH, error translation, ConfigError from prepare() before any connection, and the
ssh_config reader it uses (Include, Host/Match, tokens) on hand-written files.

Commands over real sshd are in tests/integration/test_ssh_options.py and test_ssh_sites.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from clusterkit.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    InternalError,
    TransportError,
)
from clusterkit.models import Node
from clusterkit.transport import fan_out
from clusterkit.transport.ssh import SSHTransport, load_identity
from clusterkit.transport.sshconfig import (
    SSHConfig,
    algorithm_list,
    host_config,
    parse_jump,
    split_args,
)


# ----------------------------------------------------------------------------- helpers
class Listener:
    """A local TCP listener: ``greeting`` bytes (or nothing) after accepting; ``close_at_once``
    hangs up right away. Counts connections; holds them until stop()."""

    def __init__(self, greeting: bytes = b"", close_at_once: bool = False) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.srv.settimeout(0.05)
        self.port = self.srv.getsockname()[1]
        self.greeting = greeting
        self.close_at_once = close_at_once
        self.accepted = 0
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            self.accepted += 1
            if self.greeting:
                try:
                    c.sendall(self.greeting)
                except OSError:
                    pass
            if self.close_at_once:
                c.close()
            else:
                self.held.append(c)

    def stop(self) -> None:
        self._stop.set()
        self._th.join()
        for c in self.held:
            c.close()
        self.srv.close()


@pytest.fixture
def silent():
    lst = Listener()
    yield lst
    lst.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME (no ~/.ssh/config, no default keys), no agent."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return h


def config(tmp_path: Path, text: str, name: str = "ssh_config") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def block(name: str, port: int, kh: Path, extra: str = "") -> str:
    return (f"Host {name}\n    HostName 127.0.0.1\n    Port {port}\n    User nobody\n"
            f"    UserKnownHostsFile {kh}\n    GlobalKnownHostsFile /dev/null\n{extra}")


@pytest.fixture
def kh(tmp_path):
    path = tmp_path / "known_hosts"
    path.write_text("")
    return path


def ed25519_key(path: Path, passphrase: bytes | None = None) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH, enc))
    path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
    path.with_name(path.name + ".pub").write_bytes(pub + b" test\n")


# ----------------------------------------------------------------------------- deadlines
def test_timeout_bounds_the_connection(tmp_path, home, silent, kh):
    """--timeout 1 with --connect-timeout 8 on a node that never sends a banner: ~1 s, not 8."""
    t = SSHTransport(ssh_config=config(tmp_path, block("silent", silent.port, kh)),
                     connect_timeout=8)
    t.prepare([Node(name="silent")])
    t0 = time.monotonic()
    with pytest.raises(ConnectError) as ei:
        t.run(Node(name="silent"), ["true"], timeout=1)
    took = time.monotonic() - t0
    assert 0.9 <= took < 3, took  # not the 8 s of the connect timeout
    assert ei.value.cause == "no SSH banner" and ei.value.nothing_ran
    assert "banner" in str(ei.value) and "1s" in str(ei.value)
    assert silent.accepted == 1


def test_connect_timeout_bounds_the_banner_wait(tmp_path, home, silent, kh):
    t = SSHTransport(ssh_config=config(tmp_path, block("silent", silent.port, kh)),
                     connect_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(ConnectError) as ei:
        t.run(Node(name="silent"), ["true"], timeout=30)
    assert 0.9 <= time.monotonic() - t0 < 3
    assert ei.value.cause == "no SSH banner"


def test_many_silent_nodes_at_once_each_by_its_deadline(tmp_path, home, silent, kh):
    cfg = config(tmp_path, block("silent-*", silent.port, kh))
    t = SSHTransport(ssh_config=cfg, connect_timeout=8)
    nodes = [Node(name=f"silent-{i}") for i in range(24)]
    t.prepare(nodes)
    t0 = time.monotonic()
    out = fan_out(t, nodes, ["true"], timeout=1.0, fanout=24)
    assert time.monotonic() - t0 < 5  # each by its own 1 s deadline, all at once
    assert {type(o).__name__ for o in out.values()} == {"ConnectError"}
    assert {o.cause for o in out.values() if isinstance(o, TransportError)} == {"no SSH banner"}


def test_server_that_hangs_up_before_the_banner(tmp_path, home, kh):
    lst = Listener(close_at_once=True)
    try:
        t = SSHTransport(ssh_config=config(tmp_path, block("gone", lst.port, kh)))
        t0 = time.monotonic()
        with pytest.raises(ConnectError) as ei:
            t.run(Node(name="gone"), ["true"], timeout=10)
        assert time.monotonic() - t0 < 3
        assert ei.value.cause == "no SSH banner" and "closed" in str(ei.value)
    finally:
        lst.stop()


def test_not_an_ssh2_server(tmp_path, home, kh):
    lst = Listener(greeting=b"SSH-1.5-ancient\r\n")
    try:
        t = SSHTransport(ssh_config=config(tmp_path, block("old", lst.port, kh)))
        with pytest.raises(ConnectError) as ei:
            t.run(Node(name="old"), ["true"], timeout=10)
        assert ei.value.cause == "incompatible SSH version"
    finally:
        lst.stop()


def test_connection_refused(tmp_path, home, kh):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t = SSHTransport(ssh_config=config(tmp_path, block("closed", port, kh)))
    with pytest.raises(ConnectError) as ei:
        t.run(Node(name="closed"), ["true"], timeout=5)
    assert ei.value.cause == "connection refused"
    assert str(ei.value).startswith("cannot connect to 127.0.0.1:")


def test_cannot_resolve(tmp_path, home, kh, monkeypatch):
    def fail(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    t = SSHTransport(ssh_config=config(tmp_path, "Host x\n    HostName nowhere.invalid\n"
                                                 f"    UserKnownHostsFile {kh}\n"))
    with pytest.raises(ConnectError) as ei:
        t.run(Node(name="x"), ["true"], timeout=5)
    assert ei.value.cause == "cannot resolve host" and "nowhere.invalid" in str(ei.value)


def test_causes_carry_no_addresses(tmp_path, home, silent, kh):
    t = SSHTransport(ssh_config=config(tmp_path, block("silent", silent.port, kh)),
                     connect_timeout=0.5)
    with pytest.raises(ConnectError) as ei:
        t.run(Node(name="silent"), ["true"], timeout=5)
    assert "127.0.0.1" not in ei.value.cause and str(silent.port) not in ei.value.cause
    assert "silent" not in ei.value.cause


def test_an_unexpected_exception_is_not_unreachable(tmp_path, home, kh, monkeypatch):
    """A bug of ours must not pass for an unreachable node: it propagates from run(), and the
    fan-out reports it as an internal error (exit 4)."""
    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(socket, "getaddrinfo", boom)
    t = SSHTransport(ssh_config=config(tmp_path, block("x", 22, kh)))
    with pytest.raises(RuntimeError):
        t.run(Node(name="x"), ["true"], timeout=5)
    out = fan_out(t, [Node(name="x")], ["true"], timeout=5)
    assert isinstance(out["x"], InternalError) and out["x"].exit_code == 4


def test_run_after_close_connects_to_nothing(tmp_path, home, silent, kh):
    t = SSHTransport(ssh_config=config(tmp_path, block("silent", silent.port, kh)))
    t.close()
    with pytest.raises(ConnectError) as ei:
        t.run(Node(name="silent"), ["true"], timeout=5)
    assert ei.value.cause == "interrupted"
    time.sleep(0.1)
    assert silent.accepted == 0


def test_close_stops_a_run_that_waits(tmp_path, home, silent, kh):
    t = SSHTransport(ssh_config=config(tmp_path, block("silent", silent.port, kh)),
                     connect_timeout=30)
    got: list[BaseException] = []

    def run() -> None:
        try:
            t.run(Node(name="silent"), ["true"], timeout=30)
        except BaseException as e:  # noqa: BLE001
            got.append(e)

    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    t.close()
    th.join(5)
    assert not th.is_alive() and time.monotonic() - t0 < 2
    assert isinstance(got[0], ConnectError) and got[0].cause == "interrupted"


def test_env_goes_as_an_argv_prefix(tmp_path, home, kh, monkeypatch):
    """``env`` becomes ``env NAME=value …`` in front of the quoted argv (nothing interpolated)."""
    t = SSHTransport(ssh_config=config(tmp_path, block("x", 22, kh)))
    seen: dict[str, object] = {}

    def fake_open(self, hop, run, *, shared):
        return object()

    def fake_exec(self, tr, hop, run, argv, command, stdin, hold_stdin):
        seen.update(command=command, hold=hold_stdin, stdin=stdin)
        raise ConnectError("stop here")

    monkeypatch.setattr(SSHTransport, "_open", fake_open)
    monkeypatch.setattr(SSHTransport, "_exec", fake_exec)
    with pytest.raises(ConnectError):
        t.run(Node(name="x"), ["echo", "$HOME", "a b"], timeout=5,
              env={"A": "x y", "B": "$(touch z)"}, stdin=b"in", hold_stdin=True)
    assert seen["command"] == "env 'A=x y' 'B=$(touch z)' echo '$HOME' 'a b'"
    assert seen["hold"] is True and seen["stdin"] == b"in"


# ----------------------------------------------------------------------------- prepare()
def prepare_error(tmp_path: Path, text: str, nodes: list[str], **kw) -> str:
    t = SSHTransport(ssh_config=config(tmp_path, text), **kw)
    with pytest.raises(ConfigError) as ei:
        t.prepare([Node(name=n) for n in nodes])
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_prepare_contacts_nobody_and_accepts_a_good_config(tmp_path, home, silent, kh):
    t = SSHTransport(ssh_config=config(tmp_path, block("a", silent.port, kh)))
    t.prepare([Node(name="a")])
    time.sleep(0.1)
    assert silent.accepted == 0


def test_bad_port_names_file_and_line(tmp_path, home, silent, kh):
    text = block("a", silent.port, kh) + "Host b\n    HostName 127.0.0.1\n    Port abc\n"
    msg = prepare_error(tmp_path, text, ["a", "b"])
    assert "ssh_config line 9" in msg and "Port 'abc'" in msg
    time.sleep(0.1)
    assert silent.accepted == 0


@pytest.mark.parametrize("jump", ["user@", "host:port", "a:99999", "-oProxyCommand=x", "a,,b"])
def test_bad_proxyjump(tmp_path, home, kh, jump):
    msg = prepare_error(tmp_path, block("a", 22, kh, f"    ProxyJump {jump}\n"), ["a"])
    assert "ProxyJump" in msg and "ssh_config line 7" in msg


def test_unreadable_or_corrupt_known_hosts(tmp_path, home):
    d = tmp_path / "kh-dir"
    d.mkdir()
    msg = prepare_error(tmp_path, block("a", 22, d), ["a"])
    assert str(d) in msg
    binary = tmp_path / "kh-binary"
    binary.write_bytes(os.urandom(256) + b"\x00")
    msg = prepare_error(tmp_path, block("a", 22, binary), ["a"])
    assert "kh-binary" in msg and "binary" in msg


def test_missing_identity_from_the_command_line(tmp_path, home, kh):
    msg = prepare_error(tmp_path, block("a", 22, kh), ["a"], identity=str(tmp_path / "no-key"))
    assert "no-key" in msg


def test_missing_identity_named_in_ssh_config(tmp_path, home, kh):
    extra = f"    IdentityFile {tmp_path}/missing_key\n    IdentitiesOnly yes\n"
    msg = prepare_error(tmp_path, block("a", 22, kh, extra), ["a"])
    assert "missing_key" in msg and "IdentityFile" in msg and "line 7" in msg


def test_missing_default_identities_are_fine(tmp_path, home, kh):
    assert not any((home / ".ssh").iterdir())
    t = SSHTransport(ssh_config=config(tmp_path, block("a", 22, kh)))
    t.prepare([Node(name="a")])


def test_identity_with_only_its_public_half_is_an_agent_key(tmp_path, home, kh):
    ed25519_key(tmp_path / "k")
    (tmp_path / "k").unlink()  # the private half lives in an agent
    t = SSHTransport(ssh_config=config(tmp_path, block("a", 22, kh,
                                                       f"    IdentityFile {tmp_path}/k\n")))
    t.prepare([Node(name="a")])


def test_corrupt_identity(tmp_path, home, kh):
    bad = tmp_path / "bad_key"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n"
                   "-----END OPENSSH PRIVATE KEY-----\n")
    msg = prepare_error(tmp_path, block("a", 22, kh, f"    IdentityFile {bad}\n"), ["a"])
    assert "bad_key" in msg


def test_passphrase_protected_identity_is_known_by_its_public_key(tmp_path):
    ed25519_key(tmp_path / "enc", passphrase=b"secret words")
    (tmp_path / "enc.pub").unlink()  # the OpenSSH key's header still names its public key
    ident = load_identity(str(tmp_path / "enc"))
    assert ident.encrypted and ident.key is None and ident.public_blob is not None
    ed25519_key(tmp_path / "plain")
    plain = load_identity(str(tmp_path / "plain"))
    assert not plain.encrypted and plain.key is not None
    assert plain.public_blob == plain.key.asbytes()


def test_passphrase_identity_without_agent_is_an_auth_error_that_says_so(tmp_path, home, kh):
    """IdentitiesOnly + a passphrase-protected key and no agent: nothing can be offered, and
    the one-line AuthError says why (checked on the decision itself: no server needed)."""
    from clusterkit.transport.ssh import _Run

    ed25519_key(tmp_path / "enc", passphrase=b"secret words")
    extra = f"    IdentityFile {tmp_path}/enc\n    IdentitiesOnly yes\n"
    t = SSHTransport(ssh_config=config(tmp_path, block("a", 22, kh, extra)))
    t.prepare([Node(name="a")])  # not a configuration error
    hop = t._route_for(Node(name="a"))
    with pytest.raises(AuthError) as ei:
        t._auth(object(), hop, _Run(Node(name="a"), 5, 5))
    assert str(ei.value) == (f"identity {tmp_path}/enc is passphrase-protected and no agent "
                             "holds it; load it with ssh-add")
    assert ei.value.cause == "identity passphrase-protected, not in agent"
    assert ei.value.nothing_ran


@pytest.mark.parametrize("line, what", [
    ("Match exec \"test -f /etc/x\"", "Match exec"),
    ("CanonicalizeHostname yes", "canonicalization"),
    ("CertificateFile ~/.ssh/id-cert.pub", "CertificateFile"),
    ("PKCS11Provider /usr/lib/p11.so", "PKCS11Provider"),
    ("KnownHostsCommand /bin/echo", "KnownHostsCommand"),
    ("RevokedHostKeys /etc/ssh/krl", "RevokedHostKeys"),
])
def test_options_paramiko_cannot_honour_are_refused(tmp_path, home, kh, line, what):
    msg = prepare_error(tmp_path, block("a", 22, kh, f"    {line}\n"), ["a"])
    assert what in msg and "--transport openssh" in msg and "line 7" in msg


def test_a_refused_option_only_matters_for_its_hosts(tmp_path, home, kh):
    text = (block("a", 22, kh) + block("b", 22, kh) +
            "Match originalhost b exec \"false\"\n    User x\n"
            "Host b\n    CanonicalizeHostname always\n")
    t = SSHTransport(ssh_config=config(tmp_path, text))
    t.prepare([Node(name="a")])
    msg = prepare_error(tmp_path, text, ["a", "b"])
    assert "Match exec" in msg and " b;" in msg


def test_harmless_options_are_accepted(tmp_path, home, kh):
    extra = ("    ControlMaster auto\n    ControlPath ~/.ssh/cm-%C\n    ControlPersist 60\n"
             "    ForwardAgent yes\n    ServerAliveInterval 15\n    LogLevel ERROR\n"
             "    GSSAPIAuthentication yes\n    StrictHostKeyChecking accept-new\n"
             "    KexAlgorithms curve25519-sha256\n    CanonicalizeHostname no\n"
             "    SendEnv LANG LC_*\n    SetEnv A=1\n    ConnectTimeout 3\n")
    t = SSHTransport(ssh_config=config(tmp_path, block("a", 22, kh, extra)))
    t.prepare([Node(name="a")])


def test_unknown_keyword(tmp_path, home, kh):
    msg = prepare_error(tmp_path, block("a", 22, kh, "    NoSuchOption yes\n"), ["a"])
    assert "bad configuration option" in msg and "NoSuchOption" in msg
    t = SSHTransport(ssh_config=config(tmp_path, "IgnoreUnknown NoSuch*\n" +
                                       block("a", 22, kh, "    NoSuchOption yes\n")))
    t.prepare([Node(name="a")])


def test_algorithms_paramiko_lacks(tmp_path, home, kh):
    msg = prepare_error(tmp_path, block("a", 22, kh, "    KexAlgorithms sntrup761x25519-sha512\n"),
                        ["a"])
    assert "kexalgorithms" in msg and "--transport openssh" in msg


def test_jump_hosts_are_prepared_too(tmp_path, home, kh):
    text = (block("a", 22, kh, "    ProxyJump j1\n") +
            block("j1", 22, kh, f"    IdentityFile {tmp_path}/no_jump_key\n"))
    msg = prepare_error(tmp_path, text, ["a"])
    assert "no_jump_key" in msg and "j1" in msg
    loop = block("a", 22, kh, "    ProxyJump b\n") + block("b", 22, kh, "    ProxyJump a\n")
    msg = prepare_error(tmp_path, loop, ["a"], )
    assert "ProxyJump" in msg and "loop" in msg


def test_missing_ssh_config_file(tmp_path, home):
    t = SSHTransport(ssh_config=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="nope: no such file"):
        t.prepare([Node(name="a")])


def test_run_after_prepare_never_raises_config_error(tmp_path, home, kh):
    """What prepare() accepted, run() reports as node outcomes (here: connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = SSHTransport(ssh_config=config(tmp_path, block("a", port, kh, "    ProxyJump j\n") +
                                       block("j", port, kh)))
    t.prepare([Node(name="a")])
    out = fan_out(t, [Node(name="a")], ["true"], timeout=5)
    err = out["a"]
    assert isinstance(err, ConnectError) and err.cause == "jump host: connection refused"
    assert str(err).startswith("jump host j: cannot connect")


# ----------------------------------------------------------------------------- ssh_config
def resolve(text: str, host: str, **kw):
    return host_config(SSHConfig.from_text(text).lookup(host, **kw))


def test_include_is_relative_to_dot_ssh_and_globbed_in_order(home):
    d = home / ".ssh" / "conf.d"
    d.mkdir()
    (d / "20-b.conf").write_text("Host gpu-*\n    User from-b\n    Port 2202\n")
    (d / "10-a.conf").write_text("Host gpu-001\n    User from-a\n")
    (d / "30-c.txt").write_text("Host *\n    User not-included\n")
    cfg = SSHConfig.from_text("Include conf.d/*.conf\nHost *\n    User fallback\n")
    one = host_config(cfg.lookup("gpu-001"))
    assert (one.user, one.port) == ("from-a", 2202)  # first obtained value wins
    assert host_config(cfg.lookup("gpu-002")).user == "from-b"
    assert host_config(cfg.lookup("cpu-001")).user == "fallback"


def test_include_paths_with_tilde_env_and_missing_files(home, tmp_path, monkeypatch):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "x.conf").write_text("Host x\n    HostName 10.1.1.1\n")
    monkeypatch.setenv("SITES", str(tmp_path / "sites"))
    (home / ".ssh" / "h.conf").write_text("Host h\n    HostName 10.2.2.2\n")
    cfg = SSHConfig.from_text("Include ${SITES}/*.conf ~/.ssh/h.conf /nonexistent/*.conf\n")
    assert host_config(cfg.lookup("x")).hostname == "10.1.1.1"
    assert host_config(cfg.lookup("h")).hostname == "10.2.2.2"


def test_include_inside_a_host_block(home):
    (home / ".ssh" / "inc.conf").write_text("Port 2201\nHost b\n    Port 2202\n")
    text = "Host a\n    Include inc.conf\n    User after-include\nHost *\n    User dflt\n"
    cfg = SSHConfig.from_text(text)
    a = host_config(cfg.lookup("a"))
    assert (a.port, a.user) == (2201, "after-include")  # the Host a block goes on after it
    b = host_config(cfg.lookup("b"))
    assert (b.port, b.user) == (22, "dflt")  # inside an inactive block nothing applies


def test_include_loop_is_bounded(home):
    (home / ".ssh" / "self.conf").write_text("Include self.conf\n")
    with pytest.raises(ConfigError, match="nested deeper than 16"):
        SSHConfig.from_text("Include self.conf\n")


def test_host_patterns_and_negation():
    text = "Host * !bastion*\n    ProxyJump bastion\nHost *\n    User u\n"
    assert resolve(text, "gpu-001").proxy_jump[0].host == "bastion"
    assert resolve(text, "bastion-2").proxy_jump == ()


def test_match_criteria():
    text = ("Match host 10.0.* user ops\n    Port 2200\n"  # HostName not known yet here
            "Host gpu-*\n    HostName 10.0.0.%h\n    User ops\n"
            "Match host 10.0.* user ops\n    Port 2222\n"
            "Match originalhost gpu-* !localuser nobody-at-all\n    IdentitiesOnly yes\n"
            "Match all\n    Compression yes\n")
    c = resolve(text, "gpu-7", user="ops")
    assert c.identities_only and c.compression and c.port == 2222
    assert c.hostname == "10.0.0.gpu-7"
    c2 = resolve(text, "gpu-7", user="other")
    assert c2.port == 22 and c2.user == "other"  # like ssh -l: the command line wins


def test_match_final_is_a_second_pass_on_the_hostname():
    text = "Host short\n    HostName long.example\nMatch final host long.example\n    Port 2200\n"
    assert resolve(text, "short").port == 2200


def test_keyword_forms_quotes_and_comments(home):
    text = ('HOST a "b"\n  hostname=10.3.3.3\n  User "the user" # comment\n'
            '  IdentityFile "~/.ssh/my key"\n  ProxyCommand nc -X 5 "%h" %p # kept\n')
    c = resolve(text, "b")
    assert c.hostname == "10.3.3.3" and c.user == "the user"
    assert c.identity_files == (str(home / ".ssh" / "my key"),)
    assert c.proxy_command == 'nc -X 5 "10.3.3.3" 22 # kept'


def test_tokens(home):
    text = ("Host n1\n    HostName 10.4.4.4\n    Port 2022\n    User r\n"
            "    IdentityFile %d/keys/%r@%h:%p\n    UserKnownHostsFile ~/kh/%k /tmp/kh2\n"
            "    HostKeyAlias n1-key\n")
    c = resolve(text, "n1")
    assert c.identity_files == (f"{home}/keys/r@10.4.4.4:2022",)
    assert c.user_known_hosts == (f"{home}/kh/n1-key", "/tmp/kh2")
    assert c.host_key_alias == "n1-key"
    with pytest.raises(ConfigError, match="unknown token %z"):
        resolve("Host x\n    IdentityFile ~/%z\n", "x")


def test_defaults(home):
    c = resolve("", "plain")
    assert (c.hostname, c.port, c.identity_files) == ("plain", 22, ())
    assert c.user_known_hosts == (f"{home}/.ssh/known_hosts", f"{home}/.ssh/known_hosts2")
    assert c.global_known_hosts == ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def test_proxyjump_and_proxycommand_first_wins():
    text = "Host a\n    ProxyCommand nc %h %p\nHost *\n    ProxyJump j\n"
    c = resolve(text, "a")
    assert c.proxy_command == "nc a 22" and c.proxy_jump == ()
    assert resolve(text, "b").proxy_jump[0].host == "j"


@pytest.mark.parametrize("value, hops", [
    ("j", [(None, "j", None)]),
    ("u@j:2200,k", [("u", "j", 2200), (None, "k", None)]),
    ("ssh://u@[::1]:2201", [("u", "::1", 2201)]),
    ("none", []),
])
def test_parse_jump(value, hops):
    assert [(h.user, h.host, h.port) for h in parse_jump(value)] == hops


@pytest.mark.parametrize("text, args", [
    ("a b  c", ["a", "b", "c"]),
    ('"a b" c', ["a b", "c"]),
    ("'x y'z", ["x yz"]),
    ('a\\ b', ["a b"]),
    ("a # comment", ["a"]),
    ("a#b", ["a#b"]),
])
def test_split_args(text, args):
    assert split_args(text) == args


def test_algorithm_lists():
    d = ["a1", "a2", "b1"]
    assert algorithm_list("b1,a1", d) == ["b1", "a1"]
    assert algorithm_list("+x", d) == ["a1", "a2", "b1", "x"]
    assert algorithm_list("-a*", d) == ["b1"]
    assert algorithm_list("^b1", d) == ["b1", "a1", "a2"]
    assert algorithm_list("a*", d) == ["a1", "a2"]


def test_a_proxycommand_that_fails_says_so(tmp_path, home, kh):
    text = block("p", 22, kh, "    ProxyCommand echo no-such-proxy >&2; exit 3\n")
    t = SSHTransport(ssh_config=config(tmp_path, text))
    t.prepare([Node(name="p")])
    with pytest.raises(ConnectError) as ei:
        t.run(Node(name="p"), ["true"], timeout=10)
    assert ei.value.cause == "ProxyCommand failed" and "no-such-proxy" in str(ei.value)
