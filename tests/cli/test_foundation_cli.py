"""The foundation as a user meets it on the command line: typos refused, outputs that cannot be
lost, honest exit codes, deadlines and lifelines. Each test failed on the code before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import ck, one_error_line


def test_a_mistyped_check_is_refused_not_a_green_run():
    p = ck("validate", "--sim", "--checks", "gpu.eccc")
    line = one_error_line(p)
    assert p.returncode == 2 and "'gpu.eccc'" in line and "gpu.ecc" in line and p.stdout == ""
    p = ck("node-check", "--checks", "gpu.ecc,systen", env={"CLUSTERKIT_SIM": "builtin", "CLUSTERKIT_NODE": "gpu-003"})
    assert p.returncode == 2 and "'systen'" in one_error_line(p) and "system" in one_error_line(p)


def test_a_group_selects_its_checks_and_keeps_the_verdict():
    p = ck("validate", "--sim", "--checks", "gpu.ecc", "--json")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    ids = {c["check"] for n in doc["nodes"] for c in n["checks"]}
    assert ids == {"gpu.ecc.mode", "gpu.ecc.uncorrectable", "gpu.ecc.aggregate"}


def test_checks_lists_every_id():
    p = ck("checks")
    assert p.returncode == 0
    for cid in ("gpu.ecc.uncorrectable", "gpu.pcie.width", "system.disk.free", "gpu.probe",
                "fleet.drift.driver_version"):
        assert cid in p.stdout
    doc = json.loads(ck("checks", "--json").stdout)
    assert "gpu.health" in doc["domains"]["gpu"]["checks"] and "fleet.gpu_count" in doc["fleet"]


def test_a_bad_output_path_is_refused_before_the_run(tmp_path):
    t0 = time.monotonic()
    p = ck("validate", "--sim", "--output", "/nonexistent/r.json", "--junit", str(tmp_path / "j.xml"))
    assert p.returncode == 2 and "/nonexistent" in one_error_line(p)
    assert not (tmp_path / "j.xml").exists() and p.stdout == ""
    assert time.monotonic() - t0 < 3  # no node ran
    p = ck("validate", "--sim", "--junit", str(tmp_path))
    assert p.returncode == 2 and "is a directory" in one_error_line(p)


def test_a_write_that_fails_at_the_end_loses_nothing_else(tmp_path):
    # /dev/full passes the check (it exists, it is writable) and then fails the write: ENOSPC
    p = ck("validate", "--sim", "--output", "/dev/full", "--junit", str(tmp_path / "j.xml"))
    assert p.returncode == 1, p.stderr  # the fleet's verdict, not 2 or 4
    assert (tmp_path / "j.xml").read_text().startswith("<?xml")
    assert "--output" in p.stderr and "/dev/full" in p.stderr and "Traceback" not in p.stderr
    assert "8 nodes: 6 pass" in p.stdout


@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
def test_a_closed_or_full_stdout_keeps_the_files_and_the_verdict(tmp_path, redirect):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    cmd = (f"'{sys.executable}' -m clusterkit validate --sim --output '{tmp_path}/r.json' "
           f"--junit '{tmp_path}/j.xml' {redirect}")
    p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                       timeout=120)
    assert p.returncode == 1, p.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["exit_code"] == 1
    assert (tmp_path / "j.xml").exists() and "Traceback" not in p.stderr


def test_repeated_node_and_exclude_options_are_unions():
    p = ck("validate", "--sim", "--nodes", "gpu-001", "--nodes", "gpu-[003-004]", "--exclude", "gpu-004",
           "--exclude", "gpu-009", "--json")
    doc = json.loads(p.stdout)
    assert [n["node"] for n in doc["nodes"]] == ["gpu-001", "gpu-003"] and p.returncode == 1


@pytest.mark.parametrize("args,needle", [
    (("validate", "--sim", "--bogus"), "--bogus"),
    (("validate", "--sim", "--fanout", "0"), "--fanout"),
    (("validate", "--nodes"), "--nodes"),
    (("node-check", "--deadline", "soon"), "--deadline"),
    (("nope",), "nope"),
])
def test_option_errors_are_one_clusterkit_line(args, needle):
    p = ck(*args)
    assert p.returncode == 2 and needle in one_error_line(p)


def test_a_smaller_build_warns_by_default(tmp_path):
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: 'n[1-2]'\nfaults:\n  - {node: n2, kind: memory_gib, value: 1007}\n"
                     "  - {node: n2, kind: load, value: 0.5}\n")
    p = ck("validate", "--sim", str(fleet), "--json")
    doc = json.loads(p.stdout)
    n2 = {c["check"]: c["status"] for c in doc["nodes"][1]["checks"]}
    assert p.returncode == 0 and n2["system.memory"] in ("pass", "warn")


def _node_check_pids(marker: str) -> list[int]:
    """node-check processes whose environment carries this test's fleet file."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"CLUSTERKIT_SIM={marker}".encode() in env:
            out.append(int(pid))
    return out


def test_interrupt_reports_130_and_leaves_no_node_check_running(tmp_path):
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: 'n[1-3]'\nfaults:\n  - {node: n3, kind: hang, value: 120}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    proc = subprocess.Popen([sys.executable, "-m", "clusterkit", "validate", "--sim", str(fleet),
                             "--output", str(tmp_path / "r.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90  # generous: a loaded 2-core machine starts 3 nodes slowly
        stable_since = None
        while time.monotonic() < deadline:
            # until only n3's node-check is left, and has been for 2 s (n1 and n2 may not even
            # have started when n3's is first seen)
            if len(_node_check_pids(str(fleet))) == 1:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= 2.0:
                    break
            else:
                stable_since = None
            time.sleep(0.05)
        assert len(_node_check_pids(str(fleet))) == 1
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["summary"]["exit_code"] == 130 and doc["summary"]["interrupted"] is True
    status = {n["node"]: (n["status"], n.get("error")) for n in doc["nodes"]}
    assert status == {"n1": ("pass", None), "n2": ("pass", None),
                      "n3": ("error", "interrupted before this node answered")}
    assert "exit 130" in out.splitlines()[-1]
    time.sleep(0.5)
    assert _node_check_pids(str(fleet)) == []


def test_node_check_keeps_its_deadline(tmp_path):
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: n1\nfaults:\n  - {node: n1, kind: hang, value: 60}\n")
    t0 = time.monotonic()
    p = ck("node-check", "--json", "--deadline", "1.5", env={"CLUSTERKIT_SIM": str(fleet), "CLUSTERKIT_NODE": "n1"})
    took = time.monotonic() - t0
    assert p.returncode == 3 and took < 6, (took, p.stderr)
    doc = json.loads(p.stdout)
    by = {c["check"]: c for c in doc["checks"]}
    assert by["gpu.probe"]["status"] == "error" and "deadline" in by["gpu.probe"]["message"]
    assert by["system.disk.free"]["status"] == "pass"


def test_node_check_stops_when_its_lifeline_closes(tmp_path):
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: n1\nfaults:\n  - {node: n1, kind: hang, value: 60}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    env.update(CLUSTERKIT_SIM=str(fleet), CLUSTERKIT_NODE="n1")
    proc = subprocess.Popen([sys.executable, "-m", "clusterkit", "node-check", "--json", "--profile", "-",
                             "--lifeline", "--deadline", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        from clusterkit.profiles import load_profile

        proc.stdin.write(load_profile("h100-sxm").model_dump_json().encode() + b"\n")
        proc.stdin.flush()
        time.sleep(1.5)
        assert proc.poll() is None  # still probing (the GPU probe hangs)
        t0 = time.monotonic()
        proc.stdin.close()  # the controller went away
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_timeout_bounds_a_simulated_node_that_hangs(tmp_path):
    fleet = tmp_path / "f.yaml"
    fleet.write_text("nodes: 'n[1-2]'\nfaults:\n  - {node: n2, kind: hang, value: 60}\n")
    t0 = time.monotonic()
    p = ck("validate", "--sim", str(fleet), "--timeout", "4", "--json")
    assert time.monotonic() - t0 < 10
    doc = json.loads(p.stdout)
    n2 = doc["nodes"][1]
    assert p.returncode == 3 and n2["status"] == "error" and n2["error_kind"] == "deadline"


@pytest.mark.parametrize("args", [["--json"], ["--healthcheck", "--no-slurm-action", "--nagios"],
                                  ["--format", "influx"], ["--checks", "stress,ib.write_bw,topo", "--json"]])
def test_node_check_imports_only_the_light_node_side(args):
    """The node side builds Records, not pydantic models: pydantic alone costs a health check
    about 0.2 s (benchmarks/healthcheck.py)."""
    code = ("import sys, atexit\n"
            "atexit.register(lambda: print(' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr))\n"
            "from clusterkit.cli import main\n"
            f"main(['node-check', *{args!r}])\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    env.update(CLUSTERKIT_SIM="builtin", CLUSTERKIT_NODE="gpu-001")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.returncode in (0, 1), p.stderr
    loaded = set(p.stderr.split())
    assert {"clusterkit", "click", "pynvml"} <= loaded
    assert not loaded & {"pydantic", "pydantic_core", "paramiko", "rich", "jinja2", "fabric", "influxdb_client",
                         "cryptography", "nacl"}


def test_every_declared_dependency_is_used():
    """A dependency is declared only once some module imports it (fabric: deploy agent)."""
    import re

    root = Path(__file__).resolve().parents[2]
    text = (root / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = re.findall(r'"([A-Za-z0-9_.-]+)', deps)
    module = {"PyYAML": "yaml", "nvidia-ml-py": "pynvml", "Jinja2": "jinja2", "influxdb-client": "influxdb_client"}
    sources = "\n".join(p.read_text() for p in (root / "clusterkit").rglob("*.py"))
    for dist in names:
        mod = module.get(dist, dist)
        assert re.search(rf"^\s*(import|from) {mod}\b", sources, re.M), f"{dist} is declared but never imported"


def test_a_newer_controllers_profile_section_is_ignored_not_refused():
    """A controller one version ahead may send a profile section this node has no checks for."""
    from clusterkit.profiles import load_profile

    doc = json.loads(load_profile("h100-sxm").model_dump_json(exclude_defaults=True))
    doc["future_domain"] = {"threshold": 3}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    env.update(CLUSTERKIT_SIM="builtin", CLUSTERKIT_NODE="gpu-001")
    proc = subprocess.Popen([sys.executable, "-m", "clusterkit", "node-check", "--json", "--profile", "-",
                             "--lifeline", "--checks", "system"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(json.dumps(doc).encode() + b"\n")
        proc.stdin.flush()
        out = proc.stdout.read()  # the lifeline stays open until node-check has answered
        proc.wait(timeout=60)
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    report = json.loads(out)
    assert report["facts"]["profile_sections_ignored"] == ["future_domain"]
    # a typo inside a known section is still refused: strictness is kept where it matters
    doc.pop("future_domain")
    doc["system"]["memory_gib_mn"] = 1
    p = subprocess.run([sys.executable, "-m", "clusterkit", "node-check", "--json", "--profile", "-"],
                       input=json.dumps(doc), capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "memory_gib_mn" in p.stderr
