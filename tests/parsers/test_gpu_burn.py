"""gpu-burn parser: both recorded fixtures, faulty / incomplete / died runs, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers import get_parser
from clusterkit.parsers.gpu_burn import parse_gpu_burn
from tests.parsers.fuzz import mutated, check_fuzzed
from tests.parsers.cli import run_parse as _cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gpu-burn"
M4 = FIXTURES / "gpu_burn_2x_tesla_m4_doubles_360s_ok.txt"
A400 = FIXTURES / "gpu_burn_rtx_a400_500s_ok.txt"


def test_registry_points_here():
    assert get_parser("gpu-burn") is parse_gpu_burn


def test_two_tesla_m4_old_style():
    out = parse_gpu_burn(M4.read_text())
    assert out.ok and out.complete and out.error is None
    assert out.tested_count == 2
    assert out.duration_s == 360
    assert out.precision == "DOUBLES"
    assert out.last_progress_pct == 100.0
    g0, g1 = out.gpus
    assert (g0.index, g0.name, g0.uuid) == (0, "Tesla M4", "GPU-57ddd9f4-21d7-fb14-1730-04d714cae275")
    assert g1.uuid == "GPU-583efd6c-e754-0c6a-45c6-03ad4cac8ed8"
    # last progress line: proc'd: 20 (65 Gflop/s) - 20 (65 Gflop/s) errors: 0 - 0 temps: 53 C - 54 C
    assert (g0.status, g0.gflops, g0.processed, g0.errors, g0.temp_c) == ("OK", 65.0, 20, 0, 53)
    assert (g1.status, g1.gflops, g1.processed, g1.errors, g1.temp_c) == ("OK", 65.0, 20, 0, 54)


def test_rtx_a400_summary_at_style():
    out = parse_gpu_burn(A400.read_text())
    assert out.ok and out.complete
    assert out.duration_s == 500 and out.precision == "FLOATS" and out.tested_count == 1
    (g,) = out.gpus
    assert (g.name, g.uuid) == ("NVIDIA RTX A400", "GPU-227259f4-b4d3-4638-69d1-4c5ceb2e21b0")
    assert (g.status, g.gflops, g.processed, g.errors, g.temp_c) == ("OK", 1772.0, 814, 0, 74)


def test_tab_indentation_as_gpu_burn_prints_it():
    # the fixtures hold 8 spaces where gpu_burn prints a tab
    for path in (M4, A400):
        text = path.read_text()
        assert parse_gpu_burn(text.replace("        ", "\t")) == parse_gpu_burn(text)


def test_crlf():
    text = M4.read_text()
    assert parse_gpu_burn(text.replace("\n", "\r\n")) == parse_gpu_burn(text)


def test_faulty_gpu():
    # Constructed from the M4 fixture: GPU 1 reports errors and the summary marks it FAULTY.
    text = M4.read_text()
    text = text.replace(
        " 85.0%  proc'd: 16 (65 Gflop/s) - 16 (65 Gflop/s)   errors: 0 - 0 ",
        " 85.0%  proc'd: 16 (65 Gflop/s) - 16 (65 Gflop/s)   errors: 0 - 5  (WARNING!) ",
    ).replace("GPU 1: OK", "GPU 1: FAULTY")
    out = parse_gpu_burn(text)
    assert not out.ok and out.complete
    assert out.gpus[1].status == "FAULTY" and out.gpus[1].errors == 5
    assert out.gpus[0].status == "OK" and out.gpus[0].errors == 0
    assert "GPU 1: FAULTY" in out.summary()


def test_errors_seen_before_a_summary_reset_still_count():
    # Constructed from the A400 fixture: errors on one progress line, reset to 0 afterwards.
    text = A400.read_text().replace(
        "42.0%  proc'd: 330 (1772 Gflop/s)   errors: 0 ",
        "42.0%  proc'd: 330 (1772 Gflop/s)   errors: 2  (WARNING!) ",
    )
    out = parse_gpu_burn(text)
    assert out.gpus[0].errors == 2
    assert not out.ok  # even though the summary says OK


def test_missing_summary_is_incomplete_not_an_exception():
    text = M4.read_text()
    text = text[: text.index(" 73.9%")]
    out = parse_gpu_burn(text)
    assert not out.ok and not out.complete
    assert out.error == "incomplete: no 'Tested N GPUs' summary (last progress 62.8%)"
    assert [g.status for g in out.gpus] == [None, None]
    assert out.gpus[0].gflops == 65.0


def test_carriage_return_progress_and_died_gpu():
    # Constructed: a raw capture keeps the '\r'-separated progress on one line; GPU 1 died.
    text = (
        "Burning for 60 seconds.\n"
        " 10.0%  proc'd: 10 (5000 Gflop/s) - 3 (4000 Gflop/s)   errors: 0 - 0   temps: 60 C - 61 C "
        "\r 20.0%  proc'd: 20 (5100 Gflop/s) - -1 (0 Gflop/s)   errors: 0 - 0  (DIED!)   temps: 62 C - -- \n"
        "No clients are alive!  Aborting\n"
    )
    out = parse_gpu_burn(text)
    assert out.last_progress_pct == 20.0
    g0, g1 = out.gpus
    assert (g0.gflops, g0.temp_c) == (5100.0, 62)
    assert g1.died and g1.processed == -1 and g1.temp_c is None
    assert out.error == "No clients are alive!  Aborting"
    assert not out.ok


@pytest.mark.parametrize("text", ["", "\n", "random text\n", "GPU 0: OK\n"])
def test_not_gpu_burn(text):
    with pytest.raises(ParseError):
        parse_gpu_burn(text)


FIXTURE_TEXTS = [M4.read_text(), A400.read_text()]


@settings(max_examples=80, deadline=None)
@given(mutated(FIXTURE_TEXTS))
def test_fuzz_only_parse_error(text):
    check_fuzzed(parse_gpu_burn, text)




def test_cli_json():
    proc = _cli("gpu-burn", str(M4), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True
    assert [set(g) >= {"index", "status", "gflops", "errors", "temp_c"} for g in doc["gpus"]] == [True, True]
    assert doc["gpus"][1]["temp_c"] == 54


def test_cli_rejects_other_tools_output():
    other = FIXTURES.parent / "nccl-tests" / "sendrecv_perf_h100x8_single_node_v2.17.8.txt"
    proc = _cli("gpu-burn", str(other), "--json")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(other) in proc.stderr
