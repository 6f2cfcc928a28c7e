"""dcgmi diag parser: both recorded JSON fixtures, constructed failing JSON and text tables,
DCGM 4.x layout, runtime errors, fuzzing, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers import get_parser
from clusterkit.parsers.dcgmi import parse_dcgmi_diag
from tests.parsers.fuzz import mutated, check_fuzzed
from tests.parsers.cli import run_parse as _cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dcgmi"
R2 = FIXTURES / "dcgmi_diag_r2_json_tesla_t4_pass.json"
R3 = FIXTURES / "dcgmi_diag_r3_json_tesla_t4_pass.json"

DEPLOYMENT = [
    "Denylist", "NVML Library", "CUDA Main Library", "Permissions and OS Blocks", "Persistence Mode",
    "Environment Variables", "Page Retirement/Row Remap", "Graphics Processes", "Inforom",
]


def test_registry_points_here():
    assert get_parser("dcgmi-diag") is parse_dcgmi_diag


def test_r2_json_pass():
    out = parse_dcgmi_diag(R2.read_text())
    assert out.format == "json" and out.overall == "Pass" and out.error is None
    assert len(out.tests) == 11
    deployment = [t for t in out.tests if t.category == "Deployment"]
    assert [t.name for t in deployment] == DEPLOYMENT
    assert all(t.gpu is None and t.result == "Pass" for t in deployment)
    pcie = next(t for t in out.tests if t.name == "PCIe")
    assert (pcie.category, pcie.gpu, pcie.result) == ("Integration", 0, "Pass")
    assert pcie.info.startswith("GPU 0 GPU 0 GPU to Host bandwidth:\t\t13.15 GB/s")
    mem = next(t for t in out.tests if t.name == "GPU Memory")
    assert (mem.category, mem.gpu, mem.info) == ("Hardware", 0, "GPU 0 Allocated 15206918958 bytes (97.3%)")


def test_r3_json_pass_with_skipped_eud():
    out = parse_dcgmi_diag(R3.read_text())
    assert out.overall == "Pass"  # the EUD 'Skip' does not fail the run
    assert len(out.tests) == 16
    assert [t.category for t in out.tests].count("Stress") == 3
    eud = next(t for t in out.tests if t.name == "EUD Test")
    assert (eud.result, eud.gpu, eud.info) == ("Skip", 0, None)
    diag = next(t for t in out.tests if t.name == "Diagnostic")
    assert "11103.02 gigaflops" in diag.info
    power = next(t for t in out.tests if t.name == "Targeted Power")
    assert power.info == "GPU 0 GPU 0 power average:\t70 W"
    stress = next(t for t in out.tests if t.name == "Targeted Stress")
    assert stress.info.endswith("relative stress level\t3184")
    assert {t.result for t in out.tests} == {"Pass", "Skip"}


def _r3_with(name: str, status: str, warning: str | None = None) -> str:
    """The r3 fixture with one test's status changed (a constructed failing/warning sample)."""
    doc = json.loads(R3.read_text())
    doc = copy.deepcopy(doc)
    for cat in doc["DCGM GPU Diagnostic"]["test_categories"]:
        for test in cat["tests"]:
            if test["name"] == name:
                test["results"][0]["status"] = status
                if warning:
                    test["results"][0]["warnings"] = [
                        {"warning": warning, "error_id": 90, "error_category": 4, "error_severity": 2}]
    return json.dumps(doc, indent="\t")


def test_constructed_failing_json():
    warning = "GPU 0 Detected 0.0 W of power on GPU 0, which is lower than the 140.0 W required."
    text = _r3_with("Targeted Power", "Fail", warning)
    out = parse_dcgmi_diag(text)
    assert out.overall == "Fail"
    (bad,) = [t for t in out.tests if t.result == "Fail"]
    assert (bad.name, bad.gpu, bad.category) == ("Targeted Power", 0, "Stress")
    assert bad.warnings == [warning]
    assert "Fail: Targeted Power GPU 0" in out.summary()


def test_constructed_warning_json():
    out = parse_dcgmi_diag(_r3_with("Persistence Mode", "Warn"))
    assert out.overall == "Warn"


def test_dcgm4_json_layout():
    # Constructed in the DCGM 4.x -j layout (entity results, info lists, test_summary).
    doc = {
        "DCGM Diagnostic": {"test_categories": [
            {"category": "Deployment", "tests": [{
                "name": "software",
                "results": [{"entity_group": "GPU", "entity_group_id": 1, "entity_id": g, "status": "Pass"}
                            for g in range(2)],
                "test_summary": {"status": "Pass"}}]},
            {"category": "Hardware", "tests": [{
                "name": "memory",
                "results": [
                    {"entity_group": "GPU", "entity_group_id": 1, "entity_id": 0, "status": "Pass",
                     "info": ["Allocated 84020240384 bytes (98.6%)"]},
                    {"entity_group": "GPU", "entity_group_id": 1, "entity_id": 1, "status": "Fail",
                     "warnings": [{"warning": "Memory error detected on GPU 1", "error_id": 83,
                                   "error_category": 5, "error_severity": 1}]}],
                "test_summary": {"status": "Fail"}}]},
            {"category": "Stress", "tests": [{"name": "targeted_stress", "results": [],
                                              "test_summary": {"status": "Skip"}}]},
        ]},
        "metadata": {"version": "4.2.3", "Driver Version Detected": "570.124.06"},
    }
    out = parse_dcgmi_diag(json.dumps(doc))
    assert out.dcgm_version == "4.2.3" and out.driver_version == "570.124.06"
    assert [(t.name, t.gpu, t.result) for t in out.tests] == [
        ("software", 0, "Pass"), ("software", 1, "Pass"),
        ("memory", 0, "Pass"), ("memory", 1, "Fail"),
        ("targeted_stress", None, "Skip"),
    ]
    assert out.tests[2].info == "Allocated 84020240384 bytes (98.6%)"
    assert out.tests[3].warnings == ["Memory error detected on GPU 1"]
    assert out.overall == "Fail"


def test_runtime_error_json_is_error_not_fail():
    text = json.dumps({"DCGM GPU Diagnostic": {
        "version": "3.3.5",
        "runtime_error": "Error: Diagnostic could not be run while DCGM is paused."}})
    out = parse_dcgmi_diag(text)
    assert out.overall == "Error" and out.tests == []
    assert out.error == "Error: Diagnostic could not be run while DCGM is paused."
    assert out.dcgm_version == "3.3.5"


def test_iterations_json():
    one = json.loads(R2.read_text())
    text = json.dumps({"iterations": [one, one], "result": "Pass"})
    out = parse_dcgmi_diag(text)
    assert len(out.tests) == 22 and {t.iteration for t in out.tests} == {1, 2}
    assert out.overall == "Pass"


# A constructed text-table sample (not a recorded output) in the layout dcgmi diag prints:
# per-GPU results split over rows, and a warning wrapped at 45 characters.
TEXT_TABLE = """Successfully ran diagnostic for group.
+---------------------------+------------------------------------------------+
| Diagnostic                | Result                                         |
+===========================+================================================+
|-----  Metadata  ----------+------------------------------------------------|
| DCGM Version              | 3.3.5                                          |
| Driver Version Detected   | 535.161.08                                     |
| GPU Device IDs Detected   | 2330,2330,2330,2330                            |
|-----  Deployment  --------+------------------------------------------------|
| Denylist                  | Pass                                           |
| NVML Library              | Pass                                           |
| CUDA Main Library         | Pass                                           |
| Permissions and OS Blocks | Pass                                           |
| Persistence Mode          | Pass                                           |
| Environment Variables     | Pass                                           |
| Page Retirement/Row Remap | Pass                                           |
| Graphics Processes        | Pass                                           |
| Inforom                   | Pass                                           |
+-----  Integration  -------+------------------------------------------------+
| PCIe                      | Pass - All                                     |
+-----  Hardware  ----------+------------------------------------------------+
| GPU Memory                | Pass - GPUs: 0, 1, 3                           |
|                           | Fail - GPU: 2                                  |
| Warning                   | GPU 2 Error using CUDA API cudaMalloc at memo |
|                           | ry.cpp:120: out of memory                      |
+-----  Stress  ------------+------------------------------------------------+
| Targeted Stress           | Pass - All                                     |
| Targeted Power            | Pass - All                                     |
| Memory Bandwidth          | Skip - All                                     |
+---------------------------+------------------------------------------------+
"""


def test_text_table_with_a_failing_gpu():
    out = parse_dcgmi_diag(TEXT_TABLE)
    assert out.format == "text"
    assert out.dcgm_version == "3.3.5" and out.driver_version == "535.161.08"
    assert out.gpu_device_ids == ["2330"] * 4
    assert out.overall == "Fail"
    deployment = [t for t in out.tests if t.category == "Deployment"]
    assert [t.name for t in deployment] == DEPLOYMENT and all(t.gpu is None for t in deployment)
    pcie = next(t for t in out.tests if t.name == "PCIe")
    assert (pcie.gpu, pcie.result, pcie.category) == (None, "Pass", "Integration")
    mem = [t for t in out.tests if t.name == "GPU Memory"]
    assert [(t.gpu, t.result) for t in mem] == [(0, "Pass"), (1, "Pass"), (2, "Fail"), (3, "Pass")]
    assert mem[2].warnings == ["GPU 2 Error using CUDA API cudaMalloc at memory.cpp:120: out of memory"]
    assert mem[0].warnings == []
    membw = next(t for t in out.tests if t.name == "Memory Bandwidth")
    assert (membw.result, membw.category) == ("Skip", "Stress")
    assert len(out.tests) == 17


def test_text_table_all_pass_and_crlf():
    text = TEXT_TABLE.replace("| Pass - GPUs: 0, 1, 3  ", "| Pass - All           ")
    text = "\n".join(ln for ln in text.split("\n") if "Fail - GPU: 2" not in ln)
    lines = [ln for ln in text.split("\n") if "Warning" not in ln and "ry.cpp" not in ln]
    out = parse_dcgmi_diag("\r\n".join(lines))
    assert out.overall == "Pass"
    assert next(t for t in out.tests if t.name == "GPU Memory").gpu is None


def test_text_error_line_is_error():
    out = parse_dcgmi_diag("Error: Diagnostic could not be run while DCGM is paused.\n")
    assert out.overall == "Error" and "paused" in out.error


@pytest.mark.parametrize("text", [
    "", "just some text\n", '{"nvbandwidth": {}}', "[1, 2]", '{"results": [],',
])
def test_not_dcgmi(text):
    with pytest.raises(ParseError):
        parse_dcgmi_diag(text)


FIXTURE_TEXTS = [R2.read_text(), R3.read_text(), TEXT_TABLE]


@settings(max_examples=80, deadline=None)
@given(mutated(FIXTURE_TEXTS))
def test_fuzz_only_parse_error(text):
    check_fuzzed(parse_dcgmi_diag, text)




def test_cli_json():
    proc = _cli("dcgmi-diag", str(R3), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["overall"] == "Pass"
    assert all(set(t) >= {"name", "result", "gpu", "info"} for t in doc["tests"])
    assert len(doc["tests"]) == 16


def test_cli_rejects_other_tools_output():
    other = FIXTURES.parent / "gpu-burn" / "gpu_burn_2x_tesla_m4_doubles_360s_ok.txt"
    proc = _cli("dcgmi-diag", str(other))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(other) in proc.stderr
