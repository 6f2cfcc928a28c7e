"""playbooks/ (Ansible): every playbook passes ansible-playbook --syntax-check and ansible-lint
(no violations); provision.yml installs the agent for real on sshd nodes (--skip-tags hardware)
and a second run changes nothing; validate.yml fails its play on the simulated fleet's exit 1.

ansible-core and ansible-lint come from PyPI (the test extra). The wheelhouse the nodes install
from is built here: clusterkit's wheel from this checkout, its dependencies' wheels downloaded
once and cached in the system temp dir by a hash of pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from clusterkit.inventory import ansible_inventory, render_ansible_yaml
from clusterkit.models import Node
from tests.infra.nodeenv import REPO_ROOT, NodeEnvError, _write_tree, collect_sources
from tests.infra.sshfleet import DEFAULT_USER

PLAYBOOKS = REPO_ROOT / "playbooks"
ALL_PLAYBOOKS = ["provision.yml", "validate.yml", "drain.yml", "serve.yml"]
_BIN = Path(sys.executable).parent
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _tool(name: str) -> str:
    path = _BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def ansible_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ansible-playbook / ansible-lint: their own HOME and cache, no colour."""
    home = tmp_path_factory.mktemp("ansible-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({
        "HOME": str(home), "ANSIBLE_HOME": str(home / ".ansible"), "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "XDG_CACHE_HOME": str(home / "cache"),
        "PATH": f"{_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        "CLUSTERKIT_STATE_DIR": str(home / "state"), "CLUSTERKIT_SPOOL_DIR": str(home / "spool"),
    })
    return env


def _run(argv: list[str], env: dict[str, str], timeout: float = 300, cwd: Path | None = None
         ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd or REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _recap(out: str) -> dict[str, dict[str, int]]:
    return {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
            for m in _RECAP.findall(out.split("PLAY RECAP", 1)[-1])}


# ----------------------------------------------------------------------------- static checks
def test_syntax_check_and_lint(ansible_env: dict[str, str]) -> None:
    """--syntax-check for every playbook, and ansible-lint over playbooks/ (offline, default
    rules, no skip list): no violation."""
    playbook = _tool("ansible-playbook")
    lint = _tool("ansible-lint")
    # ansible-lint takes longest: it runs while the syntax check does
    lint_proc = subprocess.Popen([lint, "--offline", "--nocolor", "-q", "playbooks/"], cwd=REPO_ROOT,
                                 env=ansible_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        cp = _run([playbook, "--syntax-check", "-i", "playbooks/inventory/example.yml",
                   *(f"playbooks/{p}" for p in ALL_PLAYBOOKS)], ansible_env, timeout=120)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        for p in ALL_PLAYBOOKS:
            assert f"playbook: playbooks/{p}" in cp.stdout
        out, _ = lint_proc.communicate(timeout=240)
    finally:
        if lint_proc.poll() is None:
            lint_proc.kill()
            lint_proc.wait()
    assert lint_proc.returncode == 0, out


# ----------------------------------------------------------------------------- validate.yml (--sim)
def test_validate_playbook_fails_on_failed_nodes(ansible_env: dict[str, str], tmp_path: Path) -> None:
    """The built-in simulated fleet has two faulty nodes: clusterkit exits 1, the play fails, and
    the JUnit report is there."""
    playbook = _tool("ansible-playbook")
    junit = tmp_path / "reports" / "validate.xml"
    cp = _run([playbook, "playbooks/validate.yml", "-e", "clusterkit_validate_sim=builtin",
               "-e", f"clusterkit_controller_command={_BIN / 'clusterkit'}",
               "-e", f"clusterkit_validate_junit={junit}", "-e", f"clusterkit_validate_output={tmp_path / 'r.json'}",
               "-e", f"clusterkit_validate_state_dir={tmp_path / 'state'}"], ansible_env, timeout=120)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 2, out  # ansible-playbook: a host failed
    assert "clusterkit validate exit 1: at least one node failed" in out
    assert _recap(out)["localhost"]["failed"] == 1
    assert junit.is_file() and "<testsuite" in junit.read_text()
    assert (tmp_path / "r.json").is_file()


def test_drain_and_serve_playbooks_command_lines(ansible_env: dict[str, str], tmp_path: Path) -> None:
    """drain.yml is a dry run unless told otherwise, and serve.yml passes its variables on:
    both run with `echo` standing in for clusterkit (no Slurm needed), in one ansible-playbook."""
    playbook = _tool("ansible-playbook")
    reports = tmp_path / "reports"
    reports.mkdir(mode=0o755)
    reports.chmod(0o755)  # as the role wants it: its task then changes nothing
    cp = _run([playbook, "playbooks/drain.yml", "playbooks/serve.yml", "-e", "clusterkit_controller_command=echo",
               "-e", "clusterkit_validate_partition=gpu", "-e", "clusterkit_validate_drain_limit=2",
               "-e", f"clusterkit_validate_report_dir={reports}",
               "-e", "clusterkit_serve_model=org/Model-7B", "-e", "clusterkit_serve_tp=8",
               "-e", "clusterkit_serve_partition=gpu", "-e", "clusterkit_serve_dry_run=true",
               "-e", '{"clusterkit_serve_engine_args": ["--max-model-len", "8192"]}'], ansible_env, timeout=120)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, out
    assert (f"validate --no-progress --partition gpu --junit {reports}/clusterkit-validate.xml --output "
            f"{reports}/clusterkit-validate.json --drain --dry-run --drain-limit 2") in out
    assert ("deploy serve --engine vllm --model org/Model-7B --tp 8 --partition gpu --dry-run "
            "-- --max-model-len 8192") in out
    recap = _recap(out)
    assert recap["localhost"]["failed"] == 0 and recap["localhost"]["changed"] == 0  # a dry run changes nothing


# ----------------------------------------------------------------------------- provision.yml, for real
def _deps_wheels(python: str) -> Path:
    """Wheels of clusterkit's dependencies for `python`, cached across runs by pyproject.toml."""
    files = collect_sources()
    key = hashlib.sha256(files["pyproject.toml"] + os.path.realpath(python).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"clusterkit-wheelhouse-deps-{key}"
    if (cache / ".complete").exists():
        return cache
    with tempfile.TemporaryDirectory(prefix="clusterkit-wheelhouse-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "wheels"
        _write_tree(files, src)
        cp = subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "-w", str(out),
                             str(src)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
                            check=False)
        if cp.returncode != 0:
            pytest.skip(f"cannot download clusterkit's dependencies for the wheelhouse: {cp.stderr[-500:]}")
        for whl in out.glob("clusterkit-*.whl"):
            whl.unlink()
        (out / ".complete").write_text("")
        shutil.rmtree(cache, ignore_errors=True)
        try:
            shutil.copytree(out, cache)
        except FileExistsError:  # another worker was quicker
            pass
    return cache


@pytest.fixture(scope="module")
def wheelhouse(node_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheelhouse for the nodes: this checkout's clusterkit wheel + its dependencies' wheels."""
    python = str(node_venv / "bin" / "python")  # the nodes' interpreter (/usr/bin/python3), with pip
    deps = _deps_wheels(python)
    house = tmp_path_factory.mktemp("wheelhouse")
    for whl in deps.glob("*.whl"):
        shutil.copy2(whl, house / whl.name)
    with tempfile.TemporaryDirectory(prefix="clusterkit-src-") as src:
        _write_tree(collect_sources(), Path(src))
        cp = subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                             "--no-index", "-w", str(house), src], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=300, check=False)
    if cp.returncode != 0:
        raise NodeEnvError(f"building clusterkit's wheel failed: {cp.stderr[-2000:]}")
    assert len(list(house.glob("clusterkit-*.whl"))) == 1
    return house


def test_provision_for_real_then_idempotent(ssh_fleet_factory, wheelhouse: Path, ansible_env: dict[str, str],
                                            tmp_path: Path) -> None:
    """provision.yml --skip-tags hardware against real sshd nodes: the agent runs from
    <prefix>/current, the HealthCheckProgram wrapper runs node-check, Telegraf's file and the
    slurm.conf block are there; a second run changes nothing."""
    playbook = _tool("ansible-playbook")
    fleet = ssh_fleet_factory(2, env={"CLUSTERKIT_SIM": "builtin"})
    user = pwd.getpwnam(DEFAULT_USER)
    base = Path(tempfile.mkdtemp(prefix="ck-ansible-nodes-"))
    try:
        os.chmod(base, 0o755)
        for name in fleet.names:  # what the nodes' own admin would have: a slurm.conf
            (base / name / "bin").mkdir(parents=True)
            (base / name / "slurm.conf").write_text("ClusterName=test\n")
            for p in (base / name, base / name / "bin", base / name / "slurm.conf"):
                os.chown(p, user.pw_uid, user.pw_gid)
        # the inventory, as `clusterkit inventory export --ansible` writes it
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(render_ansible_yaml(ansible_inventory(
            [Node(name=n, user=DEFAULT_USER, profile="h100-sxm") for n in fleet.names])))
        node_dir = f"{base}/{{{{ inventory_hostname }}}}"
        settings = {
            "ansible_ssh_common_args": f"-F {fleet.ssh_config}",
            "ansible_python_interpreter": "/usr/bin/python3",
            "clusterkit_become": False,
            "clusterkit_controller_command": str(_BIN / "clusterkit"),
            "clusterkit_agent_wheelhouse": str(wheelhouse),
            "clusterkit_agent_prefix": f"{node_dir}/opt/clusterkit",
            "clusterkit_agent_bin_dir": f"{node_dir}/bin",
            "clusterkit_agent_pip_extra_args": ["--no-compile"],  # (time: the suite's budget)
            "clusterkit_healthcheck_wrapper": f"{node_dir}/sbin/clusterkit-healthcheck",
            "clusterkit_healthcheck_args": ["--profile", "h100-sxm"],
            "clusterkit_healthcheck_slurm_conf": f"{node_dir}/slurm.conf",
            "clusterkit_telegraf_conf_path": f"{node_dir}/telegraf.d/clusterkit.conf",
            "clusterkit_telegraf_influx_urls": ["http://127.0.0.1:8086"],
            "clusterkit_telegraf_influx_org": "ops",
            "clusterkit_telegraf_influx_bucket": "clusterkit",
            "clusterkit_telegraf_global_tags": {"cluster": "test"},
        }
        extra = tmp_path / "vars.yml"
        extra.write_text(yaml.safe_dump(settings))
        argv = [playbook, "-i", str(inventory), "playbooks/provision.yml", "--skip-tags", "hardware",
                "-e", f"@{extra}"]

        first = _run(argv, ansible_env, timeout=300)
        out = first.stdout + first.stderr
        assert first.returncode == 0, out[-6000:]
        recap = _recap(out)
        assert sorted(recap) == sorted(fleet.names), out[-3000:]
        assert all(r["changed"] > 0 and r["failed"] == 0 for r in recap.values()), recap
        assert "nvidia" not in out.lower()  # the hardware tasks never ran

        # the layout and the version id `clusterkit deploy agent` uses for the same wheelhouse
        from clusterkit.deploy.agent import healthcheck_wrapper_text, wheelhouse_from_files

        version_id = wheelhouse_from_files(sorted(wheelhouse.glob("*.whl")), str(wheelhouse)).id
        for name in fleet.names:
            prefix = base / name / "opt" / "clusterkit"
            current = prefix / "current"
            assert os.readlink(current) == f"versions/{version_id}"
            assert (prefix / "versions" / version_id / ".clusterkit-complete").is_file()
            assert os.readlink(base / name / "bin" / "clusterkit") == f"{current}/bin/clusterkit"
            version = subprocess.run(fleet.ssh_argv(name, f"{current}/bin/clusterkit", "--version"),
                                     capture_output=True, text=True, timeout=60, check=False)
            assert version.returncode == 0 and version_id.split("-")[0] in version.stdout, version.stderr
            wrapper = base / name / "sbin" / "clusterkit-healthcheck"
            assert os.access(wrapper, os.X_OK)
            assert wrapper.read_text() == healthcheck_wrapper_text(str(prefix), ["--profile", "h100-sxm"])
            conf = (base / name / "telegraf.d" / "clusterkit.conf").read_text()
            assert f'commands = [["{current}/bin/clusterkit", "node-check", "--format", "influx"]]' in conf
            assert "[[outputs.influxdb_v2]]" in conf
            slurm_conf = (base / name / "slurm.conf").read_text()
            assert slurm_conf.startswith("ClusterName=test\n")
            assert f"HealthCheckProgram={wrapper}\n" in slurm_conf
        # the wrapper runs the installed node-check (on a simulated node, no Slurm action)
        first_node = fleet.names[0]
        check = subprocess.run(fleet.ssh_argv(first_node, f"{base}/{first_node}/sbin/clusterkit-healthcheck",
                                              "--no-slurm-action", "--json"),
                               capture_output=True, text=True, timeout=60, check=False)
        assert '"schema":"clusterkit.node/v1"' in check.stdout, check.stdout + check.stderr

        second = _run(argv, ansible_env, timeout=300)
        out2 = second.stdout + second.stderr
        assert second.returncode == 0, out2[-6000:]
        recap2 = _recap(out2)
        assert sorted(recap2) == sorted(fleet.names)
        assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap2.values()), out2[-4000:]
    finally:
        shutil.rmtree(base, ignore_errors=True)
