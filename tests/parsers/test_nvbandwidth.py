"""nvbandwidth parser: both recorded fixtures, other test shapes, JSON, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers import get_parser
from clusterkit.parsers.nvbandwidth import parse_nvbandwidth
from tests.parsers.fuzz import mutated, check_fuzzed
from tests.parsers.cli import run_parse as _cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvbandwidth"
V04 = FIXTURES / "nvbandwidth_v0.4_h100x8_d2d_memcpy_read_ce.txt"
README = FIXTURES / "nvbandwidth_readme_example_8gpu_d2d_memcpy_write_ce_no_header.txt"


def test_registry_points_here():
    assert get_parser("nvbandwidth") is parse_nvbandwidth


def test_v0_4_h100x8_read_ce():
    out = parse_nvbandwidth(V04.read_text())
    assert out.version == "v0.4"
    assert out.git_version == "v0.4.2-12-g8857188"
    assert out.cuda_runtime_version == 12020
    assert out.cuda_driver_version == 12080
    assert out.driver_version == "570.133.20"
    assert [d.index for d in out.devices] == list(range(8))
    assert {d.name for d in out.devices} == {"NVIDIA H100 80GB HBM3"}
    (test,) = out.tests
    assert test.name == "device_to_device_memcpy_read_ce"
    assert test.status == "Passed"
    assert test.description == "memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)"
    assert test.unit == "GB/s"
    assert test.columns == list(range(8))
    assert sorted(test.matrix) == list(range(8))
    assert test.matrix[0] == [None, 370.90, 370.90, 370.90, 370.38, 370.64, 370.26, 371.67]
    assert all(test.matrix[i][i] is None for i in range(8))  # N/A diagonal
    assert test.matrix[2][4] == 372.96
    assert test.sum_gbps == 20785.58 and test.sum_reported
    assert test.pairs == 56
    assert test.min_gbps == 370.26  # matrix[0][6]
    assert test.max_gbps == 372.96  # matrix[2][4]
    assert test.avg_gbps == pytest.approx(371.1725, abs=1e-3)
    assert out.ok


def test_readme_example_zero_diagonal_no_header_no_sum():
    out = parse_nvbandwidth(README.read_text())
    assert out.version is None and out.devices == []
    (test,) = out.tests
    assert test.name == "device_to_device_memcpy_write_ce"
    assert test.description == "memcpy CE GPU(row) <- GPU(column) bandwidth (GB/s)"
    assert test.matrix[3][3] == 0.0  # older versions print 0.00 on the diagonal ...
    assert test.pairs == 56  # ... which is left out of the statistics
    assert test.min_gbps == 274.89  # matrix[6][0]
    assert test.max_gbps == 276.76  # matrix[4][3]
    assert test.avg_gbps == pytest.approx(276.337, abs=1e-3)
    assert not test.sum_reported and test.sum_gbps == pytest.approx(15474.88, abs=0.01)
    assert out.ok


def test_crlf_and_tabs():
    text = V04.read_text()
    assert parse_nvbandwidth(text.replace("\n", "\r\n").replace("    ", "\t")) == parse_nvbandwidth(text)


# A constructed sample (not a recorded output) in nvbandwidth's text layout: a host-to-device
# test (one CPU row, so no diagonal), a waived test, a latency test in ns, device lines with PCI.
CONSTRUCTED = """nvbandwidth Version: v0.7
Built from Git version: v0.7

CUDA Runtime Version: 12080
CUDA Driver Version: 12080
Driver Version: 570.86.15

Device 0: NVIDIA H200 (00000000:1b:00)
Device 1: NVIDIA H200 (00000000:43:00)

Running host_to_device_memcpy_ce.
memcpy CE CPU(row) -> GPU(column) bandwidth (GB/s)
           0         1
 0     55.10     54.90

SUM host_to_device_memcpy_ce 110.00

Running device_to_device_bidirectional_memcpy_read_ce.
Waived: 

Running host_device_latency_sm.
memory latency SM CPU(row) <-> GPU(column) (ns)
           0         1
 0    712.30    710.10

SUM host_device_latency_sm 1422.40
"""


def test_constructed_host_device_waived_and_latency():
    out = parse_nvbandwidth(CONSTRUCTED)
    assert [(d.index, d.name, d.pci) for d in out.devices] == [
        (0, "NVIDIA H200", "00000000:1b:00"), (1, "NVIDIA H200", "00000000:43:00")]
    h2d, waived, lat = out.tests
    assert h2d.pairs == 2 and h2d.min_gbps == 54.90 and h2d.sum_gbps == 110.0  # no diagonal
    assert waived.name == "device_to_device_bidirectional_memcpy_read_ce"
    assert waived.status == "Waived" and waived.matrix == {}
    assert lat.unit == "ns" and lat.sum_gbps is None and lat.sum_value == 1422.40
    assert lat.matrix[0] == [712.30, 710.10]
    assert out.ok


def test_test_cut_short_is_incomplete():
    text = V04.read_text()
    cut = text[: text.index("3    370.90") + 20]
    out = parse_nvbandwidth(cut)
    (test,) = out.tests
    assert test.status == "Incomplete" and sorted(test.matrix) == [0, 1, 2]
    assert not out.ok


def test_malformed_row_is_a_parse_error_quoting_it():
    text = V04.read_text().replace("370.38    371.54", "370.38    3x1.54")
    with pytest.raises(ParseError) as exc:
        parse_nvbandwidth(text)
    assert "3x1.54" in str(exc.value) and exc.value.line_no == 27


def test_json_output():
    # Constructed sample in the layout of nvbandwidth's -j writer (not a recorded output).
    doc = {"nvbandwidth": {
        "version": "v0.7", "git_version": "v0.7", "CUDA Runtime Version": 12080,
        "Driver Version": "570.86.15",
        "GPU Device list": ["0: NVIDIA H200 (00000000:1b:00): (node1)",
                            "1: NVIDIA H200 (00000000:43:00): (node1)"],
        "testcases": [{
            "name": "device_to_device_memcpy_read_ce", "status": "Passed",
            "bandwidth_description": "memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)",
            "bandwidth_matrix": [["N/A", "389.5"], ["390.1", "N/A"]],
            "sum": 779.6,
        }, {"name": "device_local_copy", "status": "Waived"}],
    }}
    out = parse_nvbandwidth(json.dumps(doc, indent=2))
    assert out.version == "v0.7" and out.driver_version == "570.86.15"
    assert [(d.index, d.pci, d.host) for d in out.devices] == [
        (0, "00000000:1b:00", "node1"), (1, "00000000:43:00", "node1")]
    t = out.tests[0]
    assert t.matrix == {0: [None, 389.5], 1: [390.1, None]}
    assert t.min_gbps == 389.5 and t.max_gbps == 390.1 and t.sum_gbps == 779.6
    assert out.tests[1].status == "Waived"


@pytest.mark.parametrize("text", [
    "", "nothing here\n", '{"DCGM GPU Diagnostic": {}}', "Device 0: foo\n",
])
def test_not_nvbandwidth(text):
    with pytest.raises(ParseError):
        parse_nvbandwidth(text)


FIXTURE_TEXTS = [V04.read_text(), README.read_text(), CONSTRUCTED]


@settings(max_examples=80, deadline=None)
@given(mutated(FIXTURE_TEXTS))
def test_fuzz_only_parse_error(text):
    check_fuzzed(parse_nvbandwidth, text)




def test_cli_json():
    proc = _cli("nvbandwidth", str(V04), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["version"] == "v0.4"
    test = doc["tests"][0]
    for key in ("name", "unit", "matrix", "sum_gbps", "min_gbps", "avg_gbps"):
        assert key in test
    assert test["matrix"]["2"][4] == 372.96


def test_cli_rejects_other_tools_output():
    other = FIXTURES.parent / "gpu-burn" / "gpu_burn_rtx_a400_500s_ok.txt"
    proc = _cli("nvbandwidth", str(other))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(other) in proc.stderr
