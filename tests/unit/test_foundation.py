"""The foundation's contracts, each as a test that fails on the old code: the registry, judges
that are total, NVML errors that are not evidence, tolerant and honest node-report reading,
deadlines, the probe context and the transport contract."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterkit.errors import CommandTimeout, InternalError, UsageError
from clusterkit.models import NODE_SCHEMA, CheckResult, FleetReport, Node, NodeReport, NodeStatus, Status
from clusterkit.profiles import load_profile, parse_profile
from clusterkit.sim import parse_fleet
from clusterkit.sim.nvml import SimNVML
from clusterkit.transport import BaseTransport, CommandResult, Task
from clusterkit.transport.local import LocalTransport
from clusterkit.validate import gpu, registry, system
from clusterkit.validate.context import ProbeContext
from clusterkit.validate.controller import to_node_report, validate_fleet
from clusterkit.validate.runner import run_node_check

H100 = load_profile("h100-sxm")


# ------------------------------------------------------------------------------ registry
def test_every_emitted_check_id_is_registered():
    fleet = parse_fleet("""
nodes: "n[1-4]"
faults:
  - {node: n1, gpu: 0, kind: ecc_disabled}
  - {node: n1, gpu: 1, kind: gpu_lost}
  - {node: n2, kind: nvml_unavailable}
  - {node: n3, kind: disk_free_gib, value: 1}
""", "t")
    known = registry.node_checks()
    for name in ("n1", "n2", "n3", "n4"):
        simnode = fleet.node(name)
        from clusterkit.sim.context import SimPsutil

        ctx = ProbeContext.around(nvml=SimNVML(simnode), psutil=SimPsutil(simnode), node=name)
        rep = run_node_check(H100, None, ctx)
        assert {c.check for c in rep.checks} <= set(known), name
    assert "gpu.ecc.uncorrectable" in known and "system.memory" in known and "gpu.probe" in known
    assert all(doc and "\n" not in doc for doc in registry.all_checks().values())


@pytest.mark.parametrize("bad", ["gpu.eccc", "gpu.ecc.uncorectable", "infiniband", "gpu.", "system.disk.fre"])
def test_unknown_selectors_are_refused_with_suggestions(bad):
    with pytest.raises(UsageError) as e:
        registry.select([bad])
    assert repr(bad) in str(e.value) and "clusterkit checks" in str(e.value)


def test_selectors_accept_ids_groups_and_domains():
    s = registry.select(["gpu.ecc", "system"])
    assert s.domains == ["gpu", "system"]
    assert s.keeps("gpu.ecc.mode") and s.keeps("gpu.ecc.uncorrectable") and not s.keeps("gpu.pcie.width")
    assert s.keeps("system.disk.free")
    assert registry.select(["fleet.drift.driver_version"]).domains == list(registry.DOMAINS)
    assert "did you mean gpu.ecc" in str(pytest.raises(UsageError, registry.select, ["gpu.eccc"]).value)


def test_runner_has_no_per_domain_branches(monkeypatch):
    """A new domain module joins by one registry line: the runner runs it as it is."""
    import sys
    import types

    mod = types.ModuleType("fake_domain")
    mod.NAME, mod.DOC = "fake", "a fake domain"
    mod.CHECKS = {"fake.thing": "a thing"}
    mod.probe = lambda ctx, profile: CheckResult(check="x", status=Status.PASS)  # any pydantic model
    mod.judge = lambda m, p: [CheckResult(check="fake.thing", status=Status.FAIL, message="bad")]
    mod.facts = lambda m: {"fake": 1}
    monkeypatch.setitem(sys.modules, "fake_domain", mod)
    monkeypatch.setitem(registry.DOMAINS, "fake", "fake_domain")
    rep = run_node_check(H100, ["fake"], ProbeContext.around(node="n"))
    assert [(c.check, c.status) for c in rep.checks] == [("fake.thing", Status.FAIL)]
    assert rep.facts["fake"] == 1 and rep.status is NodeStatus.FAIL


# ------------------------------------------------------------------------------ NVML errors
class _NvmlWith(SimNVML):
    """The simulator's NVML with chosen calls failing with chosen NVML return codes."""

    def __init__(self, handle_errors: dict[int, int] | None = None, field_errors: dict[str, int] | None = None):
        super().__init__(parse_fleet("nodes: n1", "t").node("n1"))
        self.handle_errors = handle_errors or {}
        self.field_errors = field_errors or {}

    def nvmlDeviceGetHandleByIndex(self, index):
        if index in self.handle_errors:
            raise pynvml.NVMLError(self.handle_errors[index])
        return super().nvmlDeviceGetHandleByIndex(index)

    def __getattribute__(self, name):
        errs = object.__getattribute__(self, "__dict__").get("field_errors", {})
        if name in errs:
            code = errs[name]

            def failing(*_a, **_k):
                raise pynvml.NVMLError(code)

            return failing
        return object.__getattribute__(self, name)


def _verdicts(nvml) -> dict[tuple[str, str | None], Status]:
    return {(r.check, r.subject): r.status for r in gpu.judge(gpu.probe(ProbeContext.around(nvml=nvml)), H100)}


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_NOT_FOUND,
                                  pynvml.NVML_ERROR_UNKNOWN])
def test_a_handle_lookup_error_that_is_not_gpu_lost_is_error(code):
    v = _verdicts(_NvmlWith(handle_errors={3: code}))
    assert v[("gpu.handle", "gpu3")] is Status.ERROR
    assert ("gpu.health", "gpu3") not in v and Status.FAIL not in v.values()


def test_only_gpu_is_lost_fails_health():
    v = _verdicts(_NvmlWith(handle_errors={3: pynvml.NVML_ERROR_GPU_IS_LOST}))
    assert v[("gpu.health", "gpu3")] is Status.FAIL


def test_unknown_error_from_one_field_is_that_checks_error():
    v = _verdicts(_NvmlWith(field_errors={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_UNKNOWN}))
    assert {k: s for k, s in v.items() if s is not Status.PASS} == {
        (("gpu.temperature", f"gpu{i}")): Status.ERROR for i in range(8)}


_FIELDS = [f for f in gpu.GpuDevice.model_fields if f not in ("index", "unsupported", "errors", "lost",
                                                               "handle_error", "clocks_event_active")]


@settings(max_examples=150, deadline=None)
@given(st.sets(st.sampled_from(_FIELDS)))
def test_gpu_judge_is_total_unread_values_never_fail(unread):
    m = gpu.probe(ProbeContext.around(nvml=SimNVML(parse_fleet("nodes: n1", "t").node("n1"))))
    for f in unread:
        setattr(m.gpus[0], f, None)
    res = gpu.judge(m, H100)  # never raises
    for r in res:
        if r.subject == "gpu0":
            assert r.status is not Status.FAIL, r
    # and every check of gpu0 is still there, as a verdict or as error/skip
    healthy = {r.check for r in gpu.judge(gpu.probe(ProbeContext.around(
        nvml=SimNVML(parse_fleet("nodes: n1", "t").node("n1")))), H100) if r.subject == "gpu0"}
    assert {r.check for r in res if r.subject == "gpu0"} >= healthy - {"gpu.ecc.uncorrectable", "gpu.ecc.aggregate"}


@settings(max_examples=80, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "cpus": st.none(), "memory_gib": st.none(), "load1": st.none(), "kernel": st.none()}))
def test_system_judge_is_total(missing):
    m = system.SystemMeasurement(cpus=4, memory_gib=10.0, load1=0.1, kernel="k",
                                 paths=[system.PathUsage(path="/", error="gone")])
    for k, v in missing.items():
        setattr(m, k, v)
    res = system.judge(m, H100)
    assert [r.status for r in res if r.check == "system.disk.free"] == [Status.ERROR]


def test_gpu_count_unreadable_is_error_not_zero():
    m = gpu.GpuMeasurement(count=None, driver_version="565.57.01")
    assert [(r.check, r.status) for r in gpu.judge(m, H100)] == [("gpu.nvml", Status.ERROR)]


# ------------------------------------------------------------------------------ build differences
def test_host_memory_and_cpus_below_floor_are_warn_unless_the_profile_says_fail():
    m = system.SystemMeasurement(cpus=64, memory_gib=1007.0, load1=1.0, kernel="k")
    soft = {r.check: r.status for r in system.judge(m, H100)}
    assert soft["system.cpus"] is Status.WARN
    assert soft.get("system.memory", Status.PASS) in (Status.PASS, Status.WARN)
    strict = parse_profile("name: site\nsystem: {memory_gib_min: 2000, cpus_min: 96, floor_status: fail}\n", "s")
    hard = {r.check: r.status for r in system.judge(m, strict)}
    assert hard["system.memory"] is Status.FAIL and hard["system.cpus"] is Status.FAIL


# ------------------------------------------------------------------------------ reading node reports
def _result(doc: dict, rc: int = 1) -> CommandResult:
    return CommandResult(node="n", argv=["clusterkit"], rc=rc, stdout=json.dumps(doc) + "\n", stderr="",
                         duration_s=0.1)


def _failing_doc(**extra) -> dict:
    return {"schema": NODE_SCHEMA, "node": "n", "status": "fail",
            "checks": [{"check": "gpu.ecc.uncorrectable", "subject": "gpu5", "status": "fail", "value": 2}],
            **extra}


def test_a_newer_nodes_extra_fields_do_not_turn_fail_into_error():
    doc = _failing_doc(new_top_level={"x": 1})
    doc["checks"][0]["confidence"] = 0.99
    r = to_node_report(Node(name="n"), _result(doc))
    assert r.status is NodeStatus.FAIL and r.checks[0].value == 2


def test_node_status_is_recomputed_from_its_checks():
    doc = _failing_doc()
    doc["status"] = "pass"  # a node that lies (or an old bug) cannot hide a failure
    assert to_node_report(Node(name="n"), _result(doc)).status is NodeStatus.FAIL
    doc = {"schema": NODE_SCHEMA, "node": "n", "status": "fail", "checks": []}
    assert to_node_report(Node(name="n"), _result(doc)).status is NodeStatus.PASS


def test_unknown_check_status_from_a_newer_node_is_error_never_fail():
    doc = {"schema": NODE_SCHEMA, "node": "n", "status": "pass",
           "checks": [{"check": "gpu.x", "status": "degraded"}]}
    r = to_node_report(Node(name="n"), _result(doc))
    assert r.status is NodeStatus.ERROR and r.checks[0].status is Status.ERROR


def test_schema_major_mismatch_is_one_clear_error():
    r = to_node_report(Node(name="n"), _result(_failing_doc(schema="clusterkit.node/v2")))
    assert r.status is NodeStatus.ERROR and r.error_kind == "schema"
    assert "clusterkit.node/v2" in r.error and r.checks == []
    # a minor version is read
    assert to_node_report(Node(name="n"), _result(_failing_doc(schema="clusterkit.node/v1.3"))).status \
        is NodeStatus.FAIL


def test_an_older_node_check_is_named_as_such():
    res = CommandResult(node="n", argv=["clusterkit"], rc=2, stdout="",
                        stderr="Error: No such option: --lifeline\n", duration_s=0.1)
    r = to_node_report(Node(name="n"), res)
    assert r.status is NodeStatus.ERROR and "older than this controller" in r.error


# ------------------------------------------------------------------------------ exit codes
def test_exit_code_precedence():
    fail = NodeReport(node="a", status=NodeStatus.FAIL)
    bug = NodeReport(node="b", status=NodeStatus.ERROR, error_kind="internal", error="internal: x")
    assert FleetReport(nodes=[fail]).finalize().summary.exit_code == 1
    assert FleetReport(nodes=[fail, bug]).finalize().summary.exit_code == 4
    r = FleetReport(nodes=[fail, bug]).finalize(interrupted=True)
    assert r.summary.exit_code == 130 and r.summary.interrupted


class _BuggyTransport(BaseTransport):
    def run(self, node, argv, *, timeout, stdin=None, env=None, hold_stdin=False):
        if node.name == "n2":
            raise KeyError("a bug")
        raise CommandTimeout("slow", cause="did not finish within 1s", stdout="partial out\n", stderr="")


def test_a_bug_on_one_node_is_exit_4_and_a_timeout_keeps_its_partial_output():
    rep = validate_fleet([Node(name="n1"), Node(name="n2")], _BuggyTransport(),
                         profile_for=lambda n: H100, remote=["clusterkit"], timeout=1)
    by = {n.node: n for n in rep.nodes}
    assert by["n2"].error_kind == "internal" and by["n2"].status is NodeStatus.ERROR
    assert by["n1"].error_kind == "timeout" and by["n1"].output_tail == "partial out"
    assert rep.summary.exit_code == 4


# ------------------------------------------------------------------------------ deadlines
def test_local_transport_kills_the_whole_process_group_at_its_timeout():
    t = LocalTransport()
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as e:
        t.run(Node(name="n"), ["sh", "-c", "echo started; sleep 8 & sleep 8"], timeout=1)
    assert time.monotonic() - t0 < 3
    assert e.value.stdout == "started\n"


def test_node_check_returns_by_its_deadline_with_what_finished(monkeypatch):
    fleet = parse_fleet("nodes: n1\nfaults:\n  - {node: n1, kind: hang, value: 30}\n", "t")
    from clusterkit.sim.context import SimPsutil

    simnode = fleet.node("n1")
    ctx = ProbeContext.around(nvml=SimNVML(simnode), psutil=SimPsutil(simnode), node="n1", deadline_s=1.0)
    t0 = time.monotonic()
    rep = run_node_check(H100, ["gpu", "system"], ctx)
    assert time.monotonic() - t0 < 2
    by = {c.check: c for c in rep.checks}
    assert by["gpu.probe"].status is Status.ERROR and "deadline" in by["gpu.probe"].message
    assert by["system.memory"].status is Status.PASS  # the other domain still reported
    assert rep.status is NodeStatus.ERROR and rep.error_kind == "deadline"


# ------------------------------------------------------------------------------ probe context
def test_real_system_probe_reads_this_machine_through_psutil():
    ctx = ProbeContext.around(node="here")
    prof = parse_profile("name: p\nsystem: {paths: [{path: /}]}\n", "p")
    m = system.probe(ctx, prof)
    assert m.cpus == os.cpu_count()
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0]  # MemTotal:  24576000 kB
    kib = int(meminfo.split()[1])
    assert abs(m.memory_gib - kib / 1024**2) < 0.1
    st = os.statvfs("/")
    assert m.paths[0].total_gib == round(st.f_blocks * st.f_frsize / 1024**3, 2)
    assert m.kernel == os.uname().release


def test_sysfs_root_and_attributes(tmp_path, monkeypatch):
    port = tmp_path / "class" / "infiniband" / "mlx5_ib3" / "ports" / "1"
    port.mkdir(parents=True)
    (port / "state").write_text("4: ACTIVE\n")
    ctx = ProbeContext.around(sysfs_root=str(tmp_path))
    assert ctx.read_sysfs("class/infiniband/mlx5_ib3/ports/1/state") == "4: ACTIVE"
    assert ctx.read_sysfs("class", "infiniband", "mlx5_ib3", "ports", "1", "rate") is None  # unknown, not 0
    monkeypatch.setenv("CLUSTERKIT_SYSFS_ROOT", str(tmp_path))
    from clusterkit.validate.context import real_context

    assert real_context(deadline=time.monotonic() + 5).sysfs_root == str(tmp_path)


def test_tool_runner_is_bounded_by_the_deadline_and_reports_missing_tools(tmp_path):
    ctx = ProbeContext.around(deadline_s=1.0)
    t0 = time.monotonic()
    r = ctx.run_tool(["sh", "-c", "echo part; sleep 10 & sleep 10"], timeout=30)
    assert r.timed_out and r.stdout == "part\n" and time.monotonic() - t0 < 3
    assert ctx.run_tool(["no-such-tool-xyz"]).missing
    state = ProbeContext.around(state_dir=str(tmp_path / "st"))
    assert state.state_path("ib.json") == str(tmp_path / "st" / "ib.json") and (tmp_path / "st").is_dir()


def test_simulated_context_has_a_sysfs_tree_stand_in_tools_and_a_kernel_log(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path))
    monkeypatch.setenv("CLUSTERKIT_SIM", "builtin")
    monkeypatch.setenv("CLUSTERKIT_NODE", "gpu-003")
    from clusterkit.validate.runner import make_context

    ctx = make_context(deadline=time.monotonic() + 20)
    assert ctx.simulated and ctx.sysfs_root.startswith(str(tmp_path))
    assert ctx.read_sysfs("class/infiniband/mlx5_0/ports/1/rate") == "400 Gb/sec (4X NDR)"
    text, source = ctx.kernel_log()  # the stand-in dmesg -T's text, handed over without a process
    assert source == "simulated dmesg" and "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  565.57.01" in text
    assert text.startswith("[Mon Nov 30 04:00:00 2026] Linux version 5.15.0-125-generic")
    r = ctx.run_tool(["nvidia-smi", "-L"])
    assert r.ok and r.stdout.count("NVIDIA H100 80GB HBM3") == 8
    # the kernel log given by file wins, as --kernel-log does on a real node
    log = tmp_path / "saved.log"
    log.write_text("[1.0] saved\n")
    ctx.kernel_log_file = str(log)
    assert ctx.kernel_log() == ("[1.0] saved\n", str(log))


# ------------------------------------------------------------------------------ transport contract
def test_env_and_group_tasks_through_the_transport_contract():
    t = LocalTransport()
    nodes = (Node(name="a"), Node(name="b"))
    tasks = [Task(key="pair-ab", nodes=nodes, argv=["sh", "-c", 'echo "$FOO $CK_PEERS"'], timeout=5,
                  env={"FOO": "bar baz", "CK_PEERS": "a,b"}),
             Task(key="solo", nodes=(Node(name="c"),), argv=["true"], timeout=5)]
    seen: list[str] = []
    out = t.run_tasks(tasks, fanout=1, on_done=lambda task, o: seen.append(task.key))
    assert out["pair-ab"].stdout == "bar baz a,b\n" and out["pair-ab"].node == "a"
    assert sorted(seen) == ["pair-ab", "solo"]
    with pytest.raises(UsageError):
        t.run(Node(name="a"), ["true"], timeout=1, env={"BAD NAME": "x"})


def test_env_over_ssh_is_an_argv_prefix_never_a_shell_string():
    import shlex

    from clusterkit.transport import env_argv

    argv = env_argv(["clusterkit", "node-check"], {"X": "$(touch /tmp/pwned); `id`"})
    assert argv == ["env", "X=$(touch /tmp/pwned); `id`", "clusterkit", "node-check"]
    assert shlex.split(shlex.join(argv)) == argv


def test_hold_stdin_keeps_the_lifeline_open_until_the_command_ends():
    t = LocalTransport()
    # the command reads one line, then checks that stdin is still open (read would block)
    script = ("import sys,select; line=sys.stdin.readline(); "
              "r,_,_=select.select([sys.stdin],[],[],0.3); print(line.strip(), 'open' if not r else 'closed')")
    import sys as _sys

    held = t.run(Node(name="a"), [_sys.executable, "-c", script], timeout=10, stdin=b"profile\n", hold_stdin=True)
    assert held.stdout == "profile open\n"
    closed = t.run(Node(name="a"), [_sys.executable, "-c", script], timeout=10, stdin=b"profile\n")
    assert closed.stdout == "profile closed\n"


def test_fan_out_never_raises_and_stays_bounded_with_many_nodes():
    class Count(BaseTransport):
        def __init__(self):
            self.now = self.peak = 0
            self.lock = threading.Lock()

        def run(self, node, argv, *, timeout, stdin=None, env=None, hold_stdin=False):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(0.001)
            with self.lock:
                self.now -= 1
            if node.name.endswith("7"):
                raise RuntimeError("boom")
            return CommandResult(node=node.name, argv=argv, rc=0, stdout="", stderr="", duration_s=0)

    from clusterkit.transport import fan_out

    t = Count()
    out = fan_out(t, [Node(name=f"n{i}") for i in range(500)], ["x"], timeout=1, fanout=16)
    assert len(out) == 500 and t.peak <= 16
    assert sum(isinstance(o, InternalError) for o in out.values()) == 50


# ------------------------------------------------------------------------------ terminal honesty
def test_no_color_is_honoured(monkeypatch):
    import sys as _sys

    from clusterkit.report.terminal import render_terminal

    rep = FleetReport(nodes=[NodeReport(node="a", status=NodeStatus.FAIL, checks=[
        CheckResult(check="gpu.count", status=Status.FAIL, message="7 GPUs")])]).finalize()
    monkeypatch.setattr(_sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in render_terminal(rep)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in render_terminal(rep)


def test_a_dead_rack_is_one_line_grouped_by_cause():
    from clusterkit.errors import ConnectError
    from clusterkit.report.terminal import render_terminal

    nodes = []
    for i in range(1, 41):
        e = ConnectError(f"cannot connect to 10.1.4.{i}:22: Connection refused", cause="connection refused")
        nodes.append(to_node_report(Node(name=f"gpu-{i:03d}"), e))
    nodes.append(to_node_report(Node(name="gpu-041"), ConnectError("no route to 10.9.9.9", cause="no route to host")))
    text = render_terminal(FleetReport(nodes=nodes).finalize(), color=False)
    lines = [ln for ln in text.splitlines() if ln.startswith("UNREACHABLE")]
    assert lines == ["UNREACHABLE gpu-[001-040] (connection refused)", "UNREACHABLE gpu-041 (no route to host)"]
