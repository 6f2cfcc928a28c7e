"""The watchdog: a per-test timeout, and an end for a test that hangs after printing its result.

Real tiny processes: one prints a real nccl-tests output and then sleeps (as nccl-tests does when
it hangs in its teardown), one hangs before any result, one exits normally.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from clusterkit.nccl.watchdog import Watchdog, result_complete, run_watched

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nccl-tests"
SINGLE = FIXTURES / "all_reduce_perf_h100x8_single_node_v2.17.8.txt"
FAILED = FIXTURES / "alltoall_perf_2x1_h100_failure_after_header_v2.17.6.txt"


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def printer(path: Path, then: str) -> list[str]:
    return py(f"import sys, time\nsys.stdout.write(open({str(path)!r}).read())\nsys.stdout.flush()\n{then}\n")


ENV = dict(os.environ)


def test_result_complete_needs_the_avg_line_and_the_closing_comment() -> None:
    text = SINGLE.read_text()
    assert result_complete(text)
    cut = text[: text.index("# Avg bus bandwidth")]
    assert not result_complete(cut)
    avg_only = text[: text.index("# Avg bus bandwidth")] + "# Avg bus bandwidth    : 437.957 \n"
    assert not result_complete(avg_only)
    assert result_complete(avg_only + "#\n")
    assert not result_complete(FAILED.read_text())


def test_a_test_that_hangs_after_its_result_is_ended_after_the_grace() -> None:
    started = time.monotonic()
    r = run_watched(printer(SINGLE, "time.sleep(600)"), env=ENV, timeout=60, done=result_complete,
                    grace=0.5, kill_grace=2.0)
    took = time.monotonic() - started
    assert r.ended_after_result and not r.timed_out
    assert took < 0.5 + 2.0 + 3.0, took
    assert r.rc == -15  # SIGTERM did it
    assert "# Avg bus bandwidth    : 437.957" in r.stdout


def test_a_process_ignoring_sigterm_gets_sigkill_after_kill_grace() -> None:
    code = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    started = time.monotonic()
    r = run_watched(printer(SINGLE, code), env=ENV, timeout=60, done=result_complete, grace=0.2,
                    kill_grace=0.5)
    assert r.ended_after_result and r.rc == -9
    assert time.monotonic() - started < 5


def test_a_test_that_hangs_before_any_result_times_out_with_its_partial_output() -> None:
    head = "# nccl-tests version 2.17.8\\n#  Rank  0 Group  0 Pid 1 on gpu-001 device  0 [0000:18:00] H100\\n"
    started = time.monotonic()
    r = run_watched(py(f"import sys, time\nsys.stdout.write('{head}'); sys.stdout.flush(); time.sleep(600)"),
                    env=ENV, timeout=1.5, done=result_complete, grace=5.0, kill_grace=1.0)
    took = time.monotonic() - started
    assert r.timed_out and not r.ended_after_result
    assert 1.4 <= took < 1.5 + 1.0 + 3.0, took
    assert "Rank  0 Group" in r.stdout


def test_a_test_that_exits_by_itself_is_an_ordinary_end() -> None:
    r = run_watched(printer(SINGLE, "sys.stderr.write('bye\\n'); sys.exit(3)"), env=ENV, timeout=30,
                    done=result_complete, grace=5.0)
    assert r.rc == 3 and not r.timed_out and not r.ended_after_result
    assert r.stderr == "bye\n" and result_complete(r.stdout)
    assert r.duration_s < 5


def test_exit_within_the_grace_after_the_result_is_not_ended_by_us() -> None:
    r = run_watched(printer(SINGLE, "time.sleep(0.5)"), env=ENV, timeout=30, done=result_complete, grace=5.0)
    assert r.rc == 0 and not r.ended_after_result and not r.timed_out


def test_the_whole_process_group_is_ended_background_children_too() -> None:
    # the shell exits at once; its background child holds the pipes
    started = time.monotonic()
    r = run_watched(["/bin/sh", "-c", "sleep 30 & echo started"], env=ENV, timeout=20, done=None)
    assert r.stdout == "started\n" and r.rc == 0
    assert time.monotonic() - started < 5
    # a timed-out group: the child sleeping in the background goes too
    marker = f"ck-watchdog-{os.getpid()}-{time.monotonic_ns()}"
    r = run_watched(["/bin/sh", "-c", f"sleep 40 & exec -a {marker} sleep 41"], env=ENV, timeout=0.5)
    assert r.timed_out
    time.sleep(0.2)
    left = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).startswith(marker)]
    assert not left


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_done_is_asked_while_the_command_is_quiet(tmp_path: Path) -> None:
    flag = tmp_path / "result.json"
    threading.Timer(0.3, flag.write_text, args=("{}",)).start()
    r = run_watched(py("import time; time.sleep(600)"), env=ENV, timeout=30, done=lambda _out: flag.exists(),
                    grace=0.1, kill_grace=1.0)
    assert r.ended_after_result and r.duration_s < 5


def test_a_broken_predicate_does_not_lose_the_command() -> None:
    def boom(_out: str) -> bool:
        raise RuntimeError("bug")

    r = run_watched(printer(SINGLE, "pass"), env=ENV, timeout=30, done=boom)
    assert r.rc == 0 and result_complete(r.stdout)


def test_a_missing_binary_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        run_watched([str(tmp_path / "nope")], env=ENV, timeout=5)


def test_kill_all_ends_what_runs_and_refuses_new_commands() -> None:
    wd = Watchdog()
    out: dict[str, object] = {}
    t = threading.Thread(target=lambda: out.update(r=wd.run(py("import time; time.sleep(600)"), env=ENV,
                                                            timeout=60)))
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    wd.kill_all()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - started < 5
    r = wd.run(py("import time; time.sleep(600)"), env=ENV, timeout=60)
    assert r.rc == -9 and r.duration_s < 5
