"""nvidia-smi nvlink parser: --status on H100/A100, -e error counters, merging, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.nvidia_smi_nvlink import parse_nvlink
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
H100_18 = FIX / "nvidia-smi_nvlink_--status_-i_0_h100_18_links.txt"
A100_TABS = FIX / "nvidia-smi_nvlink_status_a100_single_gpu_tabs.txt"
A100_X8 = FIX / "nvidia-smi_nvlink_status_a100_sxm4_x8.txt"


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def test_h100_18_links():
    m = parse_nvlink(_text(H100_18))
    (g,) = m.gpus
    assert (g.index, g.name, g.uuid) == (
        0, "NVIDIA H100 80GB HBM3", "GPU-5a10e6e5-95f7-2785-ed63-6f6147f304f7")
    assert [lk.link for lk in g.links] == list(range(18))
    assert all(lk.speed_gb_per_s == 26.562 and lk.state == "active" for lk in g.links)
    assert g.active_links == 18
    assert "18/18 links active" in m.summary() and "478.116 GB/s" in m.summary()


def test_a100_single_gpu_tab_indented():
    m = parse_nvlink(_text(A100_TABS))
    (g,) = m.gpus
    assert (g.index, g.uuid) == (7, "GPU-c7e253b0-c227-6f10-e860-7482c85e7ce8")
    assert g.name == "NVIDIA A100-SXM4-80GB"
    assert [(lk.link, lk.speed_gb_per_s, lk.state) for lk in g.links] == [
        (i, 25.0, "active") for i in range(12)]


def test_a100_x8():
    m = parse_nvlink(_text(A100_X8))
    assert [g.index for g in m.gpus] == list(range(8))
    assert m.gpus[0].uuid == "GPU-5269b708-678a-b1a8-60f0-c90406537486"
    assert m.gpus[3].uuid == "GPU-6e4fbadc-10d9-a63a-8988-9a0d320ff1a0"
    assert m.gpus[7].uuid == "GPU-754035b4-4708-efcd-b261-623aea38bcad"
    assert all(len(g.links) == 12 and g.active_links == 12 for g in m.gpus)
    assert {lk.speed_gb_per_s for g in m.gpus for lk in g.links} == {25.0}


def test_crlf_and_spaces_same_as_tabs():
    text = _text(A100_TABS)
    assert parse_nvlink(text.replace("\n", "\r\n")) == parse_nvlink(text)
    assert parse_nvlink(text.replace("\t", "        ")) == parse_nvlink(text)


# `nvidia-smi nvlink -e` on an H100 as shown in a public note: the author elided links 2-16
# ('[...]') and the UUID. Two counters are set non-zero here to check they are read.
ERRORS_H100 = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-abcdefab-cdef-abdc-abcd-abababababab)
         Link 0: Replay Errors: 0
         Link 0: Recovery Errors: 0
         Link 0: CRC Errors: 0

         Link 1: Replay Errors: 12
         Link 1: Recovery Errors: 1
         Link 1: CRC Errors: 0

         [...]

         Link 17: Replay Errors: 0
         Link 17: Recovery Errors: 0
         Link 17: CRC Errors: N/A
"""


def test_error_counters():
    m = parse_nvlink(ERRORS_H100)
    (g,) = m.gpus
    assert [lk.link for lk in g.links] == [0, 1, 17]
    assert g.links[0].errors == {"replay_errors": 0, "recovery_errors": 0, "crc_errors": 0}
    assert g.links[1].errors == {"replay_errors": 12, "recovery_errors": 1, "crc_errors": 0}
    assert g.links[2].errors["crc_errors"] is None
    assert all(lk.state is None and lk.speed_gb_per_s is None for lk in g.links)
    assert "13 link errors" in m.summary()


def test_status_and_errors_merge_per_link():
    status = (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-abcdefab-cdef-abdc-abcd-abababababab)\n"
        "\t Link 0: 26.562 GB/s\n"
        "\t Link 1: <inactive>\n"
        "\t Link 17: 26.562 GB/s\n"
    )
    m = parse_nvlink(status + ERRORS_H100)
    (g,) = m.gpus
    link1 = g.links[1]
    assert (link1.link, link1.state, link1.speed_gb_per_s) == (1, "inactive", None)
    assert link1.errors["replay_errors"] == 12
    assert g.active_links == 2


def test_capabilities_and_notes():
    text = (
        "GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-00000000-1111-2222-3333-444444444444)\n"
        "\t Link 0, P2P is supported: true\n"
        "\t Link 0, System memory access is supported: false\n"
        "GPU 1: Tesla V100-SXM2-16GB (UUID: GPU-55555555-1111-2222-3333-444444444444)\n"
        "\t NVML: Unable to retrieve NVLink information as all links are inActive\n"
    )
    m = parse_nvlink(text)
    assert m.gpus[0].links[0].capabilities == {
        "p2p_is_supported": True, "system_memory_access_is_supported": False}
    assert m.gpus[1].links == [] and "inActive" in m.gpus[1].notes[0]


def test_failure_message_is_a_model():
    m = parse_nvlink("No devices were found\n")
    assert m.gpus == [] and m.error == "No devices were found"


def test_bad_link_line_quotes_it():
    text = _text(A100_X8).replace("Link 5: 25 GB/s", "Link 5: fast", 1)
    with pytest.raises(ParseError) as e:
        parse_nvlink(text)
    assert e.value.line_no == 7 and "fast" in e.value.line


@pytest.mark.parametrize(
    "name", ["nvidia-smi_topo_-m_h100x8_12nics_driver580.txt", "nvidia-smi-q_h200_x1_driver550.txt"])
def test_other_outputs_are_refused(name):
    with pytest.raises(ParseError) as e:
        parse_nvlink(_text(FIX / name))
    assert e.value.line_no is not None


def test_empty_is_refused():
    with pytest.raises(ParseError):
        parse_nvlink("")


@settings(max_examples=60, deadline=None)
@given(mutated([_text(H100_18), _text(A100_TABS), _text(A100_X8), ERRORS_H100]))
def test_fuzz_only_parse_error(text):
    assert_only_parse_error(parse_nvlink, text)




def test_cli_json():
    r = _cli("nvidia-smi-nvlink", str(H100_18), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    g = doc["gpus"][0]
    for key in ("index", "name", "uuid", "links"):
        assert key in g
    assert g["links"][17] == {"link": 17, "speed_gb_per_s": 26.562, "state": "active",
                              "errors": {}, "capabilities": {}}


def test_cli_wrong_tool_exit_2():
    other = FIX / "nvidia-smi_query-gpu_csv_temp_power_ecc_rtxpro6000x2.txt"
    r = _cli("nvidia-smi-nvlink", str(other), "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0]
