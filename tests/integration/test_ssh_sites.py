"""SSH set-ups of real sites, through `clusterkit validate` as a user runs it, on both transports.

Each set-up is a real sshd (tests/infra/sshfleet.py) on its own 127.0.10.x address with the
site's feature switched on; the CLI runs as a subprocess with `--transport openssh` and
`--transport paramiko`, and each node's outcome is checked (status, and for failures the
error kind and cause):

  (a) ed25519 + ecdsa host keys, only the ecdsa key in known_hosts
  (b) host certificates; known_hosts holds only `@cert-authority`
  (c) hashed known_hosts                      (d) a port other than 22, `[host]:port` entries
  (e) 32 nodes behind a stock bastion (MaxStartups 10:30:100) through ProxyJump
  (f) a passphrase-protected key and no agent  (g) a port that never sends an SSH banner
  (h) a node whose sshd dies while node-check runs there
  (i) Host blocks in `Include`d files          (j) HostKeyAlias
  (k) IdentitiesOnly with a passphrase-protected IdentityFile whose key an agent holds

OpenSSH does all of these itself. paramiko matches (a), (c), (d), (e), (i), (j), (k) and refuses
(b) in one line that points to `--transport openssh`. Both report (f) as an auth failure that
says the key is passphrase-protected, (g) as unreachable within --connect-timeout and (h) as a
lost connection at once, well before --timeout.

The runs that only wait for a verdict go through a small pool (three at a time) as soon as the
module's fleets are up, so the module stays within about a minute on two cores; (g) and (h)
measure time and run on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

TRANSPORTS = ("openssh", "paramiko")
PASSPHRASE = "correct horse battery staple"
REPO = Path(__file__).resolve().parents[2]
SIM = {"CLUSTERKIT_SIM": "builtin"}


def clusterkit(*args: str, env: dict[str, str] | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}  # no agent unless given
    return subprocess.run([sys.executable, "-m", "clusterkit", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**base, **(env or {})}, cwd=REPO)


def validate(transport: str, cfg: Path | str, *args: str, env: dict[str, str] | None = None,
             checks: str = "gpu.count") -> tuple[subprocess.CompletedProcess[str], dict, dict]:
    """Run validate; (process, report, {node: node report})."""
    p = clusterkit("validate", "--transport", transport, "--ssh-config", str(cfg), "--json",
                   "--no-progress", "--checks", checks, "--timeout", "30", "--connect-timeout", "5",
                   *args, env=env)
    assert "Traceback" not in p.stderr, p.stderr
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        pytest.fail(f"no JSON report (exit {p.returncode}): {p.stderr.strip()[-800:]}")
    return p, doc, {n["node"]: n for n in doc["nodes"]}


def assert_pass(p: subprocess.CompletedProcess[str], by: dict, names: list[str]) -> None:
    bad = {n: (r["status"], r.get("error")) for n, r in by.items() if r["status"] != "pass"}
    assert not bad, bad
    assert sorted(by) == sorted(names)
    for name in names:
        counts = [c for c in by[name]["checks"] if c["check"] == "gpu.count"]
        assert counts and counts[0]["value"] == 8, by[name]
    assert p.returncode == 0, p.stderr


def one_line(text: str) -> bool:
    return "\n" not in text and len(text) < 1000


# ----------------------------------------------------------------------------- fleets
@pytest.fixture(scope="module")
def two_key_types(ssh_fleet_factory):
    return ssh_fleet_factory(["twokeys-01"], env=SIM, host_key_types=("ed25519", "ecdsa"),
                             known_hosts_key_types=("ecdsa",))


@pytest.fixture(scope="module")
def certificates(ssh_fleet_factory):
    return ssh_fleet_factory(["cert-01", "cert-02"], env=SIM, host_certificates=True)


@pytest.fixture(scope="module")
def hashed(ssh_fleet_factory):
    return ssh_fleet_factory(["hashed-01"], env=SIM, hash_known_hosts=True)


@pytest.fixture(scope="module")
def other_port(ssh_fleet_factory):
    return ssh_fleet_factory(["port-01"], env=SIM, ports={"port-01": 2222})


@pytest.fixture(scope="module")
def behind_bastion(ssh_fleet_factory):
    names = ["bastion"] + [f"bast-{i:02d}" for i in range(1, 33)]
    return ssh_fleet_factory(names, env=SIM, bastion="bastion")


@pytest.fixture(scope="module")
def encrypted_key(ssh_fleet_factory):
    return ssh_fleet_factory(["enc-01"], env=SIM, client_key_passphrase=PASSPHRASE)


@pytest.fixture(scope="module")
def silent(ssh_fleet_factory):
    return ssh_fleet_factory(["silent-01"], env=SIM, silent=["silent-01"])


@pytest.fixture(scope="module")
def killed(ssh_fleet_factory, tmp_path_factory):
    fleet_yaml = ('name: killed\nprofile: h100-sxm\nnodes: "killed-01"\n'
                  "faults:\n  - {node: killed-01, kind: hang, value: 30}\n")
    holder = {}

    def env(name: str) -> dict[str, str]:
        return {"CLUSTERKIT_SIM": holder["path"]}

    # the fleet file must be readable by the login user: publish it before sshd starts
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="clusterkit-sites-"))
    d.chmod(0o755)
    path = d / "fleet.yaml"
    path.write_text(fleet_yaml)
    path.chmod(0o644)
    holder["path"] = str(path)
    fleet = ssh_fleet_factory(["killed-01"], env=env)
    fleet.on_stop.append(lambda _f: (path.unlink(missing_ok=True), d.rmdir()))
    return fleet


@pytest.fixture(scope="module")
def included(ssh_fleet_factory):
    return ssh_fleet_factory(["incl-01", "incl-02"], env=SIM, include_config=True)


@pytest.fixture(scope="module")
def aliased(ssh_fleet_factory):
    return ssh_fleet_factory(["alias-01"], env=SIM, host_key_aliases={"alias-01": "keyalias-01"})


@pytest.fixture(scope="module")
def agent_fleet(ssh_fleet_factory):
    fleet = ssh_fleet_factory(["agent-01"], env=SIM, client_key_passphrase=PASSPHRASE)
    fleet.start_agent(load=True)
    return fleet


def _bastion_runs(fleet) -> dict[str, tuple]:
    """(e) for both transports one after the other: each run's bastion logins and forwards."""
    out = {}
    for transport in TRANSPORTS:
        logins, forwards = fleet.bastion_logins(), len(fleet.bastion_forwards())
        p, doc, by = validate(transport, fleet.ssh_config, "--nodes", "bast-[01-32]", "--fanout", "64")
        out[transport] = (p, doc, by, fleet.bastion_logins() - logins, fleet.bastion_forwards()[forwards:])
    return out


def _failed(exc: BaseException) -> Future:
    f: Future = Future()
    f.set_exception(exc)
    return f


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Every verdict-only run, started at once on a pool: {(variant, transport): Future}.

    A fleet that cannot start fails (or skips) only the tests of its own variant."""
    d = tmp_path_factory.mktemp("sites")

    def fleet(name: str):
        return request.getfixturevalue(name)

    def port_inventory() -> tuple:
        # (d) also through an inventory's port: a Host block that matches the address, no Port
        other_port = fleet("other_port")
        node = other_port.nodes["port-01"]
        cfg = other_port.ssh_config.read_text().replace("Host port-01", f"Host port-01 {node.ip}")
        (d / "port.cfg").write_text("\n".join(ln for ln in cfg.splitlines()
                                              if not ln.strip().startswith("Port ")) + "\n")
        (d / "inventory.yaml").write_text(json.dumps(
            {"nodes": [{"name": "port-inv", "host": node.ip, "port": node.port}]}))
        return d / "port.cfg", ["--inventory", str(d / "inventory.yaml")], None

    spec = {  # variant -> () -> (ssh_config, validate arguments, extra environment)
        "a": lambda: (fleet("two_key_types").ssh_config, ["--nodes", "twokeys-01"], None),
        "b": lambda: (fleet("certificates").ssh_config, ["--nodes", "cert-[01-02]"], None),
        "c": lambda: (fleet("hashed").ssh_config, ["--nodes", "hashed-01"], None),
        "d": lambda: (fleet("other_port").ssh_config, ["--nodes", "port-01"], None),
        "d-inventory": port_inventory,
        "f": lambda: (fleet("encrypted_key").ssh_config, ["--nodes", "enc-01"], None),
        "i": lambda: (fleet("included").ssh_config, ["--nodes", "incl-[01-02]"], None),
        "j": lambda: (fleet("aliased").ssh_config, ["--nodes", "alias-01"], None),
        "k": lambda: (fleet("agent_fleet").ssh_config, ["--nodes", "agent-01"],
                      {"SSH_AUTH_SOCK": str(fleet("agent_fleet").agent_socket)}),
    }
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="sites")
    futures: dict[tuple[str, str], Future] = {}
    try:
        futures[("e", "both")] = pool.submit(_bastion_runs, fleet("behind_bastion"))
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - the fleet's failure (or skip) is the tests'
        futures[("e", "both")] = _failed(e)
    for variant, make in spec.items():
        try:
            cfg, args, env = make()
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001
            for transport in TRANSPORTS:
                futures[(variant, transport)] = _failed(e)
            continue
        for transport in TRANSPORTS:
            futures[(variant, transport)] = pool.submit(validate, transport, cfg, *args, env=env)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- (a) – (e)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_two_host_key_types_only_ecdsa_known(transport, two_key_types, runs):
    fleet = two_key_types
    assert "ecdsa-sha2-nistp256" in fleet.known_hosts.read_text()
    assert "ssh-ed25519" not in fleet.known_hosts.read_text()
    assert {"ed25519", "ecdsa"} == set(fleet.nodes["twokeys-01"].host_keys)
    p, _, by = runs[("a", transport)].result()
    assert_pass(p, by, ["twokeys-01"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_b_host_certificates(transport, certificates, runs):
    fleet = certificates
    lines = fleet.known_hosts.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("@cert-authority ")  # no plain host key at all
    assert all(f"HostCertificate {n.certificates['ed25519']}" in n.config.read_text()
               for n in fleet.nodes.values())
    p, _, by = runs[("b", transport)].result()
    if transport == "openssh":
        assert_pass(p, by, ["cert-01", "cert-02"])
        return
    # paramiko cannot check host certificates: refused before anything runs, in one line
    # that points to the transport that can
    assert p.returncode == 3, p.stderr
    for name in ("cert-01", "cert-02"):
        node = by[name]
        assert node["status"] == "unreachable" and node["checks"] == [], node
        assert node["error"].startswith("hostkey:") and "--transport openssh" in node["error"], node
        assert node.get("error_kind", "hostkey") == "hostkey"
        assert one_line(node["error"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_c_hashed_known_hosts(transport, hashed, runs):
    fleet = hashed
    text = fleet.known_hosts.read_text()
    assert text.startswith("|1|") and "hashed-01" not in text and fleet.nodes["hashed-01"].ip not in text
    p, _, by = runs[("c", transport)].result()
    assert_pass(p, by, ["hashed-01"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_d_port_other_than_22(transport, other_port, runs):
    fleet = other_port
    node = fleet.nodes["port-01"]
    assert node.port != 22
    assert f"[{node.ip}]:{node.port}" in fleet.known_hosts.read_text()
    # through the ssh_config's Port ...
    p, _, by = runs[("d", transport)].result()
    assert_pass(p, by, ["port-01"])
    # ... and through the inventory's port, with a Host block that names no port
    p, _, by = runs[("d-inventory", transport)].result()
    assert_pass(p, by, ["port-inv"])
    assert by["port-inv"]["facts"].get("reported_name") == "port-01"


def test_e_bastion_is_stock(behind_bastion):
    fleet = behind_bastion
    cfg = fleet.nodes["bastion"].config
    assert "MaxStartups" not in "\n".join(ln for ln in cfg.read_text().splitlines()
                                          if not ln.startswith("#"))
    cp = subprocess.run([fleet.sshd, "-T", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert cp.returncode == 0, cp.stderr
    assert "maxstartups 10:30:100" in cp.stdout.splitlines()
    assert all(fleet.nodes[n].proxy_jump == "bastion" for n in fleet.names if n != "bastion")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_e_32_nodes_behind_a_stock_bastion(transport, behind_bastion, runs):
    fleet = behind_bastion
    names = [n for n in fleet.names if n != "bastion"]
    p, _, by, logins, forwards = runs[("e", "both")].result()[transport]
    assert_pass(p, by, names)
    # every node was reached through the bastion
    targets = {f"{fleet.nodes[n].ip}:{fleet.nodes[n].port}" for n in names}
    assert targets <= set(forwards)
    if transport == "openssh":
        # ... over one shared connection: one handshake at the bastion, not 32
        assert logins == 1


# ----------------------------------------------------------------------------- (f)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_f_passphrase_key_without_agent_says_so(transport, encrypted_key, runs):
    fleet = encrypted_key
    # the key really needs its passphrase
    assert subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", str(fleet.identity)],
                          capture_output=True, stdin=subprocess.DEVNULL).returncode != 0
    p, _, by = runs[("f", transport)].result()
    assert p.returncode == 3, p.stderr
    node = by["enc-01"]
    assert node["status"] == "unreachable" and node["checks"] == [], node
    assert node["error"].startswith("auth:"), node
    assert "passphrase-protected" in node["error"] and "ssh-add" in node["error"], node
    assert str(fleet.identity) in node["error"]
    assert one_line(node["error"])
    assert node.get("error_kind", "auth") == "auth"


# ----------------------------------------------------------------------------- (i) – (k)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_i_host_blocks_in_included_files(transport, included, runs):
    fleet = included
    main = fleet.ssh_config.read_text()
    assert "Include " in main and "Host " not in main
    assert sorted(p.name for p in fleet.ssh_config_dir.iterdir()) == ["incl-01.conf", "incl-02.conf"]
    p, _, by = runs[("i", transport)].result()
    assert_pass(p, by, ["incl-01", "incl-02"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_j_host_key_alias(transport, aliased, runs):
    fleet = aliased
    text = fleet.known_hosts.read_text()
    assert text.startswith("keyalias-01 ") and fleet.nodes["alias-01"].ip not in text
    p, _, by = runs[("j", transport)].result()
    assert_pass(p, by, ["alias-01"])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_k_identities_only_with_an_agent_holding_the_encrypted_key(transport, agent_fleet, runs):
    fleet = agent_fleet
    assert "IdentitiesOnly yes" in fleet.ssh_config.read_text()
    assert fleet.agent_socket is not None and fleet.agent_pid is not None
    p, _, by = runs[("k", transport)].result()
    assert_pass(p, by, ["agent-01"])


# ----------------------------------------------------------------------------- (g), (h): timed, on their own
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_g_port_that_never_sends_a_banner(transport, silent):
    fleet = silent
    t0 = time.monotonic()
    p = clusterkit("validate", "--transport", transport, "--ssh-config", str(fleet.ssh_config),
                   "--nodes", "silent-01", "--json", "--no-progress", "--checks", "gpu.count",
                   "--connect-timeout", "2", "--timeout", "30")
    took = time.monotonic() - t0
    assert "Traceback" not in p.stderr, p.stderr
    node = json.loads(p.stdout)["nodes"][0]
    assert p.returncode == 3 and node["status"] == "unreachable", (node, p.stderr)
    assert node["error"].startswith("unreachable:") and "banner" in node["error"].lower(), node
    assert node.get("error_kind", "unreachable") == "unreachable"
    assert 1.5 <= took < 12, took  # the 2 s connect timeout (plus the CLI's start), not --timeout 30


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_h_sshd_killed_while_node_check_runs(transport, killed):
    fleet = killed
    fleet.start_node("killed-01")  # the other transport's run stopped it
    base = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "clusterkit", "validate", "--transport", transport,
                             "--ssh-config", str(fleet.ssh_config), "--nodes", "killed-01", "--json",
                             "--no-progress", "--timeout", "60", "--connect-timeout", "5"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=base, cwd=REPO)
    try:
        # node-check runs (hung in NVML init, the 30 s fault) before the node goes away
        while not fleet.node_processes("killed-01", "node-check"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 30, "node-check never started on killed-01"
            time.sleep(0.05)
        killed_at = time.monotonic()
        fleet.stop_node("killed-01")
        out, err = proc.communicate(timeout=45)
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err
    node = json.loads(out)["nodes"][0]
    assert node["error"].startswith("lost:"), node
    assert node.get("error_kind", "lost") == "lost"
    assert node["status"] == "error", node  # it did start: not "unreachable"
    assert proc.returncode == 3, err
    assert took < 15, took  # at once, not after --timeout 60 (nor the fault's 30 s hang)
