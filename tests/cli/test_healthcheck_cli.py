"""`clusterkit node-check --healthcheck` and `--nagios` as Slurm and Nagios run them, on simulated
nodes: the fast domains only, cached deep verdicts, the Slurm action, Nagios lines and exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.test_cli import ck

HC = ("node-check", "--healthcheck", "--no-slurm-action")
NAGIOS_LINE = re.compile(r"^CLUSTERKIT (OK|WARNING|CRITICAL|UNKNOWN) - (.+?)(?: \| checks=(\d+) fail=(\d+) "
                         r"warn=(\d+) error=(\d+) duration=(\d+\.\d\d)s)?$")

FLEET = """\
name: hc
profile: h100-sxm
nodes: [healthy, ecc-fail, ecc-warn, no-nvml, gemm-slow, hung-nvml]
faults:
  - {node: ecc-fail, gpu: 5, kind: ecc_uncorrectable, value: 2}
  - {node: ecc-warn, gpu: 1, kind: ecc_aggregate, value: 3}
  - {node: no-nvml, kind: nvml_unavailable}
  - {node: gemm-slow, gpu: 3, kind: gemm_slow, value: 2}
  - {node: hung-nvml, kind: hang, value: 600}
"""


def env_for(tmp: Path, node: str) -> dict[str, str]:
    fleet = tmp / "fleet.yaml"
    if not fleet.exists():
        fleet.write_text(FLEET)
    return {"CLUSTERKIT_SIM_ROOT": str(tmp / "sim"), "CLUSTERKIT_SIM": str(fleet), "CLUSTERKIT_NODE": node,
            "CLUSTERKIT_STATE_DIR": str(tmp / "state" / node)}


def nagios(p) -> re.Match:
    lines = p.stdout.splitlines()
    assert len(lines) == 1, p.stdout
    m = NAGIOS_LINE.match(lines[0])
    assert m, lines[0]
    return m


# ------------------------------------------------------------------------------ --healthcheck
def test_healthcheck_runs_the_fast_domains_only(tmp_path):
    p = ck(*HC, "--json", env=env_for(tmp_path, "healthy"))
    doc = json.loads(p.stdout)
    assert p.returncode == 0, [c for c in doc["checks"] if c["status"] != "pass"]
    domains = {c["check"].split(".", 1)[0] for c in doc["checks"]}
    assert domains == {"gpu", "system", "nvlink", "ib", "xid", "storage"}
    assert set(doc["measurements"]) == domains
    assert not any(c["check"] in ("ib.write_bw",) or c["check"].startswith(("storage.fio", "storage.metadata"))
                   for c in doc["checks"])
    assert "slurm_action" not in doc["facts"] and p.stderr == ""
    # --checks narrows it
    p = ck(*HC, "--json", "--checks", "gpu.ecc,xid", env=env_for(tmp_path, "healthy"))
    assert p.returncode == 0, p.stderr
    assert {c["check"].split(".", 1)[0] for c in json.loads(p.stdout)["checks"]} == {"gpu", "xid"}


@pytest.mark.parametrize("extra", [["--stress"], ["--ib-bw"], ["--storage-bench"], ["--weights-dir", "/models"],
                                   ["--checks", "topo"], ["--checks", "stress.gemm"], ["--checks", "fleet.gpu_count"]])
def test_healthcheck_refuses_deep_checks_and_other_domains(tmp_path, extra):
    p = ck(*HC, *extra, env=env_for(tmp_path, "healthy"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clusterkit: error: --healthcheck "), p.stderr


@pytest.mark.parametrize("extra", [["--dry-run"], ["--no-slurm-action"], ["--cache-max-age", "1"]])
def test_healthcheck_options_need_healthcheck(tmp_path, extra):
    p = ck("node-check", *extra, env=env_for(tmp_path, "healthy"))
    assert p.returncode == 2 and f"{extra[0]} only goes with --healthcheck" in p.stderr


def test_a_failed_node_fails_the_healthcheck(tmp_path):
    p = ck(*HC, env=env_for(tmp_path, "ecc-fail"))
    assert p.returncode == 1, p.stderr
    assert "FAIL  gpu.ecc.uncorrectable gpu5" in p.stdout


def test_a_stress_fail_is_carried_by_the_healthcheck_until_it_ages_out(tmp_path):
    env = env_for(tmp_path, "gemm-slow")
    assert ck(*HC, env=env).returncode == 0  # nothing cached yet: the fast checks pass
    p = ck("node-check", "--stress", "--checks", "stress.gemm", "--json", env=env)  # the deep run
    assert p.returncode == 1, p.stderr
    kept = json.loads((tmp_path / "state" / "gemm-slow" / "verdicts" / "stress.json").read_text())
    assert {(c["check"], c["subject"]) for c in kept["results"] if c["status"] == "fail"} == {("stress.gemm", "gpu3")}
    p = ck(*HC, "--json", env=env)
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    (bad,) = [c for c in doc["checks"] if c["status"] == "fail"]
    assert (bad["check"], bad["subject"]) == ("stress.gemm", "gpu3")
    assert bad["message"].endswith("(cached from stress run 0.0h ago)")
    assert doc["facts"]["cached_verdicts"]["stress"]["results"] == 8
    # older than --cache-max-age: ignored, not an error
    p = ck(*HC, "--cache-max-age", "0", "--json", env=env)
    assert p.returncode == 0, p.stdout
    assert "stress" in json.loads(p.stdout)["facts"]["cached_verdicts_ignored"]


def test_a_corrupt_cache_file_never_breaks_the_healthcheck(tmp_path):
    env = env_for(tmp_path, "healthy")
    d = tmp_path / "state" / "healthy" / "verdicts"
    d.mkdir(parents=True)
    (d / "stress.json").write_text('{"version": 1, "time": ')
    p = ck(*HC, "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert "unreadable" in json.loads(p.stdout)["facts"]["cached_verdicts_ignored"]["stress"]


def test_a_probe_that_blocks_is_cut_off_by_the_10s_default_deadline(tmp_path):
    p = ck(*HC, "--json", "--checks", "gpu,system", env=env_for(tmp_path, "hung-nvml"), timeout=60)
    assert p.returncode == 3, p.stderr
    doc = json.loads(p.stdout)
    (err,) = [c for c in doc["checks"] if c["status"] == "error"]
    # the deadline runs from node-check's start: what was left of its 10 s when the probes began
    left = re.search(r"did not finish within the ([\d.]+)s deadline", err["message"])
    assert err["check"] == "gpu.probe" and left and float(left.group(1)) <= 10, err
    assert doc["error_kind"] == "deadline"


# ------------------------------------------------------------------------------ the Slurm action
def run_in_process(monkeypatch, capsys, tmp_path, node: str, *args: str) -> tuple[int, str, str]:
    from clusterkit.cli import main

    for k, v in env_for(tmp_path, node).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        main(["node-check", *args])
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_healthcheck_hands_its_report_to_the_slurm_action(monkeypatch, capsys, tmp_path):
    from clusterkit.slurm import healthcheck

    calls = []

    def act(report, *, dry_run=False, **kw):
        calls.append((report.node, report.status.value, dry_run))
        return healthcheck.HealthAction("drain", f"{report.node}: would drain: clusterkit: gpu.ecc", node=report.node)

    monkeypatch.setattr(healthcheck, "act", act)
    rc, out, err = run_in_process(monkeypatch, capsys, tmp_path, "ecc-fail", "--healthcheck", "--dry-run")
    assert rc == 1 and calls == [("ecc-fail", "fail", True)]
    assert err == "clusterkit: healthcheck: ecc-fail: would drain: clusterkit: gpu.ecc\n"
    assert out.endswith("ecc-fail: fail (196 checks, profile h100-sxm, " + out.rsplit(", ", 1)[1])
    # "none" says nothing; --no-slurm-action does not call it
    monkeypatch.setattr(healthcheck, "act", lambda report, **kw: healthcheck.HealthAction("none", "nothing"))
    rc, out, err = run_in_process(monkeypatch, capsys, tmp_path, "healthy", "--healthcheck", "--json")
    assert rc == 0 and err == "" and json.loads(out)["facts"]["slurm_action"]["action"] == "none"
    calls.clear()
    monkeypatch.setattr(healthcheck, "act", act)
    rc, out, err = run_in_process(monkeypatch, capsys, tmp_path, "ecc-fail", "--healthcheck", "--no-slurm-action")
    assert rc == 1 and calls == [] and err == ""


# ------------------------------------------------------------------------------ --nagios
@pytest.mark.parametrize("node, rc, state, words", [
    ("healthy", 0, "OK", "checks passed"),
    ("ecc-warn", 1, "WARNING", "warned: gpu.ecc.aggregate gpu1 ("),
    ("ecc-fail", 2, "CRITICAL", "1 check failed: gpu.ecc.uncorrectable gpu5 (2 volatile uncorrectable ECC"),
    ("no-nvml", 3, "UNKNOWN", "could not run: gpu.nvml (NVML could not initialise"),
])
def test_nagios_lines_and_exit_codes(tmp_path, node, rc, state, words):
    for healthcheck in ((), ("--healthcheck", "--no-slurm-action")):
        p = ck("node-check", "--nagios", *healthcheck, "--checks", "gpu,system", env=env_for(tmp_path, node))
        assert p.returncode == rc, (p.stdout, p.stderr)
        m = nagios(p)
        assert m.group(1) == state and m.group(2).startswith(f"{node}: ") and words in m.group(2), m.group(0)
        n, fail, warn, error = (int(m.group(i)) for i in (3, 4, 5, 6))
        assert n >= 5 and (fail > 0) == (state == "CRITICAL") and (error > 0) == (state == "UNKNOWN")
        assert (warn > 0) == (state in ("WARNING", "CRITICAL"))


@pytest.mark.parametrize("args", [["--bogus"], ["--json"], ["--checks", "gpu.eccc"], ["--deadline", "x"],
                                  ["--healthcheck", "--stress"], ["--profile", "no-such-profile"]])
def test_nagios_usage_errors_are_unknown_3(tmp_path, args):
    p = ck("node-check", "--nagios", *args, env=env_for(tmp_path, "healthy"))
    assert p.returncode == 3, (p.stdout, p.stderr)
    m = nagios(p)
    assert m.group(1) == "UNKNOWN" and m.group(3) is None and "Traceback" not in p.stderr
