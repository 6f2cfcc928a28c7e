"""nvidia-smi topo -m parser: the H100x8 + 12 NIC matrix, layouts, errors, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.nvidia_smi_topo import parse_topo
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
TOPO = FIX / "nvidia-smi_topo_-m_h100x8_12nics_driver580.txt"

GPUS = [f"GPU{i}" for i in range(8)]
NICS = [f"NIC{i}" for i in range(12)]


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def test_h100x8_matrix():
    m = parse_topo(_text(TOPO))
    assert m.devices == GPUS + NICS
    assert set(m.matrix) == set(GPUS + NICS)
    for a in GPUS:
        for b in GPUS:
            assert m.matrix[a][b] == ("X" if a == b else "NV18")
    row0 = m.matrix["GPU0"]
    assert [row0[n] for n in NICS] == [
        "PIX", "PXB", "NODE", "NODE", "NODE", "NODE", "SYS", "SYS", "SYS", "SYS", "SYS", "SYS"]
    assert m.matrix["GPU4"]["NIC6"] == "PIX" and m.matrix["GPU4"]["NIC7"] == "PXB"
    assert m.matrix["GPU7"]["NIC9"] == "PIX"
    assert m.matrix["NIC0"]["GPU0"] == "PIX" and m.matrix["NIC0"]["NIC1"] == "PXB"
    assert m.matrix["NIC4"]["NIC5"] == "PIX" and m.matrix["NIC11"]["NIC11"] == "X"


def test_h100x8_affinity_and_legend():
    m = parse_topo(_text(TOPO))
    assert m.cpu_affinity == {g: "0-55,112-167" for g in GPUS[:4]} | {
        g: "56-111,168-223" for g in GPUS[4:]}
    assert m.numa_affinity == {g: "0" for g in GPUS[:4]} | {g: "1" for g in GPUS[4:]}
    assert m.gpu_numa_id == {g: None for g in GPUS}  # 'N/A' after nvidia-smi's double tab
    assert m.nic_legend == {f"NIC{i}": f"mlx5_{i}" for i in range(12)}
    assert m.error is None
    s = m.summary()
    assert "8 GPU(s), 12 NIC(s)" in s and "NV18 x28" in s and "mlx5_6" in s


def test_header_with_and_without_leading_tab_and_spaces():
    text = _text(TOPO)
    base = parse_topo(text)
    assert parse_topo("\t" + text) == base  # nvidia-smi's own header starts with a tab
    assert parse_topo(text.replace("\t", "  ")) == base  # tabs lost in a copy
    assert parse_topo(text.replace("\n", "\r\n")) == base


# Layout of older drivers: NICs named by device in the header, no NIC legend, CPU Affinity only.
OLD = (
    "\tGPU0\tGPU1\tmlx5_0\tCPU Affinity\n"
    "GPU0\t X \tNV1\tPIX\t0-19\n"
    "GPU1\tNV1\t X \tPHB\t0-19\n"
    "mlx5_0\tPIX\tPHB\t X \t\n"
    "\n"
    "Legend:\n"
    "\n"
    "  X    = Self\n"
    "  SOC  = Connection traversing PCIe as well as the SMP link between CPU sockets(e.g. QPI)\n"
    "  NV#  = Connection traversing a bonded set of # NVLinks\n"
)


def test_old_layout():
    m = parse_topo(OLD)
    assert m.devices == ["GPU0", "GPU1", "mlx5_0"]
    assert m.matrix["GPU1"] == {"GPU0": "NV1", "GPU1": "X", "mlx5_0": "PHB"}
    assert m.cpu_affinity == {"GPU0": "0-19", "GPU1": "0-19"}
    assert m.numa_affinity == {} and m.nic_legend == {}


def test_failure_message_is_a_model():
    m = parse_topo("Failed to initialize NVML: Driver/library version mismatch\n")
    assert m.error == "Failed to initialize NVML: Driver/library version mismatch"
    assert m.devices == []


def test_bad_cell_and_short_row_quote_the_line():
    text = _text(TOPO)
    bad = text.replace("GPU3\tNV18\tNV18", "GPU3\tnv?18\tNV18", 1)
    with pytest.raises(ParseError) as e:
        parse_topo(bad)
    assert e.value.line_no == 5 and "nv?18" in e.value.line
    lines = text.split("\n")
    lines[3] = "\t".join(lines[3].split("\t")[:3])  # GPU2 row cut after two cells
    with pytest.raises(ParseError) as e:
        parse_topo("\n".join(lines))
    assert e.value.line_no == 4 and "fewer than 20" in str(e.value)
    # a cell moved: an affinity lands among the connection cells
    moved = text.replace("GPU2\tNV18\tNV18\t X \tNV18", "GPU2\tNV18", 1)
    with pytest.raises(ParseError) as e:
        parse_topo(moved)
    assert e.value.line_no == 4 and "0-55,112-167" in str(e.value)


@pytest.mark.parametrize(
    "name", ["nvidia-smi_nvlink_status_a100_sxm4_x8.txt",
             "nvidia-smi_query-gpu_csv_8xh100_driver535.161.07.csv"])
def test_other_outputs_are_refused(name):
    with pytest.raises(ParseError) as e:
        parse_topo(_text(FIX / name))
    assert e.value.line_no == 1


def test_empty_is_refused():
    with pytest.raises(ParseError):
        parse_topo(" \n\n")


@settings(max_examples=60, deadline=None)
@given(mutated([_text(TOPO), OLD]))
def test_fuzz_only_parse_error(text):
    assert_only_parse_error(parse_topo, text)




def test_cli_json():
    r = _cli("nvidia-smi-topo", str(TOPO), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("devices", "matrix", "cpu_affinity", "numa_affinity", "nic_legend"):
        assert key in doc
    assert doc["matrix"]["GPU0"]["GPU1"] == "NV18"
    assert doc["cpu_affinity"]["GPU0"] == "0-55,112-167"
    assert doc["numa_affinity"]["GPU7"] == "1"


def test_cli_wrong_tool_exit_2():
    other = FIX / "nvidia-smi_nvlink_status_a100_single_gpu_tabs.txt"
    r = _cli("nvidia-smi-topo", str(other), "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0]
