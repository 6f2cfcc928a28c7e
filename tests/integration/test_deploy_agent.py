"""``clusterkit deploy agent`` against real sshd nodes (one 4-node fleet for the module).

All nodes share this machine's filesystem, so every node path carries ``{node}``: node N
installs under ``<base>/gpu-00N/``. gpu-004's directory belongs to root (the login user
``ckuser`` cannot write there). Every node's sshd sets ``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``
and the proxy variables to a local trap listener: anything on the node that tried the network
would connect to it, and the tests assert it never saw a connection.

The wheelhouse (clusterkit's wheel + dependency wheels for this machine's /usr/bin/python3) is
built once into a cache under the system temp dir that outlives the session (keyed by the
sources): later sessions reuse it. Building it needs the package registry (here and in CI).

The tests run in file order and build on each other's state (fresh install → unchanged →
upgrade → a node dying mid-install → host key refused / dry run).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from clusterkit.deploy import agent
from clusterkit.models import Node
from tests.infra.sshfleet import SilentListener

REPO = Path(__file__).resolve().parents[2]
#: the wheelhouse cache; the runbook rehearsal (bring-up) shares it through XDG_CACHE_HOME
XDG_CACHE = Path(tempfile.gettempdir()) / "clusterkit-test-cache"
CACHE = XDG_CACHE / "clusterkit"
NODES = ["gpu-001", "gpu-002", "gpu-003", "gpu-004"]


@pytest.fixture(scope="module")
def trap():
    """A TCP listener that counts connections (anything fetched from the node would land here)."""
    t = SilentListener("127.0.0.1", 0)
    yield t
    t.stop()


@pytest.fixture(scope="module")
def fleet(ssh_fleet_factory, trap):
    url = f"http://127.0.0.1:{trap.port}"
    f = ssh_fleet_factory(NODES, env={"PIP_INDEX_URL": url + "/simple", "PIP_EXTRA_INDEX_URL": url + "/extra",
                                      "http_proxy": url, "https_proxy": url, "HTTPS_PROXY": url})
    yield f
    f.stop()


@pytest.fixture(scope="module")
def base(fleet):
    """<base>/gpu-00N owned by the login user, except gpu-004 (root's: no write access)."""
    d = Path(tempfile.mkdtemp(prefix="ck-agent-nodes-"))
    os.chmod(d, 0o755)
    pw = pwd.getpwnam(fleet.user)
    for n in NODES:
        (d / n).mkdir(mode=0o755)
        if n != "gpu-004":
            os.chown(d / n, pw.pw_uid, pw.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def telegraf_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("telegraf") / "clusterkit.conf"
    p.write_text("[agent]\n  interval = \"5m\"\n")
    return p


def cli(fleet, base, *args: str, nodes: str = "gpu-[001-004]", timeout: float = 300) -> tuple[int, dict, str]:
    argv = [sys.executable, "-m", "clusterkit", "deploy", "agent", "--nodes", nodes,
            "--ssh-config", str(fleet.ssh_config), "--prefix", f"{base}/{{node}}/opt",
            "--bin-dir", f"{base}/{{node}}/bin", "--cache-dir", str(CACHE), "--json", *args]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)
    assert cp.returncode in (0, 1), cp.stderr
    return cp.returncode, json.loads(cp.stdout), cp.stderr


def by_node(doc: dict) -> dict[str, dict]:
    return {n["node"]: n for n in doc["nodes"]}


def node_version(fleet, base, node: str) -> str:
    cp = subprocess.run(fleet.ssh_argv(node, f"{base}/{node}/bin/clusterkit", "--version"), capture_output=True,
                        text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.split()[-1]


def current(base, node: str) -> str:
    return os.readlink(base / node / "opt" / "current")


def bump_wheel(src: Path, dest_dir: Path, version: str) -> Path:
    """A copy of clusterkit's wheel with another version (a different build, as an upgrade)."""
    old = src.name.split("-")[1]
    out = dest_dir / src.name.replace(f"-{old}-", f"-{version}-")
    old_info, new_info = f"clusterkit-{old}.dist-info", f"clusterkit-{version}.dist-info"
    records = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            name = item.filename.replace(old_info + "/", new_info + "/")
            if name == f"{new_info}/RECORD":
                continue
            data = zin.read(item)
            if name == f"{new_info}/METADATA":
                data = data.replace(f"\nVersion: {old}\n".encode(), f"\nVersion: {version}\n".encode())
            elif name == "clusterkit/__init__.py":  # what `clusterkit --version` prints
                data = data.replace(f'__version__ = "{old}"'.encode(), f'__version__ = "{version}"'.encode())
            zout.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{name},sha256={digest},{len(data)}")
        zout.writestr(f"{new_info}/RECORD", "\n".join(records + [f"{new_info}/RECORD,,"]) + "\n")
    return out


@pytest.fixture(scope="session")
def wheelhouse(sshd_available) -> agent.Wheelhouse:
    """The wheelhouse for this machine's /usr/bin/python3, built once (cached across sessions)."""
    args = json.dumps({"prefix": "/nonexistent", "mark": "x", "writable": [], "files": [], "dirs": []})
    cp = subprocess.run(["/usr/bin/python3", "-c", agent.PROBE, args], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    platform = agent.NodeFacts.from_json(json.loads(cp.stdout)).platform
    try:
        return agent.WheelhouseBuilder(CACHE).get(platform)
    except agent.WheelhouseError as e:
        pytest.skip(f"cannot build the wheelhouse here (the package registry is needed): {e}")


@pytest.fixture(scope="module")
def upgrade_wheelhouse(tmp_path_factory, wheelhouse):
    """The same wheelhouse with clusterkit's wheel replaced by a <version>+test2 build."""
    d = tmp_path_factory.mktemp("wheelhouse2")
    for f in wheelhouse.files:
        if f is not wheelhouse.clusterkit_wheel:
            shutil.copy(f.path, d / f.name)
    bump_wheel(wheelhouse.clusterkit_wheel.path, d, wheelhouse.version.split("+")[0] + "+test2")
    return d


# ----------------------------------------------------------------------------- tests
def test_fresh_install_then_unchanged(fleet, base, trap, telegraf_file, wheelhouse):
    extras = ["--telegraf-config", str(telegraf_file), "--telegraf-path", f"{base}/{{node}}/etc/telegraf.conf",
              "--healthcheck-wrapper", f"{base}/{{node}}/sbin/clusterkit-healthcheck",
              "--state-dir", f"{base}/{{node}}/state", "--state-owner", fleet.user]
    rc, doc, err = cli(fleet, base, *extras)
    nodes = by_node(doc)
    assert rc == 1
    for n in NODES[:3]:
        r = nodes[n]
        assert r["status"] == "changed", r
        assert r["old_id"] is None and r["new_id"] == doc["wheelhouses"][0]["id"]
        assert r["uploaded_files"] == doc["wheelhouses"][0]["files"] + 2  # the wheels + telegraf + wrapper
        assert doc["wheelhouses"][0]["files"] == len(wheelhouse.files)
        assert current(base, n) == f"versions/{r['new_id']}"
        assert node_version(fleet, base, n) == r["new_version"]
        wrapper = base / n / "sbin" / "clusterkit-healthcheck"
        assert wrapper.read_text() == agent.healthcheck_wrapper_text(f"{base}/{n}/opt")
        assert os.stat(wrapper).st_mode & 0o777 == 0o755
        assert (base / n / "etc" / "telegraf.conf").read_text() == telegraf_file.read_text()
        assert pwd.getpwuid(os.stat(base / n / "state").st_uid).pw_name == fleet.user
        # nothing fetched on the node: pip ignored the node's index settings and made no request
        log = (base / n / "opt" / "current" / agent.PIP_LOG).read_text()
        assert "Ignoring indexes: http://127.0.0.1" in log
        assert "Looking in indexes" not in log
        assert "Starting new HTTP" not in log
    bad = nodes["gpu-004"]
    assert bad["status"] == "failed" and "no write access" in bad["reason"] and "gpu-004" in bad["reason"]
    assert not (base / "gpu-004" / "opt").exists()
    assert trap.accepted == 0, "something on a node tried the network"

    # the same again: unchanged, nothing uploaded, nothing touched
    stamp = os.lstat(base / "gpu-001" / "opt" / "current").st_mtime_ns
    rc, doc, err = cli(fleet, base, *extras, nodes="gpu-[001-003]")
    assert rc == 0, doc
    for n in NODES[:3]:
        r = by_node(doc)[n]
        assert r["status"] == "unchanged" and r["uploaded_files"] == 0, r
        assert r["old_id"] == r["new_id"]
    assert os.lstat(base / "gpu-001" / "opt" / "current").st_mtime_ns == stamp
    assert trap.accepted == 0


def test_upgrade_switches_current(fleet, base, upgrade_wheelhouse, trap):
    before = current(base, "gpu-001")
    rc, doc, _ = cli(fleet, base, "--wheelhouse", str(upgrade_wheelhouse), nodes="gpu-[001-002]")
    assert rc == 0, doc["nodes"]
    for n in ("gpu-001", "gpu-002"):
        r = by_node(doc)[n]
        assert r["status"] == "changed" and r["new_version"].endswith("+test2"), r
        assert r["uploaded_files"] == 1  # only clusterkit's wheel: the node had the others
        assert current(base, n) == f"versions/{r['new_id']}" != before
        assert node_version(fleet, base, n) == r["new_version"]
        assert (base / n / "opt" / before).is_dir()  # the old version is kept (--keep 2)
    assert trap.accepted == 0


def test_node_dies_mid_install_keeps_old_version(fleet, base, upgrade_wheelhouse):
    node = "gpu-003"
    old = current(base, node)
    opts = agent.Options(prefix=f"{base}/{{node}}/opt", bin_dir=f"{base}/{{node}}/bin", timeout=120)
    conn = agent.FabricConnector(ssh_config=str(fleet.ssh_config), connect_timeout=5)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", agent.deploy(
        [Node(name=node)], opts, connector=conn, wheelhouse_dir=str(upgrade_wheelhouse))))
    t.start()
    new_dir = base / node / "opt" / "versions" / agent.load_wheelhouse_dir(str(upgrade_wheelhouse)).id

    def pip_running() -> bool:
        return (new_dir / "bin" / "python").exists() and bool(fleet.node_processes(node, needle="install --no-index"))

    deadline = time.monotonic() + 60
    while not pip_running() and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.05)
    assert pip_running(), "pip never ran on the node"
    fleet.stop_node(node)
    t.join(60)
    r = out["r"].results[0]
    assert r.status == "failed" and "connection lost" in r.reason, r
    # the old version is still current, and it works once the node is back
    assert current(base, node) == old
    fleet.start_node(node)
    assert node_version(fleet, base, node) == old.split("/")[-1].split("-")[0]
    # the half-made version directory has no completion mark: the next run makes it again
    half = base / node / "opt" / "versions" / r.new_id
    assert half.is_dir() and not (half / agent.COMPLETE_MARK).exists()
    rc, doc, _ = cli(fleet, base, "--wheelhouse", str(upgrade_wheelhouse), nodes=node)
    assert rc == 0 and by_node(doc)[node]["status"] == "changed", doc
    assert node_version(fleet, base, node).endswith("+test2")


def test_unknown_host_key_refused_and_dry_run(fleet, base, tmp_path, upgrade_wheelhouse):
    # an ssh_config whose known_hosts lists no node: refused with one reason, nothing changed
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(fleet.ssh_config.read_text().replace(str(fleet.known_hosts), str(empty)))
    before = current(base, "gpu-001")
    argv = [sys.executable, "-m", "clusterkit", "deploy", "agent", "--nodes", "gpu-001", "--ssh-config", str(cfg),
            "--prefix", f"{base}/{{node}}/opt", "--bin-dir", f"{base}/{{node}}/bin", "--wheelhouse",
            str(upgrade_wheelhouse), "--json"]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
    assert cp.returncode == 1, cp.stderr
    r = json.loads(cp.stdout)["nodes"][0]
    assert r["status"] == "failed" and "unknown host key" in r["reason"], r
    assert empty.read_text() == ""  # never auto-accepted

    # dry run with the first wheelhouse on an upgraded node: it would change, nothing is touched
    rc, doc, _ = cli(fleet, base, "--dry-run", nodes="gpu-[001,004]")
    assert doc["dry_run"] is True
    assert by_node(doc)["gpu-001"]["status"] == "changed"
    assert by_node(doc)["gpu-001"]["uploaded_files"] == 0
    assert by_node(doc)["gpu-004"]["status"] == "failed"
    assert current(base, "gpu-001") == before
