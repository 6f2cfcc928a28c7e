"""nvidia-smi --query-gpu CSV parser: units, typed values, renamed columns, errors, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.nvidia_smi_csv import parse_csv
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
H100_CSV = FIX / "nvidia-smi_query-gpu_csv_8xh100_driver535.161.07.csv"
REASONS = FIX / "nvidia-smi_query-gpu_csv_clocks_event_reasons_rtxpro6000x2.txt"
TEMP_POWER = FIX / "nvidia-smi_query-gpu_csv_temp_power_ecc_rtxpro6000x2.txt"


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def test_h100_39_columns_units_from_header():
    text = _text(H100_CSV)
    assert not text.endswith("\n")  # stored without a trailing newline
    m = parse_csv(text)
    assert len(m.columns) == 39 and len(m.rows) == 8
    units = {c.name: c.unit for c in m.columns}
    assert units["memory.total"] == "MiB" and units["power.draw.average"] == "W"
    assert units["utilization.gpu"] == "%" and units["clocks.current.sm"] == "MHz"
    assert units["temperature.gpu"] is None
    assert m.columns[17].header == "memory.total [MiB]"
    r0 = m.rows[0]
    assert r0["timestamp"] == "2024/03/15 13:57:59.791"
    assert r0["index"] == 0 and r0["name"] == "NVIDIA H100 80GB HBM3"
    assert r0["pci.bus_id"] == "00000000:0A:00.0"
    assert r0["driver_version"] == "535.161.07" and r0["pstate"] == "P0"
    assert (r0["pcie.link.gen.max"], r0["pcie.link.width.current"]) == (5, 16)
    assert (r0["temperature.gpu"], r0["temperature.memory"]) == (26, 35)
    assert r0["power.draw.average"] == 70.89 and r0["power.draw.instant"] == 70.68
    assert (r0["memory.total"], r0["memory.free"], r0["memory.used"]) == (81559, 81007, 0)
    assert r0["clocks.current.memory"] == 2619
    assert isinstance(r0["memory.total"], int) and isinstance(r0["power.draw.average"], float)
    assert m.rows[3]["pci.bus_id"] == "00000000:69:00.0"
    assert m.rows[3]["power.draw.average"] == 72.17
    assert [r["index"] for r in m.rows] == list(range(8))
    assert all(r["ecc.errors.uncorrected.aggregate.total"] == 0 for r in m.rows)


def test_clocks_event_reasons():
    m = parse_csv(_text(REASONS))
    assert [c.name for c in m.columns] == [
        "index", "name", "clocks_event_reasons.active", "clocks_event_reasons.gpu_idle",
        "clocks_event_reasons.hw_thermal_slowdown", "clocks_event_reasons.sw_thermal_slowdown",
        "clocks_event_reasons.sw_power_cap"]
    for i, row in enumerate(m.rows):
        assert row["index"] == i
        assert row["name"] == "NVIDIA RTX PRO 6000 Blackwell Server Edition"
        assert row["clocks_event_reasons.active"] == "0x0000000000000004"
        assert row["clocks_event_reasons.sw_power_cap"] == "Active"
        assert row["clocks_event_reasons.gpu_idle"] == "Not Active"


def test_old_throttle_name_is_renamed():
    text = ("index, clocks_throttle_reasons.active, clocks_throttle_reasons.hw_slowdown\n"
            "0, 0x0000000000000008, Active\n")
    m = parse_csv(text)
    assert [c.name for c in m.columns][1:] == [
        "clocks_event_reasons.active", "clocks_event_reasons.hw_slowdown"]
    assert m.columns[2].header == "clocks_throttle_reasons.hw_slowdown"
    assert m.rows[0]["clocks_event_reasons.hw_slowdown"] == "Active"


def test_units_in_values_are_stripped():
    m = parse_csv(_text(TEMP_POWER))
    assert [(r["power.draw"], r["power.limit"]) for r in m.rows] == [(30.39, 600.0), (28.54, 600.0)]
    assert [r["temperature.gpu"] for r in m.rows] == [25, 25]
    assert m.rows[1]["ecc.errors.uncorrected.volatile.total"] == 0
    assert "2 row(s) x 7 column(s)" in m.summary()


def test_na_variants_and_identity_columns():
    text = (
        "index, serial, uuid, memory.total [MiB], fan.speed [%], power.draw [W], "
        "ecc.errors.corrected.volatile.total, vbios_version\n"
        "0, 0324217145110, GPU-d3da8716-eaab-75db-efc1-60e88e1cd55e, 16384 MiB, [N/A], "
        "[Not Supported], N/A, 86.00.52.00.02\n"
    )
    (row,) = parse_csv(text).rows
    assert row["serial"] == "0324217145110"
    assert row["memory.total"] == 16384
    assert row["fan.speed"] is None and row["power.draw"] is None
    assert row["ecc.errors.corrected.volatile.total"] is None
    assert row["vbios_version"] == "86.00.52.00.02"


def test_crlf_and_repeated_header():
    text = _text(TEMP_POWER)
    header = text.splitlines()[0]
    m = parse_csv(text.replace("\n", "\r\n") + header + "\n" + text.splitlines()[1] + "\n")
    assert len(m.rows) == 3 and m.rows[2]["power.draw"] == 30.39


def test_noheader_is_refused():
    text = "\n".join(_text(TEMP_POWER).splitlines()[1:])
    with pytest.raises(ParseError) as e:
        parse_csv(text)
    assert "header" in str(e.value) and e.value.line_no == 1


def test_short_row_quotes_the_line():
    text = _text(REASONS).replace(", Not Active, Active", ", Active", 1)
    with pytest.raises(ParseError) as e:
        parse_csv(text)
    assert e.value.line_no == 2 and "row has 6 fields, header has 7" in str(e.value)


def test_query_error_is_a_model():
    m = parse_csv('Field "clocks.bogus" is not a valid field to query.\n')
    assert m.error is not None and "clocks.bogus" in m.error and m.rows == []


@pytest.mark.parametrize(
    "name", ["nvidia-smi_topo_-m_h100x8_12nics_driver580.txt",
             "nvidia-smi_nvlink_status_a100_single_gpu_tabs.txt",
             "nvidia-smi-q_h200_x1_driver550.txt"])
def test_other_outputs_are_refused(name):
    with pytest.raises(ParseError):
        parse_csv(_text(FIX / name))


@settings(max_examples=60, deadline=None)
@given(mutated([_text(H100_CSV), _text(REASONS), _text(TEMP_POWER)]))
def test_fuzz_only_parse_error(text):
    assert_only_parse_error(parse_csv, text)




def test_cli_json():
    r = _cli("nvidia-smi-csv", str(H100_CSV), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"columns", "rows"}
    assert doc["columns"][17] == {"name": "memory.total", "unit": "MiB",
                                  "header": "memory.total [MiB]"}
    assert doc["rows"][7]["index"] == 7 and doc["rows"][7]["memory.total"] == 81559


def test_cli_wrong_tool_exit_2():
    other = FIX / "nvidia-smi_topo_-m_h100x8_12nics_driver580.txt"
    r = _cli("nvidia-smi-csv", str(other), "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0]
