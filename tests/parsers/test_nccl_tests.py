"""nccl-tests parser: every recorded fixture, failure handling, -J JSON, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers import get_parser
from clusterkit.parsers.nccl_tests import parse_nccl_tests
from tests.parsers.fuzz import mutated, check_fuzzed
from tests.parsers.cli import run_parse as _cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nccl-tests"
ALL_REDUCE = FIXTURES / "all_reduce_perf_h100x8_single_node_v2.17.8.txt"
ALL_GATHER = FIXTURES / "all_gather_perf_h100x8_single_node_v2.17.8.txt"
ALLTOALL = FIXTURES / "alltoall_perf_h100x8_single_node_v2.17.8.txt"
REDUCE_SCATTER = FIXTURES / "reduce_scatter_perf_h100x8_single_node_v2.17.8.txt"
SENDRECV = FIXTURES / "sendrecv_perf_h100x8_single_node_v2.17.8.txt"
H200_RDMA = FIXTURES / "all_gather_perf_h200_2node_1gpu_gpudirect_rdma.txt"
OLD_A100 = FIXTURES / "all_reduce_perf_4x_dgx_a100_ib_old_format_error_column.txt"
OLD_ROCE = FIXTURES / "all_reduce_perf_roce_k8s_old_format_erratic_latency.txt"
FAILURE = FIXTURES / "alltoall_perf_2x1_h100_failure_after_header_v2.17.6.txt"
MULTI = FIXTURES / "multi_node_10x8_h100_5tests_v2.17.8.txt"


def parse_file(path: Path):
    return parse_nccl_tests(path.read_text())


def test_registry_points_here():
    assert get_parser("nccl-tests") is parse_nccl_tests


# --------------------------------------------------------------------------- recorded fixtures
def test_all_reduce_h100x8_v2_17_8():
    out = parse_file(ALL_REDUCE)
    assert out.format == "text"
    assert len(out.runs) == 1
    run = out.runs[0]
    assert run.collective == "all_reduce" and not run.collective_inferred
    assert run.test == "all_reduce_perf"
    assert run.nranks == 8
    assert run.nccl_tests_version == "2.17.8"
    assert run.nccl_version == "2.29.2"  # nccl-library=22902
    cfg = run.config
    assert (cfg.nthread, cfg.ngpus, cfg.min_bytes, cfg.max_bytes) == (1, 1, 33554432, 68719476736)
    assert (cfg.step, cfg.step_kind) == (2, "factor")
    assert (cfg.warmup_iters, cfg.iters, cfg.agg_iters, cfg.validation, cfg.graph) == (5, 20, 1, 1, 0)
    assert run.max_bytes_reduced_to == 26549638485
    dev = run.devices[3]
    assert (dev.rank, dev.group, dev.pid, dev.host, dev.device, dev.busid, dev.name) == (
        3, 0, 4180129, "cnode3-002", 3, "0000:61:00", "NVIDIA H100 80GB HBM3")
    assert len(run.rows) == 10
    last = run.rows[-1]
    assert (last.size_bytes, last.count, last.type, last.redop, last.root) == (
        17179869184, 2147483648, "double", "sum", -1)
    assert last.out_of_place.time_us == 62340.7
    assert last.out_of_place.algbw_gbps == 275.58
    assert last.out_of_place.busbw_gbps == 482.27
    assert last.out_of_place.wrong == 0
    assert last.in_place.time_us == 62359.0
    assert last.in_place.busbw_gbps == 482.12
    assert run.rows[0].out_of_place.busbw_gbps == 321.10
    assert run.avg_busbw_gbps == 437.957
    assert run.peak_busbw_gbps == 482.27
    assert (run.out_of_bounds, run.out_of_bounds_ok) == (0, True)
    assert run.wrong_total == 0
    assert run.complete and run.error is None and run.ok


@pytest.mark.parametrize(
    "path, collective, avg, first_busbw, redop",
    [
        (ALL_GATHER, "all_gather", 328.618, 237.85, "none"),
        (REDUCE_SCATTER, "reduce_scatter", 330.721, 262.55, "sum"),
        (ALLTOALL, "alltoall", 313.838, 235.28, "none"),
        (SENDRECV, "sendrecv", 279.874, 79.48, "sum"),
    ],
)
def test_single_node_other_collectives(path, collective, avg, first_busbw, redop):
    (run,) = parse_file(path).runs
    assert run.collective == collective
    assert run.nranks == 8
    assert run.avg_busbw_gbps == avg
    assert len(run.rows) == 10
    assert run.rows[0].size_bytes == 33554432
    assert run.rows[0].out_of_place.busbw_gbps == first_busbw
    assert run.rows[0].redop == redop
    assert run.ok


@pytest.mark.parametrize("path", [ALLTOALL, SENDRECV])
def test_in_place_wrong_na_is_null(path):
    (run,) = parse_file(path).runs
    assert all(r.in_place.wrong is None for r in run.rows)  # printed 'N/A'
    assert all(r.out_of_place.wrong == 0 for r in run.rows)
    assert run.wrong_total == 0


def test_sendrecv_busbw_equals_algbw():
    (run,) = parse_file(SENDRECV).runs
    row = run.rows[2]  # 134217728 bytes: 162.54 / 162.54
    assert row.out_of_place.algbw_gbps == row.out_of_place.busbw_gbps == 162.54


def test_h200_two_nodes_stray_nccl_version_line_and_no_version_header():
    (run,) = parse_file(H200_RDMA).runs
    assert run.nccl_tests_version is None
    assert run.nccl_version == "2.25.1"  # from the stray 'NCCL version 2.25.1+cuda12.8' line
    assert run.nranks == 2
    assert [d.host for d in run.devices] == ["nccl-gib-test-0", "nccl-gib-test-1"]
    assert [d.pid for d in run.devices] == [85, 54]
    assert run.config.warmup_iters == 50 and run.config.iters == 100
    assert len(run.rows) == 24
    assert run.rows[0].size_bytes == 1024
    last = run.rows[-1]
    assert last.size_bytes == 8589934592 and last.count == 1073741824 and last.type == "float"
    assert last.out_of_place.time_us == 133370 and last.out_of_place.busbw_gbps == 32.20
    assert last.in_place.busbw_gbps == 33.32
    assert run.avg_busbw_gbps == 15.0709
    # no 'Collective test starting' line: inferred from the table (redop none, bytes/elem = 2x4)
    assert run.collective == "all_gather" and run.collective_inferred
    assert run.ok


def test_old_format_error_column_dgx_a100():
    (run,) = parse_file(OLD_A100).runs
    assert run.config is None and run.devices == [] and run.nranks is None
    assert len(run.rows) == 13
    first = run.rows[0]
    assert first.root is None
    assert (first.size_bytes, first.count, first.type, first.redop) == (1048576, 262144, "float", "sum")
    assert first.out_of_place.max_error == 7e-07 and first.out_of_place.wrong is None
    assert first.in_place.busbw_gbps == 15.31
    big = next(r for r in run.rows if r.size_bytes == 4294967296)
    assert big.out_of_place.busbw_gbps == 191.05
    assert big.out_of_place.time_us == 43557
    assert big.in_place.max_error == 1e-06
    assert run.wrong_total is None  # the old format has no element counts
    assert run.avg_busbw_gbps == 113.289
    assert run.collective == "all_reduce" and run.collective_inferred  # busbw/algbw = 1.94
    assert run.ok


def test_old_format_roce_erratic_latency():
    (run,) = parse_file(OLD_ROCE).runs
    assert len(run.rows) == 29
    assert run.rows[0].size_bytes == 8 and run.rows[0].out_of_place.time_us == 2193.5
    assert run.rows[1].in_place.time_us == 576.2
    assert run.rows[0].out_of_place.max_error == 2e-07
    assert run.rows[-1].size_bytes == 2147483648 and run.rows[-1].out_of_place.busbw_gbps == 22.92
    assert run.avg_busbw_gbps == 7.76739
    assert run.ok


def test_failed_alltoall_is_a_run_with_error_not_an_exception():
    (run,) = parse_file(FAILURE).runs
    assert run.collective == "alltoall"
    assert run.nccl_tests_version == "2.17.6" and run.nccl_version == "2.28.7"
    assert run.nranks == 2
    assert run.rows == []
    assert "Test NCCL failure alltoall.cu:274" in run.error
    assert "remote process exited or there was a network error" in run.error
    assert len(run.failures) == 7
    assert run.failures[-1] == "cnode2-016 pid 340134: Test failure common.cu:1100"
    assert run.avg_busbw_gbps is None and not run.complete and not run.ok


def test_multi_node_log_gives_one_run_per_test():
    out = parse_file(MULTI)
    assert [r.collective for r in out.runs] == [
        "all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv"]
    assert [r.avg_busbw_gbps for r in out.runs] == [265.631, 218.677, 216.683, 47.1472, 15.1671]
    for run in out.runs:
        assert run.nranks == 80
        assert len(run.devices) == 80
        assert len(run.rows) == 10
        assert run.ok
    assert out.runs[0].devices[40].host == "cnode3-007"
    assert out.runs[0].devices[79].pid == 1607276
    assert out.runs[1].devices[79].pid == 1608586
    assert out.runs[1].rows[0].size_bytes == 33553920
    assert out.runs[0].peak_busbw_gbps == 364.07
    assert all(r.in_place.wrong is None for r in out.runs[3].rows)


def test_e_notation_and_nranks_in_header():
    # nccl-tests prints times that do not fit 7 characters in e-notation (constructed edit)
    text = OLD_A100.read_text().replace("    43557   98.61", "  4.4e+07   98.61")
    (run,) = parse_nccl_tests(text).runs
    assert run.rows[-1].out_of_place.time_us == 4.4e07
    # a header that states nranks (some builds) is used when there are no device lines
    text = "# nThread 1 nGpus 8 nranks 32 minBytes 8 maxBytes 128 step: 2(factor)\n" + OLD_A100.read_text()
    (run,) = parse_nccl_tests(text).runs
    assert run.nranks == 32 and run.config.ngpus == 8


def test_crlf_and_tabs_parse_the_same():
    text = ALL_REDUCE.read_text()
    mangled = text.replace("\n", "\r\n").replace("    ", "\t")
    assert parse_nccl_tests(mangled).runs == parse_nccl_tests(text).runs


def test_summary_is_short_and_names_the_numbers():
    s = parse_file(MULTI).summary()
    assert len(s.splitlines()) == 5
    assert "all_reduce (80 ranks)" in s and "265.631" in s
    assert "Test NCCL failure" in parse_file(FAILURE).summary()


# --------------------------------------------------------------------------- failure shapes
def _head(path: Path, n: int) -> str:
    return "".join(path.read_text().splitlines(keepends=True)[:n])


def test_failure_printed_after_a_row_preamble():
    # Constructed from the all_reduce fixture: the header, then a size whose collective failed
    # (nccl-tests prints the failure right after the row's first columns, on the same line).
    text = _head(ALL_REDUCE, 19) + (
        "    33554432       4194304    double     sum      -1cnode3-002: Test NCCL failure "
        "common.cu:1005 'unhandled cuda error (run with NCCL_DEBUG=INFO for details) / '\n"
        " .. cnode3-002 pid 4180122: Test failure common.cu:1100\n"
    )
    (run,) = parse_nccl_tests(text).runs
    assert run.rows == []
    assert "unhandled cuda error" in run.error
    assert len(run.failures) == 2 and not run.ok


def test_init_failure_alone_is_recognised():
    text = "gpu-node1: Test CUDA failure common.cu:891 'out of memory'\n"
    (run,) = parse_nccl_tests(text).runs
    assert run.error == "gpu-node1: Test CUDA failure common.cu:891 'out of memory'"


def test_nccl_warn_in_unfinished_run_becomes_the_error():
    text = _head(ALL_REDUCE, 19) + (
        "gpu-node1:4180122:4180200 [0] misc/socket.cc:50 NCCL WARN "
        "socketProgress: Connection closed by remote peer\n"
    )
    (run,) = parse_nccl_tests(text).runs
    assert run.warnings == ["socketProgress: Connection closed by remote peer"]
    assert run.error.startswith("NCCL WARN socketProgress")


def test_truncated_output_is_incomplete_not_an_exception():
    lines = ALL_REDUCE.read_text().splitlines(keepends=True)
    text = "".join(lines[:22]) + lines[22][:30]  # cut inside the 4th data row
    (run,) = parse_nccl_tests(text).runs
    assert len(run.rows) == 3
    assert not run.complete and not run.ok
    assert "incomplete" in run.error


def test_wrong_elements_and_failed_avg_check_make_the_run_not_ok():
    text = ALL_REDUCE.read_text()
    row = ("    33554432       4194304    double     sum      -1"
           "   182.87  183.49  321.10       0   182.88  183.48  321.08       0")
    bad_row = row[:-1] + "7"  # in-place #wrong 7
    assert row in text
    (run,) = parse_nccl_tests(text.replace(row, bad_row)).runs
    assert run.rows[0].in_place.wrong == 7 and run.wrong_total == 7 and not run.ok
    (run,) = parse_nccl_tests(text.replace("437.957 ", "437.957 FAILED")).runs
    assert run.avg_busbw_ok is False and not run.ok


def test_malformed_row_in_the_middle_is_a_parse_error_quoting_it():
    lines = ALL_REDUCE.read_text().splitlines(keepends=True)
    lines[22] = ("   134217728      16777216    double     sum      -1"
                 "   564.78  2x7.64  415.88       0   564.84  237.62  415.83       0\n")
    with pytest.raises(ParseError) as exc:
        parse_nccl_tests("".join(lines))
    assert exc.value.line_no == 23
    assert "2x7.64" in str(exc.value)


@pytest.mark.parametrize("text", [
    "",
    "\n\n",
    "CA 'mlx5_0'\n\tCA type: MT4129\n\tNumber of ports: 1\n",
    "hello world\n",
])
def test_not_nccl_tests_output(text):
    with pytest.raises(ParseError):
        parse_nccl_tests(text)


# --------------------------------------------------------------------------- -J JSON
def _json_sample() -> dict:
    """A constructed sample of the -J file (layout of nccl-tests' JSON writer, format version 2),
    filled with the first two rows of the all_reduce fixture. Not a recorded output."""
    return {
        "version": 2,
        "start_time": "2026-01-28 14:50:17",
        "args": ["/opt/nccl-tests/build/all_reduce_perf", "-b", "32M", "-e", "64M", "-J", "r.json"],
        "env": ["NCCL_DEBUG=WARN"],
        "nccl_version": 22902,
        "config": {
            "nthreads": 1, "ngpus": 1, "minimum_bytes": 33554432, "maximum_bytes": 67108864,
            "step_factor": 2, "warmup_iters": 5, "iterations": 20, "aggregated_iterations": 1,
            "validation": 1, "graph": 0, "blocking_collectives": "false",
            "per_iter_timing": "false", "parallel_init": "false",
            "devices": [
                {"rank": i, "group": 0, "pid": 4180122 + i, "hostname": "cnode3-002", "device": i,
                 "device_hex": "0000:1b:00", "device_info": "NVIDIA H100 80GB HBM3"}
                for i in range(8)
            ],
        },
        "results": [
            {"size": 33554432, "count": 4194304, "type": "double", "redop": "sum", "root": "    -1",
             "out_of_place": {"time": 182.87, "alg_bw": 183.49, "bus_bw": 321.10, "nwrong": 0.0},
             "in_place": {"time": 182.88, "alg_bw": 183.48, "bus_bw": 321.08, "nwrong": 0.0},
             "actual_iterations": 20, "experiment_name": ""},
            {"size": "64 MB", "count": 8388608, "type": "double", "redop": "sum", "root": "    -1",
             "out_of_place": {"time": 313.66, "alg_bw": 213.95, "bus_bw": 374.42, "nwrong": 0.0},
             "in_place": {"time": 313.52, "alg_bw": 214.05, "bus_bw": 374.58, "nwrong": None},
             "actual_iterations": 20, "experiment_name": ""},
        ],
        "out_of_bounds": {"count": 0, "okay": "true"},
        "average_bus_bandwidth": {"bandwidth": 347.795, "okay": "unchecked"},
        "errors": [""],
        "end_time": "2026-01-28 14:50:19",
    }


def test_json_output():
    out = parse_nccl_tests(json.dumps(_json_sample(), indent=2))
    assert out.format == "json"
    (run,) = out.runs
    assert run.collective == "all_reduce" and run.test == "all_reduce_perf"
    assert run.nccl_version == "2.29.2"
    assert run.nranks == 8 and run.devices[7].pid == 4180129
    assert run.devices[0].busid == "0000:1b:00" and run.devices[0].host == "cnode3-002"
    assert run.config.max_bytes == 67108864 and run.config.step_kind == "factor"
    assert [r.size_bytes for r in run.rows] == [33554432, 67108864]  # '64 MB' -> bytes
    assert run.rows[0].root == -1
    assert run.rows[1].out_of_place.busbw_gbps == 374.42
    assert run.rows[1].in_place.wrong is None
    assert run.avg_busbw_gbps == 347.795 and run.avg_busbw_ok is None
    assert run.out_of_bounds == 0 and run.out_of_bounds_ok is True
    assert run.wrong_total == 0 and run.error is None and run.ok


def test_json_with_error_and_no_footer():
    doc = _json_sample()
    del doc["average_bus_bandwidth"], doc["out_of_bounds"]
    doc["results"] = doc["results"][:1]
    doc["errors"] = ["remote process exited or there was a network error"]
    (run,) = parse_nccl_tests(json.dumps(doc)).runs
    assert run.error == "remote process exited or there was a network error"
    assert not run.ok and not run.complete


def test_json_that_is_not_nccl_tests():
    dcgmi = (FIXTURES.parent / "dcgmi" / "dcgmi_diag_r3_json_tesla_t4_pass.json").read_text()
    with pytest.raises(ParseError):
        parse_nccl_tests(dcgmi)
    with pytest.raises(ParseError) as exc:
        parse_nccl_tests('{"config": {"nthreads": 1},\n "results": [ }')
    assert exc.value.line_no == 2


# --------------------------------------------------------------------------- fuzzing
FIXTURE_TEXTS = [p.read_text() for p in sorted(FIXTURES.glob("*.txt")) if p != MULTI] + [
    _head(MULTI, 140),
    json.dumps(_json_sample(), indent=1),
]


@settings(max_examples=80, deadline=None)
@given(mutated(FIXTURE_TEXTS))
def test_fuzz_only_parse_error(text):
    check_fuzzed(parse_nccl_tests, text)


# --------------------------------------------------------------------------- CLI


def test_cli_json_keys():
    proc = _cli("nccl-tests", str(MULTI), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["runs"]) == 5
    run = doc["runs"][0]
    for key in ("collective", "nranks", "rows", "avg_busbw_gbps", "wrong_total", "error"):
        assert key in run
    row = run["rows"][0]
    for key in ("size_bytes", "count", "type", "redop", "root", "out_of_place", "in_place"):
        assert key in row
    assert set(row["out_of_place"]) >= {"time_us", "algbw_gbps", "busbw_gbps", "wrong"}
    assert run["collective"] == "all_reduce" and run["nranks"] == 80


def test_cli_failed_run_still_exits_zero_with_error_field():
    proc = _cli("nccl-tests", str(FAILURE), "--json")
    assert proc.returncode == 0
    assert "remote process exited" in json.loads(proc.stdout)["runs"][0]["error"]


def test_cli_rejects_other_tools_output():
    other = FIXTURES.parent / "nvbandwidth" / "nvbandwidth_v0.4_h100x8_d2d_memcpy_read_ce.txt"
    proc = _cli("nccl-tests", str(other))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert str(other) in proc.stderr
