"""clusterkit inventory export --ansible: the pure conversion (clusterkit.inventory) and the
command (clusterkit.inventory_cli)."""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clusterkit import cli
from clusterkit.errors import ConfigError
from clusterkit.inventory import (
    ansible_group_name,
    ansible_host_vars,
    ansible_inventory,
    parse_inventory,
    render_ansible_ini,
    render_ansible_yaml,
)
from clusterkit.models import Node

INVENTORY = """\
defaults: {user: ops, profile: h100-sxm, labels: {rack: r12}}
nodes:
  - name: gpu-[9-11]
    labels: {leaf: l1}
  - {name: gpu-2, host: 10.1.4.2, port: 2222, profile: h200-sxm,
     labels: {leaf: "007", "topology/zone": "a b", "yes": "on", name: x, ansible_host: evil,
              weird: "{{ lookup('pipe', 'id') }}", q: "it's"}}
"""


class _UnsafeLoader(yaml.SafeLoader):
    """Reads Ansible's !unsafe tag as the plain string (what Ansible keeps, untemplated)."""


_UnsafeLoader.add_constructor("!unsafe", lambda loader, node: {"__unsafe__": loader.construct_scalar(node)})


def _nodes() -> list[Node]:
    return parse_inventory(INVENTORY, "test")


# ----------------------------------------------------------------------------- host variables
def test_host_vars_connection_profile_and_labels() -> None:
    by = {n.name: n for n in _nodes()}
    hv = ansible_host_vars(by["gpu-2"])
    assert hv["ansible_host"] == "10.1.4.2" and hv["ansible_port"] == 2222 and hv["ansible_user"] == "ops"
    assert hv["clusterkit_profile"] == "h200-sxm"
    assert hv["leaf"] == "007" and hv["rack"] == "r12" and hv["yes"] == "on"
    # a label can never pose as an Ansible connection variable or a reserved name; all stay in clusterkit_labels
    assert hv["ansible_host"] != "evil" and "name" not in hv and "q" not in hv and "topology/zone" not in hv
    assert hv["clusterkit_labels"]["ansible_host"] == "evil"
    assert hv["clusterkit_labels"]["topology/zone"] == "a b" and hv["clusterkit_labels"]["q"] == "it's"
    plain = ansible_host_vars(Node(name="gpu-1"))
    assert plain == {}  # nothing to say: ssh_config resolves the name


def test_inventory_natural_order_groups_and_refusals() -> None:
    doc = ansible_inventory(_nodes(), group="gpu", group_by=("leaf", "nolabel"))
    gpu = doc["all"]["children"]["gpu"]
    assert list(gpu["hosts"]) == ["gpu-2", "gpu-9", "gpu-10", "gpu-11"]
    assert gpu["children"] == {"leaf_007": {"hosts": {"gpu-2": None}},
                               "leaf_l1": {"hosts": {"gpu-9": None, "gpu-10": None, "gpu-11": None}}}
    assert ansible_group_name("rack-1.a") == "rack_1_a" and ansible_group_name("7x") == "_7x"
    for bad in ("all", "ungrouped", "gpu-nodes", "1gpu", ""):
        with pytest.raises(ConfigError):
            ansible_inventory(_nodes(), group=bad)
    with pytest.raises(ConfigError, match="twice"):
        ansible_inventory([Node(name="a"), Node(name="a")])
    with pytest.raises(ConfigError, match="cannot be an Ansible host name"):
        ansible_inventory([Node(name="a b")])


# ----------------------------------------------------------------------------- renderings
def test_yaml_quotes_what_yaml_would_misread_and_marks_templates_unsafe() -> None:
    text = render_ansible_yaml(ansible_inventory(_nodes()))
    assert text.startswith("---\n")
    assert "leaf: '007'" in text and "'yes': 'on'" in text
    assert "!unsafe '{{ lookup(''pipe'', ''id'') }}'" in text
    doc = yaml.load(text, Loader=_UnsafeLoader)  # noqa: S506 - SafeLoader plus one tag
    hv = doc["all"]["children"]["gpu"]["hosts"]["gpu-2"]
    assert hv["leaf"] == "007" and hv["yes"] == "on" and hv["ansible_port"] == 2222
    assert hv["weird"] == {"__unsafe__": "{{ lookup('pipe', 'id') }}"}
    assert doc["all"]["children"]["gpu"]["hosts"]["gpu-9"]["clusterkit_labels"] == {"leaf": "l1", "rack": "r12"}


def _read_ini_like_ansible(text: str) -> dict[str, dict]:
    """Host lines split as Ansible's INI plugin does (shell words, each value through
    ast.literal_eval, left a string when it is no literal)."""
    hosts: dict[str, dict] = {}
    for line in text.splitlines():
        if not line or line.startswith("["):
            continue
        words = shlex.split(line)
        if len(words) == 1:
            continue
        out = {}
        for word in words[1:]:
            k, v = word.split("=", 1)
            try:
                out[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                out[k] = v
        hosts[words[0]] = out
    return hosts


def test_ini_round_trips_values_and_refuses_templates() -> None:
    nodes = [n for n in _nodes()]
    with pytest.raises(ConfigError, match="use --format yaml"):
        render_ansible_ini(ansible_inventory(nodes))
    for n in nodes:
        n.labels.pop("weird", None)
    doc = ansible_inventory(nodes, group_by=("leaf",))
    text = render_ansible_ini(doc)
    assert text.startswith("[gpu]\ngpu-2 ")
    assert "[gpu:children]\nleaf_007\nleaf_l1\n" in text and "[leaf_l1]\ngpu-9\ngpu-10\ngpu-11\n" in text
    read = _read_ini_like_ansible(text.split("\n\n[gpu:children]")[0])
    assert read == {h: v for h, v in doc["all"]["children"]["gpu"]["hosts"].items()}
    assert read["gpu-2"]["leaf"] == "007" and read["gpu-2"]["ansible_port"] == 2222


@pytest.mark.skipif(shutil.which("ansible-inventory") is None
                    and not (Path(sys.executable).parent / "ansible-inventory").exists(),
                    reason="ansible-core is not installed")
def test_ansible_reads_both_formats_as_written(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "ansible-inventory")
    if not Path(exe).exists():
        exe = shutil.which("ansible-inventory") or exe
    nodes = _nodes()
    y = tmp_path / "inv.yml"
    y.write_text(render_ansible_yaml(ansible_inventory(nodes)))
    for n in nodes:
        n.labels.pop("weird", None)
    i = tmp_path / "inv.ini"
    i.write_text(render_ansible_ini(ansible_inventory(nodes, group="ini_gpu")))
    env = {"HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path / ".ansible"), "PATH": "/usr/bin:/bin",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    for path in (y, i):
        cp = subprocess.run([exe, "-i", str(path), "--list"], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
        assert cp.returncode == 0, cp.stderr
        hv = json.loads(cp.stdout)["_meta"]["hostvars"]
        assert hv["gpu-2"]["leaf"] == "007" and hv["gpu-2"]["ansible_port"] == 2222
        assert hv["gpu-2"]["ansible_host"] == "10.1.4.2" and hv["gpu-10"]["ansible_user"] == "ops"
        assert hv["gpu-2"]["clusterkit_labels"]["topology/zone"] == "a b"
    assert "lookup" in y.read_text()  # the !unsafe value stayed text (ansible-inventory did not run it)


# ----------------------------------------------------------------------------- the command
@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as e:
            cli.main(list(args))
        out, err = capsys.readouterr()
        return int(e.value.code or 0), out, err

    return run


def test_cli_export_from_inventory_hostlist_and_partition(run_cli, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "nodes.yaml"
    f.write_text(INVENTORY)
    rc, out, err = run_cli("inventory", "export", "--ansible", "--inventory", str(f), "--group-by", "leaf")
    assert rc == 0, err
    doc = yaml.load(out, Loader=_UnsafeLoader)  # noqa: S506
    assert list(doc["all"]["children"]["gpu"]["hosts"]) == ["gpu-2", "gpu-9", "gpu-10", "gpu-11"]
    assert "leaf_l1" in doc["all"]["children"]["gpu"]["children"]

    rc, out, _ = run_cli("inventory", "export", "--ansible", "--inventory", str(f), "--nodes", "gpu-[10-12]",
                         "--exclude", "gpu-11", "--group", "compute", "-o", str(tmp_path / "out.yml"))
    assert rc == 0 and out == ""
    doc = yaml.load((tmp_path / "out.yml").read_text(), Loader=_UnsafeLoader)  # noqa: S506
    assert doc["all"]["children"]["compute"]["hosts"] == {"gpu-10": {
        "ansible_user": "ops", "clusterkit_profile": "h100-sxm", "leaf": "l1", "rack": "r12",
        "clusterkit_labels": {"leaf": "l1", "rack": "r12"}}}

    rc, out, _ = run_cli("inventory", "export", "--ansible", "--nodes", "gpu-[1-2]", "--format", "ini")
    assert rc == 0 and out == "[gpu]\ngpu-1\ngpu-2\n"

    from clusterkit.slurm import backend as slurm_backend

    class FakeBackend:
        def nodes(self, partition=None, names=None):
            assert partition == "gpu"
            return [slurm_backend.SlurmNode(name=n, state="idle", partitions=("gpu",)) for n in ("gpu-10", "gpu-9")]

    monkeypatch.setattr(slurm_backend, "make_backend", lambda **_kw: FakeBackend())
    rc, out, _ = run_cli("inventory", "export", "--ansible", "--partition", "gpu", "--format", "ini")
    assert rc == 0 and out == "[gpu]\ngpu-9\ngpu-10\n"


def test_cli_refusals_exit_2(run_cli, tmp_path: Path) -> None:
    rc, _, err = run_cli("inventory", "export", "--nodes", "gpu-1")
    assert rc == 2 and "--ansible" in err
    rc, _, err = run_cli("inventory", "export", "--ansible")
    assert rc == 2 and "no nodes" in err
    rc, _, err = run_cli("inventory", "export", "--ansible", "--inventory", str(tmp_path / "missing.yaml"))
    assert rc == 2 and err.startswith("clusterkit: error:")
    f = tmp_path / "nodes.yaml"
    f.write_text(INVENTORY)
    rc, _, err = run_cli("inventory", "export", "--ansible", "--inventory", str(f), "--format", "ini")
    assert rc == 2 and "use --format yaml" in err
    rc, _, err = run_cli("inventory", "export", "--ansible", "--nodes", "gpu-1", "--group", "all")
    assert rc == 2 and "--group" in err
