"""Fleet-relative verdicts on figures: the outlier rule on constructed distributions, what
counts as a figure, and baselines (made from a report, stored, read back, compared)."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import pytest

from clusterkit import baseline as baselines
from clusterkit.errors import UsageError
from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status
from clusterkit.validate import fleet
from clusterkit.validate.fleet import (
    BASELINE_TOLERANCE,
    FLEET_CHECKS,
    OUTLIER_MIN_NODES,
    OUTLIER_SPREAD_FLOOR,
    OUTLIER_Z,
    figure_direction,
    figure_groups,
    judge_baseline,
    judge_fleet,
    judge_outliers,
)

HEALTHY = 390.98  # the simulator's ib_write_bw at 400 Gb/s (AzNHC's H100 sample)
# a tight, realistic spread of loopback figures (Gb/s), eight rails
NOISE = [390.98, 391.2, 390.5, 391.0, 390.7, 391.1, 390.9, 390.6]


def node(name: str, values: list[Any], *, check: str = "ib.write_bw", unit: Optional[str] = "Gb/s",
         profile: str = "h100-sxm", status: Status = Status.PASS, subjects: Optional[list[Optional[str]]] = None,
         node_status: NodeStatus = NodeStatus.PASS) -> NodeReport:
    subjects = subjects or [f"mlx5_{i}/1" for i in range(len(values))]
    return NodeReport(node=name, status=node_status, facts={"profile": profile},
                      checks=[CheckResult(check=check, subject=s, status=status, value=v, unit=unit)
                              for s, v in zip(subjects, values)])


def fleet_of(n: int, slow: Optional[dict[int, list[Any]]] = None, **kw: Any) -> list[NodeReport]:
    """n nodes gpu-001… with NOISE on every rail (rotated, so nodes differ a little); ``slow``
    replaces some nodes' figures."""
    slow = slow or {}
    out = []
    for i in range(1, n + 1):
        values = slow.get(i, NOISE[i % 8:] + NOISE[:i % 8])
        out.append(node(f"gpu-{i:03d}", values, **kw))
    return out


def outliers(reports: list[NodeReport]) -> list[Any]:
    return judge_outliers(figure_groups(reports))


# ------------------------------------------------------------------------------- the rule
def test_constants_are_the_documented_ones():
    assert (OUTLIER_Z, OUTLIER_SPREAD_FLOOR, OUTLIER_MIN_NODES, BASELINE_TOLERANCE) == (3.0, 0.05, 4, 0.05)
    assert fleet.MAD_TO_SIGMA == 1.4826
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "checks", "fleet.md")).read()
    for needle in ("1.4826", "5 %", "z < -3", "at least 4 nodes", "clusterkit.baseline/v1", "CLUSTERKIT_BASELINE_DIR"):
        assert needle in doc, needle


def test_a_tight_fleet_has_no_outlier():
    assert outliers(fleet_of(16)) == []
    assert judge_fleet(fleet_of(16)) == []


def test_one_slow_node_is_flagged_warn_with_the_fleet_median():
    found = outliers(fleet_of(8, {5: [300.0] * 8}))
    assert len(found) == 1
    f = found[0]
    assert (f.check, f.status, f.nodes, f.value) == ("fleet.outlier.ib.write_bw", Status.WARN, ["gpu-005"], 300.0)
    assert f.expected == pytest.approx(390.95, abs=0.1)
    assert "gpu-005 300 Gb/s" in f.message and "8 of 8 subjects" in f.message and "of 8 nodes" in f.message


def test_one_slow_rail_of_one_node_is_flagged_naming_the_rail():
    slow = NOISE.copy()
    slow[3] = 250.0
    f, = outliers(fleet_of(6, {2: slow}))
    assert f.nodes == ["gpu-002"] and f.value == 250.0
    assert "gpu-002 mlx5_3/1 250 Gb/s" in f.message and "1 of 8 subjects" in f.message


def test_two_slow_nodes_are_both_flagged():
    f, = outliers(fleet_of(8, {3: [310.0] * 8, 7: [280.0] * 8}))
    assert f.nodes == ["gpu-003", "gpu-007"] and f.value == 280.0


def test_a_bimodal_fleet_flags_nothing_and_a_slow_minority_is_flagged():
    # half the fleet at each of two figures: the median falls between them and the spread
    # (MAD) is half the gap, so no node is 3 spreads off: nothing is flagged. That is the
    # documented behaviour: no "normal" node to be an outlier of; a baseline catches it.
    half = fleet_of(8, {i: [300.0] * 8 for i in range(5, 9)})
    assert outliers(half) == []
    # a minority (3 of 8) is slower: the median and spread are the majority's, the slow ones are flagged
    minority = fleet_of(8, {i: [300.0] * 8 for i in range(6, 9)})
    f, = outliers(minority)
    assert f.nodes == ["gpu-006", "gpu-007", "gpu-008"]


def test_too_few_nodes_give_no_verdict():
    assert outliers(fleet_of(OUTLIER_MIN_NODES - 1, {1: [100.0] * 8})) == []
    f, = outliers(fleet_of(OUTLIER_MIN_NODES, {1: [100.0] * 8}))
    assert f.nodes == ["gpu-001"]


def test_the_spread_floor_keeps_noise_in_a_tight_fleet_unflagged():
    # every other node is exactly 390.98: MAD is 0, the spread is the floor, 5 % of the median
    spread = OUTLIER_SPREAD_FLOOR * HEALTHY
    edge = HEALTHY - OUTLIER_Z * spread  # 332.33
    exact = {i: [HEALTHY] * 8 for i in range(1, 9)}
    assert outliers(fleet_of(8, {**exact, 4: [edge + 1] * 8})) == []  # 15 % below: still noise
    f, = outliers(fleet_of(8, {**exact, 4: [edge - 1] * 8}))
    assert f.nodes == ["gpu-004"] and "z < -3" in f.message and "flagged below 332.33 Gb/s" in f.message


def test_a_wide_fleet_uses_its_own_spread():
    # nodes spread 300..440 (MAD well over 5 %): nothing flagged; a ninth node at 150 is 3.5 spreads below
    wide = {i: [300.0 + 20 * (i - 1)] * 8 for i in range(1, 9)}
    assert outliers(fleet_of(8, wide)) == []
    f, = outliers(fleet_of(9, {**wide, 9: [150.0] * 8}))
    assert f.nodes == ["gpu-009"]


def test_lower_is_better_figures_flag_the_high_side():
    assert figure_direction("storage.metadata.p50") == "lower"
    reps = fleet_of(6, {3: [30.0]}, check="storage.metadata.p50", unit="ms", subjects=["/scratch"])
    for r in reps:
        if r.node != "gpu-003":
            r.checks[0].value = 2.0
    f, = outliers(reps)
    assert f.nodes == ["gpu-003"] and "far above" in f.message and "z > +3" in f.message
    assert f.check == "fleet.outlier.storage.metadata.p50"


# ------------------------------------------------------------------------------- what is a figure
def test_figures_are_registered_data_not_guesses():
    assert figure_direction("ib.write_bw") == "higher"
    assert figure_direction("storage.fio.read_bw") == "higher"
    assert figure_direction("stress.gemm") == figure_direction("stress.hbm") == "higher"
    assert figure_direction("storage.weights") == "higher" and figure_direction("storage.metadata.p99") == "lower"
    assert figure_direction("nccl.allreduce.busbw") == "higher"
    for not_figure in ("gpu.temperature", "ib.port.rate", "system.memory", "ib.counters", "storage.fio",
                       "storage.metadata", "storage.free", "stress.dcgm", "stress.gpu_burn"):
        assert figure_direction(not_figure) is None
    # an exact id wins over a pattern, a longer pattern over a shorter one
    fleet.FIGURES["storage.fio.lat"] = "lower"
    try:
        assert figure_direction("storage.fio.lat") == "lower"
        assert figure_direction("storage.fio.read_bw") == "higher"
    finally:
        del fleet.FIGURES["storage.fio.lat"]
    assert {"fleet.outlier.<check>", "fleet.baseline.<check>"} <= set(FLEET_CHECKS)
    from clusterkit.validate.registry import select

    assert select(["fleet.outlier", "fleet.baseline"]).filters == ["fleet.outlier", "fleet.baseline"]


def test_only_numbers_measured_on_reached_nodes_count():
    reps = fleet_of(3) + [
        node("gpu-004", [100.0] * 8, status=Status.ERROR),  # error: measured nothing
        node("gpu-005", [100.0] * 8, status=Status.SKIP),
        node("gpu-006", [True] * 8),  # a bool is no figure
        node("gpu-007", ["100"] * 8),  # nor a string
        node("gpu-008", [math.nan, math.inf, None, None, None, None, None, None]),
        node("gpu-009", [100.0] * 8, node_status=NodeStatus.UNREACHABLE),
        node("gpu-010", [100.0] * 8, check="ib.port.rate"),  # not a figure
    ]
    groups = figure_groups(reps)
    assert list(groups) == [("h100-sxm", "ib.write_bw")]
    assert sorted(groups["h100-sxm", "ib.write_bw"].samples) == ["gpu-001", "gpu-002", "gpu-003"]
    assert outliers(reps) == []  # three nodes: too few


def test_a_failing_node_still_takes_part_and_is_flagged_too():
    reps = fleet_of(8, {2: [200.0] * 8}, status=Status.PASS)
    for c in reps[1].checks:
        c.status = Status.FAIL  # the absolute floor failed it; the outlier is a warn beside it
    f, = outliers(reps)
    assert f.nodes == ["gpu-002"] and f.status is Status.WARN


def test_profiles_paths_and_units_are_separate_figures():
    # two H200 nodes slower than six H100 nodes: another profile, not an outlier
    mixed = fleet_of(6) + [node(f"h200-{i}", [300.0] * 8, profile="h200-sxm") for i in (1, 2)]
    assert outliers(mixed) == []
    assert set(figure_groups(mixed)) == {("h100-sxm", "ib.write_bw"), ("h200-sxm", "ib.write_bw")}
    # two file systems of different speeds: each its own figure; one node slow on /scratch
    reps = []
    for i in range(1, 6):
        scratch = 1.0 if i == 4 else 2.0
        reps.append(node(f"n{i}", [10.0, scratch], check="storage.fio.read_bw", unit="GB/s",
                         subjects=["/mnt/weights", "/scratch"]))
    f, = outliers(reps)
    assert f.nodes == ["n4"] and f.check == "fleet.outlier.storage.fio.read_bw"
    assert f.message.startswith("storage.fio.read_bw[/scratch] (h100-sxm) far below")
    # a sample in another unit than most of its figure's is left out
    odd = fleet_of(5)
    odd[0].checks[0].unit = "MB/s"
    g = figure_groups(odd)["h100-sxm", "ib.write_bw"]
    assert g.unit == "Gb/s" and len(g.samples["gpu-001"]) == 7


def test_many_outliers_are_listed_up_to_ten():
    reps = fleet_of(40, {i: [100.0] * 8 for i in range(1, 13)})
    f, = outliers(reps)
    assert len(f.nodes) == 12 and "… and 2 more" in f.message


# ------------------------------------------------------------------------------- baselines
def report_of(reports: list[NodeReport]) -> FleetReport:
    return FleetReport(clusterkit_version="test", source="sim:test", nodes=reports).finalize()


def test_a_baseline_keeps_the_median_per_profile_and_figure():
    reps = fleet_of(6) + [node(f"h200-{i}", [300.0] * 8, profile="h200-sxm") for i in (1, 2)]
    b = baselines.from_report(report_of(reps), "prod")
    assert b.schema_ == "clusterkit.baseline/v1" and b.name == "prod" and b.nodes == 8
    assert set(b.profiles) == {"h100-sxm", "h200-sxm"}
    f = b.profiles["h100-sxm"]["ib.write_bw"]
    assert f.median == pytest.approx(390.95, abs=0.05) and (f.unit, f.direction, f.nodes, f.samples) == \
        ("Gb/s", "higher", 6, 48)
    assert b.profiles["h200-sxm"]["ib.write_bw"].median == 300.0


def test_a_slower_fleet_is_flagged_against_its_baseline_and_a_steady_one_is_not():
    b = baselines.from_report(report_of(fleet_of(8)), "prod")
    # the whole fleet 3 % slower: within the tolerance
    steady = fleet_of(8, {i: [v * 0.97 for v in NOISE] for i in range(1, 9)})
    assert judge_baseline(figure_groups(steady), b) == []
    # the whole fleet 8 % slower: no outlier (it is all alike), but the baseline shows it
    slow = fleet_of(8, {i: [v * 0.92 for v in NOISE] for i in range(1, 9)})
    assert outliers(slow) == []
    found = judge_fleet(slow, b)
    assert [f.check for f in found] == ["fleet.baseline.ib.write_bw"]
    f = found[0]
    assert f.status is Status.WARN and f.nodes == [f"gpu-{i:03d}" for i in range(1, 9)]
    assert f.value == pytest.approx(390.95 * 0.92, abs=0.1) and f.expected == b.profiles["h100-sxm"]["ib.write_bw"].median
    assert "-8.0% against baseline prod" in f.message and "gpu-[001-008]" in f.message


def test_a_baseline_compares_only_the_same_profile_figure_and_unit():
    b = baselines.from_report(report_of(fleet_of(4)), "prod")
    other_profile = fleet_of(4, {i: [200.0] * 8 for i in range(1, 5)}, profile="h200-sxm")
    assert judge_baseline(figure_groups(other_profile), b) == []
    other_unit = fleet_of(4, {i: [20.0] * 8 for i in range(1, 5)}, unit="GB/s")
    assert judge_baseline(figure_groups(other_unit), b) == []
    # only the slow half: the finding names the nodes past the limit
    half = fleet_of(4, {1: [300.0] * 8, 2: [300.0] * 8, 3: [350.0] * 8})
    f, = judge_baseline(figure_groups(half), b)
    assert f.nodes == ["gpu-001", "gpu-002", "gpu-003"]


def test_lower_is_better_baselines_flag_a_rise():
    def lat(v: float) -> list[NodeReport]:
        return [node(f"n{i}", [v], check="storage.metadata.p50", unit="ms", subjects=["/scratch"]) for i in (1, 2)]

    b = baselines.from_report(report_of(lat(2.0)), "prod")
    assert judge_baseline(figure_groups(lat(2.05)), b) == []
    f, = judge_baseline(figure_groups(lat(2.5)), b)
    assert f.check == "fleet.baseline.storage.metadata.p50" and "+25.0%" in f.message


def test_baselines_round_trip_through_the_store(tmp_path):
    b = baselines.from_report(report_of(fleet_of(4)), "prod")
    d = tmp_path / "bl"
    path = baselines.save(b, str(d))
    assert path == str(d / "prod.json") and os.listdir(d) == ["prod.json"]  # no temporary file left
    doc = json.loads((d / "prod.json").read_text())
    assert doc["schema"] == "clusterkit.baseline/v1" and doc["nodes"] == 4 and doc["clusterkit_version"]
    assert set(doc["profiles"]["h100-sxm"]["ib.write_bw"]) == {"median", "unit", "direction", "nodes", "samples"}
    assert baselines.load("prod", str(d)) == b
    assert baselines.load(path) == b  # a file path
    assert baselines.entries(str(d)) == [("prod", path)]
    with pytest.raises(UsageError, match="exists .*--force"):
        baselines.save(b, str(d))
    b2 = b.model_copy(update={"source": "again"})
    baselines.save(b2, str(d), force=True)
    assert baselines.load("prod", str(d)).source == "again"


def test_bad_baselines_are_one_clear_usage_error(tmp_path):
    d = tmp_path / "bl"
    d.mkdir()
    with pytest.raises(UsageError, match=r"no baseline named 'nope' in .* \(none saved there"):
        baselines.load("nope", str(d))
    with pytest.raises(UsageError, match="baseline name"):
        baselines.load("no good", str(d))
    with pytest.raises(UsageError, match="no such file"):
        baselines.load(str(tmp_path / "missing.json"))
    cases = {
        "garbage.json": ("{not json", "not JSON"),
        "report.json": (json.dumps({"schema": "clusterkit.report/v1"}), "not a clusterkit baseline"),
        "v2.json": (json.dumps({"schema": "clusterkit.baseline/v2", "name": "x"}), "schema clusterkit.baseline/v2"),
        "nan.json": ('{"schema": "clusterkit.baseline/v1", "name": "x", "profiles": {"h100-sxm": {"ib.write_bw": '
                     '{"median": NaN, "direction": "higher", "nodes": 1, "samples": 1}}}}',
                     "profiles.h100-sxm.ib.write_bw.median"),
        "dir.json": ('{"schema": "clusterkit.baseline/v1", "name": "x", "profiles": {"h100-sxm": {"ib.write_bw": '
                     '{"median": 1, "direction": "sideways", "nodes": 1, "samples": 1}}}}', "direction"),
    }
    for fname, (text, msg) in cases.items():
        (tmp_path / fname).write_text(text)
        with pytest.raises(UsageError, match=msg.replace(".", r"\.")):
            baselines.load(str(tmp_path / fname))
    # a newer minor version with fields this version does not know is read
    (tmp_path / "minor.json").write_text(json.dumps({"schema": "clusterkit.baseline/v1.3", "name": "x", "new": 1}))
    assert baselines.load(str(tmp_path / "minor.json")).name == "x"


def test_where_baselines_live(monkeypatch, tmp_path):
    monkeypatch.setenv("CLUSTERKIT_BASELINE_DIR", str(tmp_path / "env"))
    assert baselines.default_dir() == str(tmp_path / "env")
    monkeypatch.delenv("CLUSTERKIT_BASELINE_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert baselines.default_dir() == str(tmp_path / "xdg" / "clusterkit" / "baselines")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert baselines.default_dir() == str(tmp_path / "home" / ".local" / "share" / "clusterkit" / "baselines")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert baselines.default_dir() == "/var/lib/clusterkit/baselines"
    assert baselines.is_file_spec("./prod") and baselines.is_file_spec("prod.json")
    assert not baselines.is_file_spec("prod")


def test_a_report_without_figures_makes_an_empty_baseline():
    b = baselines.from_report(report_of([node("n1", [80.0], check="gpu.temperature", unit="C")]), "x")
    assert b.profiles == {} and b.nodes == 0
