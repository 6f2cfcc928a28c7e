"""`clusterkit nccl check FILE` as a user meets it: the real command line (its own process) on
every recorded nccl-tests log, --json, stdin, the options, and the exit codes of the table
(0 pass, 1 a run failed, 2 usage error, 3 a run could not run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "nccl-tests"

#: runs the real entry point (clusterkit.cli.main); the `nccl` group is put in the top-level
#: group's lazy table here in case this checkout does not list it yet (same module either way)
_MAIN = ("import sys; from clusterkit import cli; "
         "cli.cli.lazy.setdefault('nccl', 'clusterkit.nccl.cli:nccl_group'); cli.main(sys.argv[1:])")


def ck(*args: str, stdin: str | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERKIT_")}
    return subprocess.run([sys.executable, "-c", _MAIN, *args], capture_output=True, text=True, env=env,
                          timeout=120, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          cwd=tmp)


def check_json(*args: str, stdin: str | None = None) -> tuple[int, dict]:
    p = ck("nccl", "check", *args, "--json", stdin=stdin)
    assert p.stdout.strip(), p.stderr
    return p.returncode, json.loads(p.stdout)


#: (exit code, {check id: status ...}) per recording, read from the files (see the unit tests)
EXPECTED = {
    "all_gather_perf_h100x8_single_node_v2.17.8.txt": (0, {"nccl.allgather.busbw": "pass"}),
    "all_gather_perf_h200_2node_1gpu_gpudirect_rdma.txt": (0, {"nccl.allgather.busbw": "pass"}),
    "all_reduce_perf_4x_dgx_a100_ib_old_format_error_column.txt": (1, {"nccl.allreduce.busbw": "fail"}),
    "all_reduce_perf_h100x8_single_node_v2.17.8.txt": (0, {"nccl.allreduce.busbw": "pass"}),
    "all_reduce_perf_roce_k8s_old_format_erratic_latency.txt": (1, {"nccl.allreduce.busbw": "fail"}),
    "alltoall_perf_2x1_h100_failure_after_header_v2.17.6.txt": (3, {"nccl.alltoall.run": "error"}),
    "alltoall_perf_h100x8_single_node_v2.17.8.txt": (0, {"nccl.alltoall.busbw": "pass"}),
    "multi_node_10x8_h100_5tests_v2.17.8.txt": (1, {"nccl.allreduce.busbw": "fail", "nccl.sendrecv.busbw": "pass"}),
    "reduce_scatter_perf_h100x8_single_node_v2.17.8.txt": (0, {"nccl.reducescatter.busbw": "pass"}),
    "sendrecv_perf_h100x8_single_node_v2.17.8.txt": (0, {"nccl.sendrecv.busbw": "pass"}),
}


def test_every_recording_is_checked_here():
    assert sorted(p.name for p in FIX.iterdir() if p.is_file()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recording_exit_code_and_json(name):
    rc, doc = check_json(str(FIX / name), "--profile", "h100-sxm")
    want_rc, want = EXPECTED[name]
    assert rc == want_rc
    assert set(doc) == {"file", "checks"} and doc["file"] == str(FIX / name)
    for c in doc["checks"]:
        assert list(c) == ["check", "subject", "status", "value", "threshold", "unit", "message"]
    statuses = {c["check"]: c["status"] for c in doc["checks"]}
    for cid, status in want.items():
        assert statuses[cid] == status


def test_terminal_output_one_line_per_check_and_a_summary():
    p = ck("nccl", "check", str(FIX / "multi_node_10x8_h100_5tests_v2.17.8.txt"), "--profile", "h100-sxm")
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 16  # 5 runs x (run, wrong, busbw) + the summary
    assert lines[2] == ("FAIL  nccl.allreduce.busbw run 1 all_reduce 80 ranks on cnode3-[002-011]: 316.32 GB/s "
                        "at 8 GiB, below the floor 330 GB/s (several nodes: 10 nodes; profile h100-sxm)")
    assert lines[-1].endswith("multi_node_10x8_h100_5tests_v2.17.8.txt: fail (5 runs, 15 checks: 14 pass, "
                              "1 fail; profile h100-sxm)")
    assert p.stderr == ""


def test_failure_names_its_node_and_exits_3():
    p = ck("nccl", "check", str(FIX / "alltoall_perf_2x1_h100_failure_after_header_v2.17.6.txt"))
    assert p.returncode == 3
    first = p.stdout.splitlines()[0]
    assert first.startswith("ERROR nccl.alltoall.run alltoall 2 ranks on cnode2-[005,016]: failed on cnode2-016 ")
    assert "remote process exited or there was a network error" in first


def test_stdin_and_the_options():
    text = (FIX / "all_reduce_perf_h100x8_single_node_v2.17.8.txt").read_text()
    rc, doc = check_json("-", "--profile", "h100-sxm", "--algo", "ring", "--nodes", "1", stdin=text)
    assert rc == 0 and doc["file"] == "<stdin>"
    busbw = next(c for c in doc["checks"] if c["check"] == "nccl.allreduce.busbw")
    assert (busbw["value"], busbw["threshold"]) == (481.39, 340)
    ranks = next(c for c in doc["checks"] if c["check"] == "nccl.allreduce.ranks")
    assert (ranks["status"], ranks["value"]) == ("pass", 1)
    # expected 2 nodes: a warning, still exit 0
    rc, doc = check_json("-", "--nodes", "2", stdin=text)
    assert rc == 0 and [c["status"] for c in doc["checks"] if c["check"].endswith(".ranks")] == ["warn"]
    # the h200 profile's NVLS floor
    rc, doc = check_json("-", "--profile", "h200-sxm", stdin=text)
    assert next(c["threshold"] for c in doc["checks"] if c["check"] == "nccl.allreduce.busbw") == 431


def test_old_format_log_by_mode_override():
    f = str(FIX / "all_reduce_perf_4x_dgx_a100_ib_old_format_error_column.txt")
    rc, doc = check_json(f, "--mode", "single")
    busbw = next(c for c in doc["checks"] if c["check"] == "nccl.allreduce.busbw")
    assert rc == 1 and (busbw["status"], busbw["value"], busbw["threshold"]) == ("fail", 191.05, 440)


@pytest.mark.parametrize("args, why", [
    (["/nonexistent/nccl.log"], "cannot read /nonexistent/nccl.log: No such file or directory"),
    ([str(Path(__file__))], "nccl-tests: line 1: no nccl-tests header, result table or failure line found"),
    (["--profile", "no-such-profile", str(FIX / "sendrecv_perf_h100x8_single_node_v2.17.8.txt")],
     "no such built-in profile"),
    (["--mode", "multi", "--algo", "ring", str(FIX / "sendrecv_perf_h100x8_single_node_v2.17.8.txt")],
     "--algo picks the one-node floor"),
    (["--nodes", "0", str(FIX / "sendrecv_perf_h100x8_single_node_v2.17.8.txt")], "--nodes"),
])
def test_usage_errors_are_one_line_exit_2(args, why):
    p = ck("nccl", "check", *args)
    assert p.returncode == 2
    assert p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("clusterkit: error: ")
    assert why in p.stderr
