"""``deploy agent``: the pure parts (platform grouping and tags, idempotency, what to upload and
prune, the install script and the healthcheck wrapper as shell, the result table and JSON)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from clusterkit.deploy import agent
from clusterkit.deploy.cli import deploy_group


def make_wheelhouse(tmp_path: Path, version: str = "0.1.0", extra: bytes = b"") -> agent.Wheelhouse:
    d = tmp_path / f"wh-{version}-{len(extra)}"
    d.mkdir()
    for name, data in ((f"clusterkit-{version}-py3-none-any.whl", b"ck" + extra),
                       ("click-8.1.7-py3-none-any.whl", b"click"), ("pip-24.0-py3-none-any.whl", b"pip"),
                       ("pydantic_core-2.14.6-cp311-cp311-manylinux_2_17_x86_64.whl", b"core")):
        (d / name).write_bytes(data)
    return agent.load_wheelhouse_dir(str(d))


def facts(**kw) -> agent.NodeFacts:
    return agent.NodeFacts.from_json({"python": "3.11", "impl": "cpython", "machine": "x86_64", "libc": "glibc",
                                      "libc_version": "2.36", **kw})


def test_platform_from_probe_and_pip_tags():
    p = facts().platform
    assert p == agent.Platform("3.11", "cp", "x86_64", "glibc", "2.36")
    tags = p.pip_platforms()
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert tags[-1] == "linux_x86_64"
    old = agent.Platform("3.9", "cp", "aarch64", "glibc", "2.17").pip_platforms()
    assert "manylinux_2_28_aarch64" not in old and "manylinux2014_aarch64" in old
    musl = agent.Platform("3.12", "cp", "x86_64", "musl", "1.2.4").pip_platforms()
    assert musl[:3] == ["musllinux_1_2_x86_64", "musllinux_1_1_x86_64", "musllinux_1_0_x86_64"]


def test_wheelhouse_id_and_checks(tmp_path):
    wh = make_wheelhouse(tmp_path)
    assert wh.version == "0.1.0" and wh.id == f"0.1.0-{wh.digest[:12]}"
    assert wh.clusterkit_wheel.name.startswith("clusterkit-") and wh.pip_wheel is not None
    other = make_wheelhouse(tmp_path, extra=b"x")  # same version, another build
    assert other.id != wh.id
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "click-8.1.7-py3-none-any.whl").write_bytes(b"c")
    with pytest.raises(agent.ClusterkitError, match="no clusterkit wheel"):
        agent.load_wheelhouse_dir(str(empty))
    assert agent.parse_wheel_filename("clusterkit-0.1.0+test2-py3-none-any.whl") == ("clusterkit", "0.1.0+test2")


def test_idempotency_decision(tmp_path):
    wh = make_wheelhouse(tmp_path)
    assert agent.is_unchanged(facts(current=wh.id, current_version="0.1.0"), wh)
    assert not agent.is_unchanged(facts(current=wh.id, current_version=None), wh)  # broken: repaired
    assert not agent.is_unchanged(facts(current="0.0.9-abc", current_version="0.0.9"), wh)
    assert not agent.is_unchanged(facts(), wh)


def test_uploads_and_prunes(tmp_path):
    wh = make_wheelhouse(tmp_path)
    on_node = {f.name: f.size for f in wh.files}
    # same name and size: present, except clusterkit's own wheel (one version, two builds)
    assert [f.name for f in agent.wheels_to_upload(on_node, wh)] == [wh.clusterkit_wheel.name]
    assert len(agent.wheels_to_upload({}, wh)) == len(wh.files)
    assert agent.wheels_to_remove({**on_node, "old-1.0-py3-none-any.whl": 3}, wh) == ["old-1.0-py3-none-any.whl"]
    versions = {"v1": (1.0, True), "v2": (2.0, True), "v3": (3.0, True), "v4": (4.0, True), "half": (5.0, False),
                "new": (6.0, False)}
    assert agent.versions_to_remove(versions, new_id="new", old_id="v2", keep=2) == ["half", "v1", "v3"]
    assert agent.versions_to_remove(versions, new_id="new", old_id="v4", keep=0) == ["half", "v1", "v2", "v3", "v4"]


def test_install_script_is_valid_sh_and_switches_last(tmp_path):
    wh = make_wheelhouse(tmp_path, version="0.1.0+test2")
    paths = agent.Options(prefix="/opt/my prefix/{node}").for_node("gpu-001")
    script = agent.install_script(paths=paths, python="/usr/bin/python3", wh=wh, stage="/tmp/stage x",
                                  remove_versions=["0.0.1-aaa"], remove_wheels=["a b.whl"])
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "'/opt/my prefix/gpu-001/versions/0.1.0+test2-" in script
    assert "--no-index" in script and "PIP_NO_INDEX=1" in script
    # the version is made and checked before current moves; old versions go only after the switch
    assert script.index("--version") < script.index("/current'") < script.index("rm -rf -- ")
    if shutil.which("shellcheck"):
        cp = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, text=True, capture_output=True)
        assert cp.returncode == 0, cp.stdout


def test_healthcheck_wrapper_text(tmp_path):
    text = agent.healthcheck_wrapper_text("/opt/clusterkit")
    assert text.startswith("#!/bin/sh\n")
    assert 'exec /opt/clusterkit/current/bin/clusterkit node-check --healthcheck "$@"\n' in text
    spaced = agent.healthcheck_wrapper_text("/opt/my ck/", ["--profile", "h200-sxm"])
    assert "exec '/opt/my ck/current/bin/clusterkit' node-check --healthcheck --profile h200-sxm \"$@\"" in spaced
    for body in (text, spaced):
        f = tmp_path / "w.sh"
        f.write_text(body)
        assert subprocess.run(["sh", "-n", str(f)]).returncode == 0
        if shutil.which("shellcheck"):
            cp = subprocess.run(["shellcheck", str(f)], capture_output=True, text=True)
            assert cp.returncode == 0, cp.stdout


def test_print_healthcheck_wrapper_cli():
    r = CliRunner().invoke(deploy_group, ["agent", "--print-healthcheck-wrapper", "--prefix", "/opt/ck"])
    assert r.exit_code == 0
    assert r.output == agent.healthcheck_wrapper_text("/opt/ck")


def test_usage_errors():
    from clusterkit.errors import UsageError

    r = CliRunner().invoke(deploy_group, ["agent", "--nodes", "n1", "--prefix", "relative"])
    assert isinstance(r.exception, UsageError) and "absolute" in str(r.exception)
    r = CliRunner().invoke(deploy_group, ["agent", "--prefix", "/opt/ck"])
    assert isinstance(r.exception, UsageError) and "say which nodes" in str(r.exception)


def test_per_node_paths_and_wrapper():
    opts = agent.Options(prefix="/x/{node}/opt", bin_dir="/x/{node}/bin", extras=(
        agent.Extra("healthcheck wrapper", "/x/{node}/hc", b"", 0o755,
                    per_prefix=lambda p: agent.healthcheck_wrapper_text(p).encode()),))
    paths = opts.for_node("gpu-007")
    assert paths.prefix == "/x/gpu-007/opt" and paths.bin_dir == "/x/gpu-007/bin"
    extra, path = paths.extras[0]
    assert path == "/x/gpu-007/hc" and b"/x/gpu-007/opt/current/bin/clusterkit" in extra.content
    assert paths.probe_args(sudo=True)["writable"] == []


def test_report_table_and_json():
    results = [agent.NodeResult("gpu-002", agent.FAILED, "no write access to /opt/clusterkit for ckuser"),
               agent.NodeResult("gpu-001", agent.CHANGED, old_id=None, new_id="0.1.0-abc", actions=["install"]),
               agent.NodeResult("gpu-003", agent.UNCHANGED, old_id="0.1.0-abc", new_id="0.1.0-abc")]
    rep = agent.DeployReport(results, duration_s=1.5)
    table = rep.table()
    lines = table.splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "BEFORE", "AFTER", "DETAIL"]
    assert lines[1].startswith("gpu-002") and "no write access" in lines[1]  # failures first
    assert lines[-1].startswith("1 changed, 1 unchanged, 1 failed")
    assert rep.exit_code == 1
    doc = json.loads(rep.to_json())
    assert doc["schema"] == agent.SCHEMA and doc["summary"]["failed"] == 1
    assert [n["node"] for n in doc["nodes"]] == ["gpu-002", "gpu-001", "gpu-003"]
    assert agent.DeployReport(results[1:]).exit_code == 0
    assert "would change" in agent.DeployReport(results[1:], dry_run=True).table()


def test_strict_host_keys_policy_refuses_unknown():
    import paramiko

    from clusterkit.errors import HostKeyError
    from clusterkit.transport.knownhosts import HostKeys, parse_line

    blob_key = paramiko.ECDSAKey.generate()
    line = f"gpu-001 {blob_key.get_name()} {blob_key.get_base64()}"
    known = HostKeys("gpu-001", keys=[parse_line(line)])
    policy = agent.StrictHostKeys(known, "gpu-001", "gpu-001")
    policy.missing_host_key(None, "gpu-001", blob_key)  # listed: accepted
    with pytest.raises(HostKeyError, match="CHANGED"):
        policy.missing_host_key(None, "gpu-001", paramiko.ECDSAKey.generate())
    with pytest.raises(HostKeyError, match="unknown host key"):
        agent.StrictHostKeys(HostKeys("gpu-002"), "gpu-002", "gpu-002").missing_host_key(None, "x", blob_key)


def test_repack_installed_clusterkit(tmp_path):
    wheel = agent.repack_installed_clusterkit(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "clusterkit/__init__.py" in names
    assert any(n.endswith(".dist-info/RECORD") for n in names)
    assert not any(n.endswith(".pyc") for n in names)
