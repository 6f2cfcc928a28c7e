"""node-check --healthcheck's building blocks: the registry index (``--checks`` validated without
importing a domain module), cached verdicts, and a simulated node that starts no Python stand-in
on the health check's path (the kernel log as text, ``stat -f`` in sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterkit.models import CheckResult, Status
from clusterkit.validate import registry, verdicts
from clusterkit.validate.context import ProbeContext

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ the index
def test_the_index_agrees_with_the_domain_modules():
    """_index.py is generated from every domain's DOC and CHECKS and the fleet checks."""
    with open(ROOT / registry.INDEX_PATH, encoding="utf-8") as fh:
        text = fh.read()
    assert text == registry.index_source(), (
        f"{registry.INDEX_PATH} disagrees with the domain modules' CHECKS: run `{registry.WRITE_INDEX}`")
    from clusterkit.validate import _index

    assert list(_index.NODE_CHECKS) == list(registry.DOMAINS) == list(_index.DOMAIN_DOCS)
    assert registry.node_checks() == registry.node_checks(live=True)
    assert registry.fleet_checks() == registry.fleet_checks(live=True)


def test_select_imports_no_domain_module_and_no_pydantic():
    code = (
        "import sys\n"
        "from clusterkit.validate import registry\n"
        "s = registry.select(['gpu.ecc', 'system', 'xid.events', 'fleet.gpu_count'])\n"
        "try:\n"
        "    registry.select(['gpu.eccc'])\n"
        "except Exception as e:\n"
        "    assert 'did you mean gpu.ecc' in str(e), e\n"
        "loaded = [m for m in [*registry.DOMAINS.values(), 'clusterkit.validate.fleet', 'pydantic',\n"
        "                      'clusterkit.models', 'clusterkit.sim', 'yaml'] if m in sys.modules]\n"
        "print(loaded, s.domains)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("]")[0] == "[", p.stdout


def test_a_domain_missing_from_the_index_is_read_from_its_module(monkeypatch):
    import types

    mod = types.ModuleType("fake_domain_hc")
    mod.NAME, mod.DOC, mod.CHECKS = "fakehc", "a fake domain", {"fakehc.thing": "a thing"}
    monkeypatch.setitem(sys.modules, "fake_domain_hc", mod)
    monkeypatch.setitem(registry.DOMAINS, "fakehc", "fake_domain_hc")
    assert registry.select(["fakehc.thing"]).domains == ["fakehc"]
    assert registry.domain_doc("fakehc") == "a fake domain"


def test_write_index_command_is_a_no_op_when_current(tmp_path):
    p = subprocess.run([sys.executable, "-m", "clusterkit.validate.registry", "--check-index"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr


def test_the_packaged_yaml_is_current_and_read_without_the_yaml_parser():
    from clusterkit import config

    with open(ROOT / config.PACKAGED_MODULE, encoding="utf-8") as fh:
        assert fh.read() == config.packaged_source(), (
            f"{config.PACKAGED_MODULE} disagrees with the packaged YAML files: run `{config.WRITE_PACKAGED}`")
    text = (ROOT / "clusterkit" / "profiles" / "h100-sxm.yaml").read_text(encoding="utf-8")
    data = config.safe_load(text, "t")
    assert data == config._parse(text, "t") and data is not config.safe_load(text, "t")  # a fresh copy each time
    assert config.packaged(text + "\n# edited\n") is None  # any other text goes through the parser
    code = ("import sys\n"
            "from clusterkit.profiles import load_profile\n"
            "from clusterkit.parsers.xid import load_catalog\n"
            "from clusterkit import sim\n"
            "load_profile('h100-sxm'); load_profile('h200-sxm'); load_catalog(); sim.parse_fleet(\n"
            "    open(sim.__file__.replace('__init__.py', 'builtin.yaml')).read(), 'builtin')\n"
            "print('yaml' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "False", (p.stdout, p.stderr)


def test_a_fleet_file_is_checked_once_then_kept(tmp_path, monkeypatch):
    from clusterkit import sim

    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path / "sim"))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    monkeypatch.setattr(sim, "_CACHE", {})
    first = sim.load_fleet(str(fleet))
    (kept,) = (tmp_path / "sim" / "fleets").iterdir()
    monkeypatch.setattr(sim, "_CACHE", {})
    monkeypatch.setattr(sim, "parse_fleet", lambda *a: pytest.fail("parsed again"))
    assert sim.load_fleet(str(fleet)) == first  # from the kept form
    kept.write_text("{not json")  # a kept form that does not read: the file is checked again
    monkeypatch.undo()
    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path / "sim"))
    monkeypatch.setattr(sim, "_CACHE", {})
    assert sim.load_fleet(str(fleet)) == first


def test_the_runner_knows_the_simulator_variables_without_importing_it():
    from clusterkit import sim
    from clusterkit.validate import runner

    assert (runner.ENV_SIM, runner.ENV_NODE) == (sim.ENV_SIM, sim.ENV_NODE)


def test_healthcheck_domains_are_registered_and_leave_out_topo_and_stress():
    assert set(registry.HEALTHCHECK_DOMAINS) <= set(registry.DOMAINS)
    assert "topo" not in registry.HEALTHCHECK_DOMAINS and "stress" not in registry.HEALTHCHECK_DOMAINS


# ------------------------------------------------------------------------------ cached verdicts
def ctx_in(tmp_path: Path) -> ProbeContext:
    return ProbeContext.around(node="gpu-001", state_dir=str(tmp_path / "state"))


def r(check: str, status: Status, subject: str | None = None, message: str = "m") -> CheckResult:
    return CheckResult(check=check, subject=subject, status=status, message=message)


def test_verdicts_round_trip_carry_only_verdicts_and_say_where_they_came_from(tmp_path):
    ctx = ctx_in(tmp_path)
    assert verdicts.load(ctx, 3600) == []  # nothing kept yet, no directory: nothing to add
    verdicts.save(ctx, "stress", [r("stress.gemm", Status.FAIL, "gpu3", "512 TFLOPS, below 650"),
                                  r("stress.hbm", Status.PASS, "gpu3"), r("stress.dcgm", Status.ERROR),
                                  r("stress.gpu_burn", Status.SKIP)])
    path = tmp_path / "state" / "verdicts" / "stress.json"
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["source"] == "stress" and doc["node"] == "gpu-001" and len(doc["results"]) == 4
    facts: dict = {}
    got = verdicts.load(ctx, 3600, facts=facts)
    assert [(c.check, c.subject, c.status) for c in got] == [("stress.gemm", "gpu3", Status.FAIL),
                                                             ("stress.hbm", "gpu3", Status.PASS)]
    assert got[0].message == "512 TFLOPS, below 650 (cached from stress run 0.0h ago)"
    assert facts["cached_verdicts"]["stress"]["results"] == 2


def test_verdicts_older_than_the_max_age_are_ignored_not_an_error(tmp_path):
    ctx = ctx_in(tmp_path)
    verdicts.save(ctx, "ib-bw", [r("ib.write_bw", Status.PASS, "mlx5_0")])
    path = tmp_path / "state" / "verdicts" / "ib-bw.json"
    doc = json.loads(path.read_text())
    doc["time"] = time.time() - 10 * 3600
    path.write_text(json.dumps(doc))
    facts: dict = {}
    assert verdicts.load(ctx, 9 * 3600, facts=facts) == []
    assert "older than 9h" in facts["cached_verdicts_ignored"]["ib-bw"]
    (c,) = verdicts.load(ctx, 11 * 3600)
    assert c.message.endswith("(cached from ib-bw run 10h ago)")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1, "time": 1, "results": 3}',
                                     '{"version": 1, "results": []}', '{"version": 99, "time": 1, "results": []}',
                                     '{"version": 1, "time": 1e300, "results": [{"status": "fail"}]}', ""])
def test_a_corrupt_verdict_file_is_ignored_with_a_note(tmp_path, content):
    ctx = ctx_in(tmp_path)
    verdicts.save(ctx, "stress", [r("stress.gemm", Status.FAIL, "gpu1")])
    (tmp_path / "state" / "verdicts" / "nccl.json").write_text(content)
    facts: dict = {}
    got = verdicts.load(ctx, 3600, facts=facts)
    assert [c.check for c in got] == ["stress.gemm"]  # the good one still counts
    assert "nccl" in facts["cached_verdicts_ignored"]


def test_a_run_that_could_not_run_keeps_the_earlier_verdict(tmp_path):
    ctx = ctx_in(tmp_path)
    verdicts.save(ctx, "stress", [r("stress.gemm", Status.FAIL, "gpu1")])
    verdicts.save(ctx, "stress", [r("stress.gemm", Status.SKIP, message="no torch"), r("stress.probe", Status.ERROR)])
    assert [c.status for c in verdicts.load(ctx, 3600)] == [Status.FAIL]
    verdicts.save(ctx, "stress", [r("stress.gemm", Status.PASS, "gpu1")])  # a newer run that ran replaces it
    assert [c.status for c in verdicts.load(ctx, 3600)] == [Status.PASS]


def test_save_deep_keeps_what_the_run_asked_for(tmp_path):
    from clusterkit.models import NodeReport, NodeStatus

    ctx = ctx_in(tmp_path)
    ctx.opt_in = frozenset({"ib.write_bw", "storage.fio"})
    checks = [r("gpu.count", Status.PASS), r("ib.write_bw", Status.WARN, "mlx5_0"), r("ib.port.state", Status.PASS),
              r("storage.fio.read_bw", Status.FAIL, "/mnt/data"), r("storage.free", Status.PASS, "/")]
    rep = NodeReport(node="gpu-001", status=NodeStatus.FAIL, checks=checks)
    assert verdicts.save_deep(ctx, rep) == ["ib-bw", "storage-bench"]
    got = {(c.check, c.status) for c in verdicts.load(ctx, 3600)}
    assert got == {("ib.write_bw", Status.WARN), ("storage.fio.read_bw", Status.FAIL)}


def test_a_verdict_of_another_node_is_not_carried(tmp_path):
    verdicts.save(ProbeContext.around(node="gpu-002", state_dir=str(tmp_path / "state")), "stress",
                  [r("stress.gemm", Status.FAIL, "gpu3")])
    facts: dict = {}
    assert verdicts.load(ctx_in(tmp_path), 3600, facts=facts) == []
    assert "gpu-002" in facts["cached_verdicts_ignored"]["stress"]


def test_source_names_are_file_names_of_their_own(tmp_path):
    with pytest.raises(ValueError):
        verdicts.save(ctx_in(tmp_path), "../etc", [r("x", Status.PASS)])


# ------------------------------------------------------------------------------ the simulated node
FLEET = """
name: hc
nodes: "gpu-[001-003]"
faults:
  - {node: gpu-002, kind: mount_missing, path: /mnt/data}
  - {node: gpu-003, kind: mount_hang, path: /mnt/data}
  - {node: gpu-003, kind: mount_wrong_fs, path: /mnt/x, value: ext4}
  - {node: gpu-003, kind: xid, gpu: 2, value: 79}
"""


@pytest.fixture
def simfleet(tmp_path, monkeypatch):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path / "sim"))
    monkeypatch.setenv("CLUSTERKIT_SIM", str(fleet))
    return fleet


def sim_ctx(monkeypatch, node: str, deadline_s: float = 30.0) -> ProbeContext:
    from clusterkit.validate.runner import make_context

    monkeypatch.setenv("CLUSTERKIT_NODE", node)
    return make_context(deadline=time.monotonic() + deadline_s)


def test_the_shell_stat_stand_in_prints_what_the_python_one_does(simfleet, monkeypatch):
    for node in ("gpu-001", "gpu-003"):
        tools = sim_ctx(monkeypatch, node).tool_path[0]
        with open(os.path.join(tools, "stat"), encoding="utf-8") as fh:
            assert fh.readline() == "#!/bin/sh\n"
        hung = node == "gpu-003"
        for fmt in ("%S %b %f %a %c %d %T", "%n:%t:%s:%%:%q:%"):
            for path in ("/", "/mnt/data/sub/", "/mnt/x", "/dev/shm", "/proc", "/nowhere/a", "/mnt/./x", "rel"):
                if hung and path.startswith("/mnt/data") and fmt != "%S %b %f %a %c %d %T":
                    continue  # one look at the hung mount is enough
                outs = []
                for exe in ("stat", ".stat-py"):
                    argv = [os.path.join(tools, exe), "-f", "-c", fmt, "--", path]
                    try:
                        p = subprocess.run(argv, capture_output=True, text=True, timeout=1.5)
                        outs.append((p.returncode, p.stdout, p.stderr))
                    except subprocess.TimeoutExpired:
                        outs.append("hung")
                assert outs[0] == outs[1], (node, fmt, path, outs)
                assert (outs[0] == "hung") == (hung and path.startswith("/mnt/data")), (node, path, outs)


def test_the_health_check_starts_no_python_on_a_simulated_node(simfleet, monkeypatch):
    """The simulator stands in for hardware: its tools must not cost a Python start each, or the
    health check would measure the simulator (on a node dmesg and stat are small C programs)."""
    from clusterkit.profiles import load_profile
    from clusterkit.validate.runner import run_node_check

    for node in ("gpu-001", "gpu-003"):
        ctx = sim_ctx(monkeypatch, node, deadline_s=4.0)
        started: list[list[str]] = []
        real_run = ctx.procs.run

        def run(argv, **kw):
            started.append(list(argv))
            return real_run(argv, **kw)

        monkeypatch.setattr(ctx.procs, "run", run)
        rep = run_node_check(load_profile("h100-sxm"), registry.Selection(list(registry.HEALTHCHECK_DOMAINS), None),
                             ctx)
        for argv in started:
            with open(argv[0], "rb") as fh:
                head = fh.readline()
            assert b"python" not in head and sys.executable.encode() not in head, (argv, head)
        statuses = {(c.check, c.subject): c.status for c in rep.checks}
        assert statuses["xid.log", None] is Status.PASS
        if node == "gpu-003":
            assert statuses["xid.events", "gpu2"] is Status.FAIL
        assert all(s is not Status.ERROR for s in statuses.values()), rep.checks


def test_the_simulated_kernel_log_is_text_and_dmesg_prints_the_same(simfleet, monkeypatch):
    ctx = sim_ctx(monkeypatch, "gpu-003")
    text, source = ctx.kernel_log()
    assert source == "simulated dmesg" and "NVRM: Xid (PCI:0000:3a:00): 79" in text
    p = ctx.run_tool(["dmesg", "-T"])
    assert p.ok
    strip = lambda t: [ln.split("] ", 1)[1] for ln in t.splitlines()]  # noqa: E731 - stamps move with now
    assert strip(p.stdout) == strip(text)
