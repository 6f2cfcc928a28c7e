"""Judging nccl-tests runs (``nccl check``): every recorded nccl-tests fixture with the statuses
and figures read from the files themselves, and constructed variants of them for what the
recordings do not show (wrong elements, values out of bounds, a crash midway, a cut-off log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterkit.models import Status
from clusterkit.nccl import judge
from clusterkit.parsers.nccl_tests import parse_nccl_tests
from clusterkit.profiles import load_profile, parse_profile

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "nccl-tests"
H100 = load_profile("h100-sxm")
H200 = load_profile("h200-sxm")

AR_SINGLE = "all_reduce_perf_h100x8_single_node_v2.17.8.txt"
AR_DGX_OLD = "all_reduce_perf_4x_dgx_a100_ib_old_format_error_column.txt"
AR_ROCE_OLD = "all_reduce_perf_roce_k8s_old_format_erratic_latency.txt"
A2A_FAIL = "alltoall_perf_2x1_h100_failure_after_header_v2.17.6.txt"
MULTI = "multi_node_10x8_h100_5tests_v2.17.8.txt"


def text(name: str) -> str:
    return (FIX / name).read_text()


def judged(name_or_text: str, profile=H100, **kw) -> list:
    t = text(name_or_text) if name_or_text.endswith(".txt") else name_or_text
    return judge.judge_output(parse_nccl_tests(t), profile, **kw)


def by_id(checks: list) -> dict:
    out = {}
    for c in checks:
        assert c.check not in out, f"{c.check} twice: use by_subject"
        out[c.check] = c
    return out


def table(checks: list) -> list[tuple]:
    return [(c.check, c.status.value, c.value, c.threshold) for c in checks]


# --------------------------------------------------------------------------- every fixture
#: every nccl-tests recording, with the statuses and figures each gets against h100-sxm
#: (busbw: the out-of-place column of the 8 GiB row, or of the largest row below 8 GiB)
EXPECTED = {
    "all_gather_perf_h100x8_single_node_v2.17.8.txt": (0, [
        ("nccl.allgather.run", "pass", "complete", None),
        ("nccl.allgather.wrong", "pass", 0, 0),
        ("nccl.allgather.busbw", "pass", 359.14, None)]),
    "all_gather_perf_h200_2node_1gpu_gpudirect_rdma.txt": (0, [
        ("nccl.allgather.run", "pass", "complete", None),
        ("nccl.allgather.wrong", "pass", 0, 0),
        ("nccl.allgather.busbw", "pass", 32.20, None)]),
    # old format: no hosts, no ranks; busbw/algbw = 191.05/98.61 = 2(n-1)/n -> 32 ranks: 4 nodes;
    # the largest row is 4 GiB; no #wrong column, 'Out of bounds values : 0 OK'
    AR_DGX_OLD: (1, [
        ("nccl.allreduce.run", "pass", "complete", None),
        ("nccl.allreduce.wrong", "pass", 0, 0),
        ("nccl.allreduce.busbw", "fail", 191.05, 330)]),
    AR_SINGLE: (0, [
        ("nccl.allreduce.run", "pass", "complete", None),
        ("nccl.allreduce.wrong", "pass", 0, 0),
        ("nccl.allreduce.busbw", "pass", 481.39, 440)]),
    # old format up to 2 GiB; 22.92/12.22 -> 16 ranks
    AR_ROCE_OLD: (1, [
        ("nccl.allreduce.run", "pass", "complete", None),
        ("nccl.allreduce.wrong", "pass", 0, 0),
        ("nccl.allreduce.busbw", "fail", 22.92, 330)]),
    A2A_FAIL: (3, [
        ("nccl.alltoall.run", "error", "init", None)]),
    "alltoall_perf_h100x8_single_node_v2.17.8.txt": (0, [
        ("nccl.alltoall.run", "pass", "complete", None),
        ("nccl.alltoall.wrong", "pass", 0, 0),
        ("nccl.alltoall.busbw", "pass", 346.23, None)]),
    MULTI: (1, [
        ("nccl.allreduce.run", "pass", "complete", None),
        ("nccl.allreduce.wrong", "pass", 0, 0),
        ("nccl.allreduce.busbw", "fail", 316.32, 330),
        ("nccl.allgather.run", "pass", "complete", None),
        ("nccl.allgather.wrong", "pass", 0, 0),
        ("nccl.allgather.busbw", "pass", 317.41, None),
        ("nccl.reducescatter.run", "pass", "complete", None),
        ("nccl.reducescatter.wrong", "pass", 0, 0),
        ("nccl.reducescatter.busbw", "pass", 315.75, None),
        ("nccl.alltoall.run", "pass", "complete", None),
        ("nccl.alltoall.wrong", "pass", 0, 0),
        ("nccl.alltoall.busbw", "pass", 50.54, None),
        ("nccl.sendrecv.run", "pass", "complete", None),
        ("nccl.sendrecv.wrong", "pass", 0, 0),
        ("nccl.sendrecv.busbw", "pass", 15.23, None)]),
    "reduce_scatter_perf_h100x8_single_node_v2.17.8.txt": (0, [
        ("nccl.reducescatter.run", "pass", "complete", None),
        ("nccl.reducescatter.wrong", "pass", 0, 0),
        ("nccl.reducescatter.busbw", "pass", 361.36, None)]),
    "sendrecv_perf_h100x8_single_node_v2.17.8.txt": (0, [
        ("nccl.sendrecv.run", "pass", "complete", None),
        ("nccl.sendrecv.wrong", "pass", 0, 0),
        ("nccl.sendrecv.busbw", "pass", 367.04, None)]),
}


def test_every_recorded_fixture_is_judged_here():
    assert sorted(p.name for p in FIX.iterdir() if p.is_file()) == sorted(EXPECTED)
    shared = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "nccl-tests"
    if shared.is_dir():  # the project's shared recordings: the same set
        assert sorted(p.name for p in shared.iterdir() if p.is_file()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_statuses_and_figures(name):
    rc, expected = EXPECTED[name]
    checks = judged(name)
    assert table(checks) == expected
    assert judge.exit_code(checks) == rc
    for c in checks:
        if c.check.endswith(".busbw"):
            assert c.unit == "GB/s"


def test_single_node_all_reduce_subject_and_nvls_floor():
    c = by_id(judged(AR_SINGLE))
    assert c["nccl.allreduce.busbw"].subject == "all_reduce 8 ranks on cnode3-002"
    msg = c["nccl.allreduce.busbw"].message
    assert "481.39 GB/s at 8 GiB" in msg and "floor 440 GB/s" in msg and "one node, NVLS" in msg
    assert c["nccl.allreduce.run"].message == "completed: 10 sizes 32 MiB..16 GiB"


def test_single_node_ring_floor_and_the_h200_profile():
    ring = by_id(judged(AR_SINGLE, algo="ring"))["nccl.allreduce.busbw"]
    assert (ring.status, ring.threshold) == (Status.PASS, 340)
    assert "one node, ring" in ring.message
    h200 = by_id(judged(AR_SINGLE, H200))["nccl.allreduce.busbw"]
    assert (h200.status, h200.threshold) == (Status.PASS, 431)


def test_mode_override_judges_the_single_node_log_against_the_multi_node_floor():
    c = by_id(judged(AR_SINGLE, mode="multi"))["nccl.allreduce.busbw"]
    assert (c.status, c.threshold) == (Status.PASS, 330)
    assert "--mode multi" in c.message


def test_old_format_four_dgx_nodes_inferred_from_the_busbw_algbw_ratio():
    run = parse_nccl_tests(text(AR_DGX_OLD)).runs[0]
    assert run.nranks is None and judge.hosts_of(run) == []
    assert judge.ranks_from_ratio(run) == 32
    assert judge.judge_mode(run, gpus=8) == ("multi", "32 ranks (from busbw/algbw), more than one 8-GPU node")
    c = by_id(judged(AR_DGX_OLD))
    busbw = c["nccl.allreduce.busbw"]
    assert busbw.subject == "all_reduce ~32 ranks"
    assert "191.05 GB/s at 4 GiB (the largest row below 8 GiB)" in busbw.message
    assert "below the floor 330 GB/s (several nodes" in busbw.message
    wrong = c["nccl.allreduce.wrong"]
    assert "maximum error 1e-06" in wrong.message and "#wrong not reported" in wrong.message
    # the same log on one node (--mode single) meets the NVLS floor: fail too
    single = by_id(judged(AR_DGX_OLD, mode="single"))["nccl.allreduce.busbw"]
    assert (single.status, single.threshold) == (Status.FAIL, 440)


def test_old_format_roce_run_is_sixteen_ranks_judged_at_two_gib():
    run = parse_nccl_tests(text(AR_ROCE_OLD)).runs[0]
    assert judge.ranks_from_ratio(run) == 16
    c = by_id(judged(AR_ROCE_OLD))
    assert "22.92 GB/s at 2 GiB (the largest row below 8 GiB)" in c["nccl.allreduce.busbw"].message
    assert "maximum error 5e-07" in c["nccl.allreduce.wrong"].message


def test_failure_after_header_is_an_error_naming_the_node_and_cause():
    (c,) = judged(A2A_FAIL)
    assert c.check == "nccl.alltoall.run" and c.status is Status.ERROR
    assert c.subject == "alltoall 2 ranks on cnode2-[005,016]"
    assert "failed on cnode2-016 before any result row" in c.message
    assert "alltoall.cu:274 'remote process exited or there was a network error" in c.message
    assert judge.failed_node(parse_nccl_tests(text(A2A_FAIL)).runs[0]) == "cnode2-016"


def test_multi_node_log_judges_every_run_with_numbered_subjects():
    checks = judged(MULTI)
    subjects = list(dict.fromkeys(c.subject for c in checks))
    assert subjects == [f"run {i} {name} 80 ranks on cnode3-[002-011]" for i, name in
                        enumerate(["all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv"], 1)]
    ar = checks[2]
    assert ar.check == "nccl.allreduce.busbw" and "several nodes: 10 nodes" in ar.message
    ag = checks[5]
    assert "at ~8 GiB (8589934080 B, the largest row below 8 GiB)" in ag.message


def test_expected_node_count():
    ok = [c for c in judged(MULTI, nodes=10) if c.check.endswith(".ranks")]
    assert [(c.status, c.value, c.threshold) for c in ok] == [(Status.PASS, 10, 10)] * 5
    (warn,) = [c for c in judged(AR_SINGLE, nodes=2) if c.check.endswith(".ranks")]
    assert (warn.check, warn.status, warn.value, warn.threshold) == ("nccl.allreduce.ranks", Status.WARN, 1, 2)
    assert judge.exit_code(judged(AR_SINGLE, nodes=2)) == 0
    (unknown,) = [c for c in judged(AR_DGX_OLD, nodes=4) if c.check.endswith(".ranks")]
    assert unknown.status is Status.SKIP
    # --nodes decides the mode of a log without hosts: 4 nodes -> the multi-node floor
    busbw = by_id([c for c in judged(AR_DGX_OLD, nodes=4) if not c.check.endswith(".ranks")])["nccl.allreduce.busbw"]
    assert busbw.threshold == 330 and "--nodes 4" in busbw.message


# --------------------------------------------------------------------------- constructed variants
def test_wrong_elements_fail_as_data_corruption():
    t = text(AR_SINGLE).replace("481.39       0", "481.39      12")
    c = by_id(judged(t))
    w = c["nccl.allreduce.wrong"]
    assert (w.status, w.value, w.threshold, w.unit) == (Status.FAIL, 12, 0, "elements")
    assert "12 wrong element(s) at 8 GiB" in w.message and "data corruption" in w.message
    assert c["nccl.allreduce.busbw"].status is Status.PASS  # busbw is its own verdict
    assert judge.exit_code(list(c.values())) == 1


def test_out_of_bounds_values_fail_even_without_a_wrong_column():
    t = text(AR_DGX_OLD).replace("# Out of bounds values : 0 OK", "# Out of bounds values : 3 FAILED")
    w = by_id(judged(t))["nccl.allreduce.wrong"]
    assert (w.status, w.value, w.unit) == (Status.FAIL, 3, "values")


def test_crash_midway_is_error_and_busbw_is_not_judged_on_a_partial_table():
    lines = text(AR_SINGLE).splitlines()
    cut = next(i for i, ln in enumerate(lines) if ln.strip().startswith("1073741824"))
    t = "\n".join(lines[:cut + 1] + [
        "cnode3-002: Test CUDA failure common.cu:892 'an illegal memory access was encountered'",
        " .. cnode3-002 pid 4180122: Test failure common.cu:1100"]) + "\n"
    c = by_id(judged(t))
    run = c["nccl.allreduce.run"]
    assert (run.status, run.value) == (Status.ERROR, "crash")
    assert "failed on cnode3-002 after 6 result row(s), at 1 GiB" in run.message
    assert "illegal memory access" in run.message
    assert "nccl.allreduce.busbw" not in c
    assert c["nccl.allreduce.wrong"].status is Status.PASS  # the rows it printed were right
    assert judge.exit_code(list(c.values())) == 3


def test_init_failure_before_any_row_names_the_node():
    t = ("# nccl-tests version 2.17.8 nccl-headers=22902 nccl-library=22902\n"
         "# Collective test starting: all_reduce_perf\n"
         "# nThread 1 nGpus 1 minBytes 8589934592 maxBytes 8589934592 step: 2(factor) warmup iters: 5 iters: 20 "
         "agg iters: 1 validation: 1 graph: 0\n#\n"
         "gpu-007: Test NCCL failure common.cu:1279 'unhandled system error "
         "(run with NCCL_DEBUG=INFO for details) / '\n"
         " .. gpu-007 pid 4242: Test failure common.cu:1100\n")
    (c,) = judged(t)
    assert (c.check, c.status, c.value) == ("nccl.allreduce.run", Status.ERROR, "init")
    assert "failed on gpu-007 before any result row" in c.message and "unhandled system error" in c.message


def test_cut_off_output_is_incomplete_error():
    lines = text(MULTI).splitlines()
    cut = next(i for i, ln in enumerate(lines) if ln.strip().startswith("536870912"))
    checks = judged("\n".join(lines[:cut + 1]) + "\n")
    c = by_id(checks)
    assert (c["nccl.allreduce.run"].status, c["nccl.allreduce.run"].value) == (Status.ERROR, "incomplete")
    assert "did not finish after 5 result row(s)" in c["nccl.allreduce.run"].message
    assert judge.exit_code(checks) == 3


def test_json_output_is_judged_like_text():
    t = ('{"nccl_version": 22902, "args": ["./all_reduce_perf"], '
         '"config": {"nthreads": 1, "ngpus": 8, "minimum_bytes": 8589934592, "maximum_bytes": 8589934592}, '
         '"results": [{"size": 8589934592, "count": 1073741824, "type": "double", "redop": "sum", "root": -1, '
         '"out_of_place": {"time": 33000.0, "alg_bw": 260.3, "bus_bw": 455.5, "nwrong": 0}, '
         '"in_place": {"time": 33000.0, "alg_bw": 260.3, "bus_bw": 455.5, "nwrong": 0}}], '
         '"out_of_bounds": {"count": 0, "okay": true}, "average_bus_bandwidth": {"bandwidth": 455.5}}')
    c = by_id(judged(t))
    # no device lines: 8 ranks from busbw/algbw (455.5/260.3 = 1.75 = 2*7/8) -> one node
    assert (c["nccl.allreduce.busbw"].status, c["nccl.allreduce.busbw"].threshold) == (Status.PASS, 440)


def test_no_row_at_or_below_the_judged_size_is_error():
    prof = parse_profile("name: tiny\ngpu: {count: 8}\nnccl: {message_bytes: 1024, single_nvls_gbps_min: 400}\n",
                         "tiny")
    b = by_id(judged(AR_SINGLE, prof))["nccl.allreduce.busbw"]
    assert b.status is Status.ERROR and "no result row at or below 1 KiB (the smallest is 32 MiB)" in b.message


def test_no_floor_passes_with_the_figure():
    prof = parse_profile("name: bare\ngpu: {count: 8}\n", "bare")
    b = by_id(judged(AR_SINGLE, prof))["nccl.allreduce.busbw"]
    assert (b.status, b.value, b.threshold) == (Status.PASS, 481.39, None)
    assert "no floor" in b.message


def test_mode_unknown_is_error_not_fail():
    prof = parse_profile("name: nogpu\nnccl: {multi_gbps_min: 330, single_nvls_gbps_min: 440}\n", "nogpu")
    b = by_id(judged(AR_DGX_OLD, prof))["nccl.allreduce.busbw"]
    assert b.status is Status.ERROR and "give --mode or --nodes" in b.message
    assert by_id(judged(AR_DGX_OLD, prof, mode="multi"))["nccl.allreduce.busbw"].status is Status.FAIL


def test_check_prefix_and_size_helpers():
    assert judge.check_prefix("all_reduce") == "nccl.allreduce"
    assert judge.check_prefix("reduce_scatter") == "nccl.reducescatter"
    assert judge.check_prefix(None) == "nccl.unknown"
    run = parse_nccl_tests(text(AR_SINGLE)).runs[0]
    assert judge.busbw_at(run, 8 * 1024**3) == 481.39
    assert judge.busbw_at(run, 12 * 1024**3) == 481.39  # largest row below
    assert judge.row_at(run, 1024) is None
