"""Baselines as a user meets them: `clusterkit baseline save|list|show` on saved reports, and
`validate --baseline` on simulated fleets (a healthy run kept as the baseline, then a slower
fleet: ib_bw_slow on every rail of every node)."""

from __future__ import annotations

import json
from pathlib import Path

from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status
from tests.cli.test_cli import ck, one_error_line

HEALTHY_FLEET = "name: healthy\nprofile: h100-sxm\nnodes: 'gpu-[001-005]'\n"
# every rail of gpu-[001-004] at 360 Gb/s (below the 380 floor: those fail), gpu-005 at 250
SLOW_FLEET = "name: slow\nprofile: h100-sxm\nnodes: 'gpu-[001-005]'\nfaults:\n" + "".join(
    f"  - {{node: 'gpu-[001-004]', kind: ib_bw_slow, device: mlx5_{i}, value: 360}}\n"
    f"  - {{node: gpu-005, kind: ib_bw_slow, device: mlx5_{i}, value: 250}}\n" for i in range(8))


def env_for(tmp_path: Path) -> dict[str, str]:
    return {"CLUSTERKIT_BASELINE_DIR": str(tmp_path / "baselines"), "CLUSTERKIT_SIM_ROOT": str(tmp_path / "sim")}


def write_report(path: Path, per_node: dict[str, float], profile: str = "h100-sxm", rails: int = 8) -> Path:
    nodes = [NodeReport(node=n, status=NodeStatus.PASS, facts={"profile": profile},
                        checks=[CheckResult(check="ib.write_bw", subject=f"mlx5_{i}/1", status=Status.PASS,
                                            value=v, threshold=380, unit="Gb/s") for i in range(rails)])
             for n, v in per_node.items()]
    report = FleetReport(clusterkit_version="test", source="nodes:gpu-[001-004]", profile=profile, nodes=nodes)
    path.write_text(report.finalize().to_json())
    return path


def test_save_list_show_a_baseline_from_a_report(tmp_path):
    env = env_for(tmp_path)
    rep = write_report(tmp_path / "r.json", {f"gpu-00{i}": 390.0 + i for i in range(1, 5)})
    p = ck("baseline", "save", str(rep), "--name", "prod", env=env)
    assert p.returncode == 0, p.stderr
    path = tmp_path / "baselines" / "prod.json"
    assert p.stdout.strip() == f"saved baseline prod: 1 figure(s) of 1 profile(s) from 4 node(s) to {path}"
    doc = json.loads(path.read_text())
    assert doc["schema"] == "clusterkit.baseline/v1" and doc["name"] == "prod" and doc["nodes"] == 4
    assert doc["source"] == "nodes:gpu-[001-004]" and doc["report_created"]
    assert doc["profiles"] == {"h100-sxm": {"ib.write_bw": {"median": 392.5, "unit": "Gb/s", "direction": "higher",
                                                            "nodes": 4, "samples": 32}}}
    listed = ck("baseline", "list", env=env)
    assert listed.returncode == 0 and listed.stdout.startswith("prod  ") and "4 nodes  1 figures  h100-sxm" in listed.stdout
    as_json = json.loads(ck("baseline", "list", "--json", env=env).stdout)
    assert [b["name"] for b in as_json["baselines"]] == ["prod"] and as_json["dir"] == str(tmp_path / "baselines")
    shown = ck("baseline", "show", "prod", env=env)
    assert shown.returncode == 0 and "ib.write_bw  392.5 Gb/s  (higher is better; 4 nodes, 32 samples)" in shown.stdout
    assert json.loads(ck("baseline", "show", str(path), "--json", env=env).stdout) == doc  # a file works too
    # --dir wins over the environment
    other = tmp_path / "other"
    assert ck("baseline", "save", str(rep), "--name", "lab", "--dir", str(other), env=env).returncode == 0
    assert (other / "lab.json").is_file()
    assert "no baselines in" not in ck("baseline", "list", "--dir", str(other), env=env).stdout
    assert ck("baseline", "list", "--dir", str(tmp_path / "none"), env=env).stdout.startswith("no baselines in")


def test_baseline_mistakes_are_one_error_line(tmp_path):
    env = env_for(tmp_path)
    rep = write_report(tmp_path / "r.json", {f"gpu-00{i}": 390.0 for i in range(1, 5)})
    assert ck("baseline", "save", str(rep), "--name", "prod", env=env).returncode == 0
    again = ck("baseline", "save", str(rep), "--name", "prod", env=env)
    assert again.returncode == 2 and "exists" in one_error_line(again) and "--force" in again.stderr
    assert ck("baseline", "save", str(rep), "--name", "prod", "--force", env=env).returncode == 0
    bad_name = ck("baseline", "save", str(rep), "--name", "../etc", env=env)
    assert bad_name.returncode == 2 and "baseline name '../etc'" in one_error_line(bad_name)
    missing = ck("baseline", "save", str(tmp_path / "nope.json"), "--name", "x", env=env)
    assert missing.returncode == 2 and "cannot read report" in one_error_line(missing)
    (tmp_path / "junk.json").write_text('{"schema": "something/v1"}')
    junk = ck("baseline", "save", str(tmp_path / "junk.json"), "--name", "x", env=env)
    assert junk.returncode == 2 and "not a clusterkit report" in one_error_line(junk)
    empty = write_report(tmp_path / "empty.json", {"gpu-001": 390.0}, rails=0)
    none = ck("baseline", "save", str(empty), "--name", "x", env=env)
    assert none.returncode == 2 and "no figures to keep" in one_error_line(none)
    unknown = ck("baseline", "show", "staging", env=env)
    assert unknown.returncode == 2
    assert "no baseline named 'staging'" in one_error_line(unknown) and "baselines there: prod" in unknown.stderr


def test_validate_refuses_a_bad_baseline_before_any_node_is_contacted(tmp_path):
    env = env_for(tmp_path)
    # no such host: had validate got as far as SSH, the error would be another one
    p = ck("validate", "--nodes", "no-such-host-[1-2].invalid", "--baseline", "prod", env=env)
    assert p.returncode == 2
    assert one_error_line(p).startswith("clusterkit: error: --baseline: no baseline named 'prod' in ")
    (tmp_path / "bad.json").write_text("{")
    p = ck("validate", "--sim", "--baseline", str(tmp_path / "bad.json"), env=env)
    assert p.returncode == 2 and "not JSON" in one_error_line(p)
    assert not (tmp_path / "sim").exists()  # no simulated node was started


def test_a_slower_fleet_shows_against_the_baseline_of_a_healthy_run(tmp_path):
    env = env_for(tmp_path)
    (tmp_path / "healthy.yaml").write_text(HEALTHY_FLEET)
    (tmp_path / "slow.yaml").write_text(SLOW_FLEET)
    # a baseline from a faster past (420 Gb/s): the healthy fleet (390.98) is 6.9 % below it, a
    # warning only, no node fails
    write_report(tmp_path / "fast.json", {f"gpu-00{i}": 420.0 for i in range(1, 5)})
    assert ck("baseline", "save", str(tmp_path / "fast.json"), "--name", "fast", env=env).returncode == 0
    healthy = ck("validate", "--sim", str(tmp_path / "healthy.yaml"), "--checks", "ib", "--ib-bw",
                 "--output", str(tmp_path / "healthy.json"), "--baseline", "fast", "--no-progress", env=env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    doc = json.loads((tmp_path / "healthy.json").read_text())
    assert [(f["check"], f["status"], f["value"], f["expected"]) for f in doc["fleet"]] == \
        [("fleet.baseline.ib.write_bw", "warn", 390.98, 420.0)]
    assert "WARN   fleet.baseline.ib.write_bw" in healthy.stdout and "-6.9% against baseline fast" in healthy.stdout

    # keep the healthy run as the cluster's baseline, then validate the slower fleet against it
    saved = ck("baseline", "save", str(tmp_path / "healthy.json"), "--name", "prod", env=env)
    assert saved.returncode == 0, saved.stderr
    assert json.loads((tmp_path / "baselines" / "prod.json").read_text())["profiles"]["h100-sxm"]["ib.write_bw"] == \
        {"median": 390.98, "unit": "Gb/s", "direction": "higher", "nodes": 5, "samples": 40}
    slow = ck("validate", "--sim", str(tmp_path / "slow.yaml"), "--checks", "ib", "--ib-bw", "--json",
              "--baseline", "prod", env=env)
    assert slow.returncode == 1, slow.stderr  # the absolute floor (380) still decides fail
    doc = json.loads(slow.stdout)
    assert {n["node"]: n["status"] for n in doc["nodes"]} == {f"gpu-00{i}": "fail" for i in range(1, 6)}
    found = {f["check"]: f for f in doc["fleet"]}
    assert set(found) == {"fleet.outlier.ib.write_bw", "fleet.baseline.ib.write_bw"}
    out, base = found["fleet.outlier.ib.write_bw"], found["fleet.baseline.ib.write_bw"]
    assert (out["status"], out["nodes"], out["value"], out["expected"]) == ("warn", ["gpu-005"], 250.0, 360.0)
    assert (base["status"], base["value"], base["expected"]) == ("warn", 360.0, 390.98)
    assert base["nodes"] == [f"gpu-00{i}" for i in range(1, 6)]
    assert "-7.9% against baseline prod" in base["message"]

    # the same fleet against the healthy file itself, given as a path: nothing to flag
    same = ck("validate", "--sim", str(tmp_path / "healthy.yaml"), "--checks", "ib", "--ib-bw", "--json",
              "--baseline", str(tmp_path / "baselines" / "prod.json"), env=env)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["fleet"] == [] and same.stderr == ""


def test_a_baseline_with_nothing_to_compare_says_so(tmp_path):
    env = env_for(tmp_path)
    write_report(tmp_path / "r.json", {f"gpu-00{i}": 390.0 for i in range(1, 5)})
    assert ck("baseline", "save", str(tmp_path / "r.json"), "--name", "prod", env=env).returncode == 0
    # no --ib-bw: no figure measured, the baseline compared nothing; stderr says so
    p = ck("validate", "--sim", "--nodes", "gpu-001", "--checks", "system", "--baseline", "prod", env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == ("clusterkit: warning: --baseline prod: nothing compared: the baseline has "
                                "h100-sxm: ib.write_bw; this run measured no figures (ib.write_bw needs --ib-bw)")


def test_the_fleet_ids_are_listed():
    doc = json.loads(ck("checks", "--json").stdout)
    assert {"fleet.outlier.<check>", "fleet.baseline.<check>"} <= set(doc["fleet"])
    text = ck("checks").stdout
    assert "fleet.outlier.<check>" in text and "fleet.baseline.<check>" in text
