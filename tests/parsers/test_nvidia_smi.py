"""nvidia-smi -q parser: text reports of drivers 535-565, -q -x XML, failures, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.nvidia_smi import parse_query
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
A100_X4 = FIX / "nvidia-smi-q_a100_sxm4_x4.txt"
H100_NVL = FIX / "nvidia-smi-q_h100_nvl_x2_driver550.txt"
H100_565 = FIX / "nvidia-smi-q_h100_sxm_x8_driver565.txt"
H100_535 = FIX / "nvidia-smi-q_h100_x8_driver535.161.08.txt"
H200 = FIX / "nvidia-smi-q_h200_x1_driver550.txt"
A100_MIG_XML = FIX / "nvidia-smi_-q_-x_a100_sxm4_40gb_mig_enabled_driver510.xml"
P100_XML = FIX / "nvidia-smi_-q_-x_tesla_p100_driver510_tabs.xml"
ALL = [A100_X4, H100_NVL, H100_565, H100_535, H200, A100_MIG_XML, P100_XML]


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "path,fmt,driver,cuda,attached,bus_ids",
    [
        (A100_X4, "text", "555.42.02", "12.5", 4,
         ["00000000:68:00.0", "00000000:9E:00.0", "00000000:C2:00.0", "00000000:D4:00.0"]),
        (H100_NVL, "text", "550.54.14", "12.4", 2, ["00000000:AD:00.0", "00000000:AE:00.0"]),
        (H100_565, "text", "565.57.01", "12.7", 8,
         ["00000000:18:00.0", "00000000:2A:00.0", "00000000:3A:00.0", "00000000:5D:00.0",
          "00000000:9A:00.0", "00000000:AB:00.0", "00000000:BA:00.0", "00000000:DB:00.0"]),
        (H100_535, "text", "535.161.08", "12.2", 8,
         ["00000000:19:00.0", "00000000:3B:00.0", "00000000:4C:00.0", "00000000:5D:00.0",
          "00000000:9B:00.0", "00000000:BB:00.0", "00000000:CB:00.0", "00000000:DB:00.0"]),
        (H200, "text", "550.90.12", "12.4", 1, ["00000000:03:00.0"]),
        (A100_MIG_XML, "xml", "510.47.03", "11.6", 1, ["00000000:00:04.0"]),
        (P100_XML, "xml", "510.47.03", "11.6", 1, ["00000000:00:04.0"]),
    ],
)
def test_header_and_gpus(path, fmt, driver, cuda, attached, bus_ids):
    m = parse_query(_text(path))
    assert m.format == fmt
    assert (m.driver_version, m.cuda_version, m.attached_gpus) == (driver, cuda, attached)
    assert [g.pci_bus_id for g in m.gpus] == bus_ids
    assert [g.index for g in m.gpus] == list(range(len(bus_ids)))
    assert m.error is None


def test_h100_565_hopper_keys():
    m = parse_query(_text(H100_565))
    assert m.timestamp == "Thu Nov 14 07:00:14 2024"
    g = m.gpus[0]
    assert g.product_name == "NVIDIA H100 80GB HBM3"
    assert g.product_architecture == "Hopper"
    assert g.uuid == "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1"
    assert g.serial == "1654423001593"
    assert g.vbios_version == "96.00.74.00.01"
    assert g.module_id == 2  # under 'Platform Info' since R565
    assert g.persistence_mode == "Enabled"
    assert (g.mig_mode_current, g.mig_mode_pending) == ("Disabled", "Disabled")
    assert (g.fb_memory_total_mib, g.fb_memory_reserved_mib, g.fb_memory_used_mib,
            g.fb_memory_free_mib) == (81559, 454, 1, 81106)
    assert (g.ecc_mode_current, g.ecc_mode_pending) == ("Enabled", "Enabled")
    assert g.ecc_volatile.counters == {
        "sram_correctable": 0, "sram_uncorrectable_parity": 0, "sram_uncorrectable_secded": 0,
        "dram_correctable": 0, "dram_uncorrectable": 0,
    }
    assert (g.ecc_aggregate.correctable, g.ecc_aggregate.uncorrectable) == (0, 0)
    assert g.ecc_sram_threshold_exceeded is False
    assert g.ecc_aggregate_uncorrectable_sram_sources == {
        "sram_l2": 0, "sram_sm": 0, "sram_microcontroller": 0, "sram_pcie": 0, "sram_other": 0,
    }
    # retired pages are N/A on Hopper (row remapping instead)
    assert (g.retired_pages_single_bit, g.retired_pages_double_bit,
            g.retired_pages_pending) == (None, None, None)
    assert g.remapped_rows is not None
    assert (g.remapped_rows.correctable, g.remapped_rows.uncorrectable,
            g.remapped_rows.pending, g.remapped_rows.failure) == (0, 0, False, False)
    assert g.remapped_rows.histogram_banks["max"] == 2560
    assert g.clocks_event_reasons["idle"] is True
    assert g.clocks_event_reasons["hw_power_brake_slowdown"] is False  # nested under HW Slowdown
    assert len(g.clocks_event_reasons) == 9
    assert g.temperature_c == 30
    assert g.temp_tlimit_c == 57
    assert (g.temp_shutdown_tlimit_c, g.temp_slowdown_tlimit_c,
            g.temp_max_operating_tlimit_c) == (-8, -2, 0)
    assert g.temp_shutdown_c is None  # absolute thresholds are not printed by this driver
    assert g.memory_temperature_c == 36
    assert g.power_draw_w == 100.89
    assert (g.power_limit_w, g.power_limit_default_w, g.power_limit_min_w) == (700.0, 700.0, 200.0)
    assert (g.pcie_gen_current, g.pcie_gen_max, g.pcie_width_current, g.pcie_width_max) == (
        5, 5, 16, 16)
    assert g.pcie_replay_count == 7
    assert (g.fabric_state, g.fabric_status) == ("Completed", "Success")
    assert g.gpu_recovery_action == "None"
    assert g.reset_required is False
    assert g.processes == []
    assert [x.pcie_replay_count for x in m.gpus] == [7, 0, 0, 0, 0, 4, 15, 0]
    assert m.gpus[7].power_draw_w == 75.09


def test_h100_535_power_brake_active_and_replays():
    m = parse_query(_text(H100_535))
    assert [g.pcie_replay_count for g in m.gpus] == [67, 63, 52, 43, 49, 53, 82, 67]
    for g in m.gpus:
        assert g.clocks_event_reasons["hw_slowdown"] is True
        assert g.clocks_event_reasons["hw_power_brake_slowdown"] is True
        assert g.clocks_event_reasons["hw_thermal_slowdown"] is False
        assert g.clocks_event_reasons["idle"] is False
    g = m.gpus[0]
    assert g.module_id == 2  # 'Module ID' at GPU level before R565
    assert g.vbios_version == "96.00.74.00.0D"
    assert (g.fb_memory_total_mib, g.fb_memory_used_mib) == (81559, 0)
    assert g.power_draw_w == 67.74 and g.power_limit_w == 700.0
    assert g.temperature_c == 29 and g.temp_tlimit_c == 56
    assert (g.fabric_state, g.fabric_status) == ("Completed", "Success")


def test_a100_x4_remap_pending_and_dram_correctable():
    m = parse_query(_text(A100_X4))
    g0, g1, g2, g3 = m.gpus
    assert g0.minor_number == 3 and g0.module_id == 3
    assert g0.pcie_gen_current == 4 and g0.pcie_gen_host_max == 5
    # absolute thresholds on Ampere
    assert (g0.temperature_c, g0.temp_shutdown_c, g0.temp_slowdown_c,
            g0.temp_max_operating_c) == (25, 92, 89, 85)
    assert g0.temp_tlimit_c is None
    assert g0.memory_temp_max_operating_c == 95
    assert g0.power_limit_w == 500.0 and g0.power_draw_w == 59.77
    assert (g0.fabric_state, g0.fabric_status) == (None, None)
    # GPU1 (00000000:9E:00.0): 353 correctable DRAM errors and a pending row remap
    assert g1.pci_bus_id == "00000000:9E:00.0"
    assert g1.ecc_volatile.correctable == 353
    assert g1.ecc_aggregate.correctable == 353
    assert g1.ecc_volatile.uncorrectable == 0
    assert g1.ecc_volatile.counters["dram_correctable"] == 353
    assert g1.remapped_rows is not None
    assert (g1.remapped_rows.correctable, g1.remapped_rows.pending) == (1, True)
    assert g1.remapped_rows.histogram_banks == {
        "max": 639, "high": 1, "partial": 0, "low": 0, "none": 0}
    # GPU2: one remapped row, nothing pending
    assert (g2.remapped_rows.correctable, g2.remapped_rows.pending) == (1, False)
    assert g3.remapped_rows.correctable == 0
    assert g0.ecc_volatile.correctable == 0


def test_h100_nvl_and_h200():
    nvl = parse_query(_text(H100_NVL))
    assert [g.uuid for g in nvl.gpus] == [
        "GPU-806f8ea2-6428-1096-a076-bb687fb45fb0", "GPU-db6d02a2-1413-eccf-8a17-d99eac29d365"]
    assert nvl.gpus[0].fb_memory_total_mib == 95830
    assert nvl.gpus[0].power_limit_w == 310.0 and nvl.gpus[0].power_draw_w == 61.62
    assert nvl.gpus[0].fabric_state is None  # 'State : N/A'
    h200 = parse_query(_text(H200))
    (g,) = h200.gpus
    assert g.product_name == "NVIDIA H200"
    assert g.fb_memory_total_mib == 143771
    assert g.remapped_rows.histogram_banks["max"] == 3072
    assert g.pcie_gen_host_max is None  # 'Host Max : N/A'
    assert g.temperature_c == 28 and g.power_draw_w == 74.58


def test_xml_a100_mig():
    m = parse_query(_text(A100_MIG_XML))
    (g,) = m.gpus
    assert g.product_name == "NVIDIA A100-SXM4-40GB"
    assert g.uuid == "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"
    assert g.serial == "1324321002473"
    assert g.module_id == 3
    assert (g.mig_mode_current, g.mig_mode_pending) == ("Enabled", "Enabled")
    assert [(d.index, d.gpu_instance_id, d.fb_memory_total_mib, d.fb_memory_used_mib)
            for d in g.mig_devices] == [(0, 1, 19968, 19), (1, 2, 19968, 19)]
    assert g.persistence_mode == "Disabled"
    # volatile counters are N/A under MIG; aggregate are printed
    assert g.ecc_volatile.correctable is None and g.ecc_volatile.uncorrectable is None
    assert (g.ecc_aggregate.correctable, g.ecc_aggregate.uncorrectable) == (0, 0)
    assert g.remapped_rows is None  # <remapped_rows>N/A</remapped_rows>
    # older tag name, value split over two lines in the file
    assert g.clocks_event_reasons["applications_clocks_setting"] is False
    assert g.clocks_event_reasons["idle"] is False
    assert (g.temperature_c, g.temp_shutdown_c, g.temp_slowdown_c, g.temp_max_operating_c) == (
        36, 92, 89, 85)
    assert g.memory_temperature_c == 44
    assert (g.power_draw_w, g.power_limit_w, g.power_limit_enforced_w,
            g.power_limit_default_w) == (66.92, 400.0, 400.0, 400.0)
    assert (g.pcie_gen_current, g.pcie_width_max) == (4, 16)
    assert (g.fb_memory_total_mib, g.fb_memory_used_mib) == (40960, 38)
    assert g.utilization_gpu_pct is None  # N/A under MIG


def test_xml_p100_single_double_bit():
    m = parse_query(_text(P100_XML))
    (g,) = m.gpus
    assert g.product_name == "Tesla P100-PCIE-16GB"
    assert g.serial == "0324217145110"  # leading zero kept
    assert g.mig_mode_current is None and g.mig_devices == []
    assert g.ecc_aggregate.correctable == 3  # single_bit/total
    assert g.ecc_aggregate.counters["single_bit_device_memory"] == 3
    assert g.ecc_aggregate.uncorrectable == 0
    assert g.ecc_volatile.correctable == 0
    assert (g.retired_pages_single_bit, g.retired_pages_double_bit,
            g.retired_pages_pending) == (0, 0, False)
    assert g.clocks_event_reasons["idle"] is True
    assert g.clocks_event_reasons["display_clock_setting"] is False
    assert (g.temperature_c, g.temp_shutdown_c, g.temp_slowdown_c) == (38, 85, 82)
    assert g.power_draw_w == 26.16 and g.power_limit_w == 250.0
    assert g.pcie_gen_max == 3


@pytest.mark.parametrize("path", [H100_565, A100_X4])
def test_tabs_and_crlf_give_the_same_model(path):
    text = _text(path)
    base = parse_query(text)
    assert parse_query(text.replace("    ", "\t")) == base
    assert parse_query(text.replace("\n", "\r\n")) == base


def test_xml_spaces_and_tabs_agree():
    text = _text(P100_XML)
    assert parse_query(text.replace("\t", "    ")) == parse_query(text)


# A pre-Ampere report in the layout of driver R375 (Maxwell/Pascal era, single/double bit ECC,
# 'Clocks Throttle Reasons', 'Power Readings' with 'Enforced Power Limit', one process), cut
# down to the sections read here.
OLD_R375 = """\

==============NVSMI LOG==============

Timestamp                           : Mon Jan  8 10:00:00 2018
Driver Version                      : 375.66

Attached GPUs                       : 1
GPU 0000:84:00.0
    Product Name                    : Tesla M40 24GB
    Persistence Mode                : Enabled
    Serial Number                   : 0320716031234
    GPU UUID                        : GPU-0f0e0d0c-0b0a-0908-0706-050403020100
    VBIOS Version                   : 84.00.56.00.03
    Clocks Throttle Reasons
        Idle                        : Active
        Applications Clocks Setting : Not Active
        SW Power Cap                : Not Active
        HW Slowdown                 : Not Active
        Sync Boost                  : Not Active
        Unknown                     : Not Active
    FB Memory Usage
        Total                       : 22939 MiB
        Used                        : 0 MiB
        Free                        : 22939 MiB
    Ecc Mode
        Current                     : Enabled
        Pending                     : Enabled
    ECC Errors
        Volatile
            Single Bit            
                Device Memory       : 2
                Register File       : 0
                Total               : 2
            Double Bit            
                Device Memory       : 1
                Register File       : 0
                Total               : 1
        Aggregate
            Single Bit            
                Device Memory       : 12
                Total               : 12
            Double Bit            
                Device Memory       : 1
                Total               : 1
    Retired Pages
        Single Bit ECC              : 4
        Double Bit ECC              : 1
        Pending                     : Yes
    Temperature
        GPU Current Temp            : 35 C
        GPU Shutdown Temp           : 97 C
        GPU Slowdown Temp           : 92 C
    Power Readings
        Power Management            : Supported
        Power Draw                  : 16.25 W
        Power Limit                 : 250.00 W
        Default Power Limit         : 250.00 W
        Enforced Power Limit        : 225.00 W
        Min Power Limit             : 150.00 W
        Max Power Limit             : 275.00 W
    Processes
        Process ID                  : 5734
            Type                    : C
            Name                    : python3
            Used GPU Memory         : 7 MiB
        Process ID                  : 5800
            Type                    : C
            Name                    : worker
            Used GPU Memory         : 1024 MiB
"""


def test_old_r375_layout():
    m = parse_query(OLD_R375)
    assert m.driver_version == "375.66" and m.cuda_version is None
    (g,) = m.gpus
    assert g.pci_bus_id == "0000:84:00.0"
    assert g.clocks_event_reasons["idle"] is True and g.clocks_event_reasons["unknown"] is False
    assert (g.ecc_mode_current, g.ecc_mode_pending) == ("Enabled", "Enabled")
    assert (g.ecc_volatile.correctable, g.ecc_volatile.uncorrectable) == (2, 1)
    assert (g.ecc_aggregate.correctable, g.ecc_aggregate.uncorrectable) == (12, 1)
    assert (g.retired_pages_single_bit, g.retired_pages_double_bit,
            g.retired_pages_pending) == (4, 1, True)
    assert g.remapped_rows is None
    assert (g.temp_shutdown_c, g.temp_slowdown_c) == (97, 92)
    assert g.power_limit_w == 225.0  # enforced wins over the requested 'Power Limit'
    assert g.power_limit_requested_w == 250.0
    assert [(p.pid, p.name, p.used_memory_mib) for p in g.processes] == [
        (5734, "python3", 7), (5800, "worker", 1024)]


def test_driver_failure_is_a_model_not_an_error():
    text = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.\n")
    m = parse_query(text)
    assert m.gpus == [] and m.error is not None and "couldn't communicate" in m.error
    assert "ERROR" in m.summary()


def test_gpu_lost_line_inside_report():
    text = _text(H200).replace(
        "Attached GPUs", "Unable to determine the device handle for GPU0000:3B:00.0: "
        "Unknown Error\nAttached GPUs", 1)
    m = parse_query(text)
    assert m.error.startswith("Unable to determine the device handle for GPU0000:3B:00.0")
    assert len(m.gpus) == 1


@pytest.mark.parametrize(
    "text,needle",
    [
        ("CA 'mlx5_0'\n\tCA type: MT4129\n\tNumber of ports: 1\n", "CA 'mlx5_0'"),
        ("", None),
        ("\n\n  \n", None),
    ],
)
def test_not_nvidia_smi_q(text, needle):
    with pytest.raises(ParseError) as e:
        parse_query(text)
    if needle:
        assert needle in str(e.value) and e.value.line_no == 1


def test_bad_number_quotes_the_line():
    text = _text(H200).replace("Total                             : 143771 MiB",
                               "Total                             : lots MiB")
    with pytest.raises(ParseError) as e:
        parse_query(text)
    assert e.value.line is not None and "lots MiB" in e.value.line
    assert _text(H200).splitlines()[e.value.line_no - 1].strip().startswith("Total")


def test_xml_entities_refused():
    evil = ('<?xml version="1.0"?>\n<!DOCTYPE nvidia_smi_log [\n<!ENTITY a "aaaaaaaaaa">\n'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n]>\n'
            "<nvidia_smi_log><driver_version>&b;</driver_version></nvidia_smi_log>\n")
    with pytest.raises(ParseError) as e:
        parse_query(evil)
    assert "entity" in str(e.value) and e.value.line_no == 3


def test_xml_malformed_and_wrong_root():
    text = _text(P100_XML)
    with pytest.raises(ParseError) as e:
        parse_query(text[: len(text) // 2])
    assert "malformed XML" in str(e.value)
    with pytest.raises(ParseError) as e:
        parse_query('<?xml version="1.0"?>\n<html><body/></html>\n')
    assert "nvidia_smi_log" in str(e.value)


def test_summary_mentions_gpus():
    s = parse_query(_text(A100_X4)).summary()
    assert "555.42.02" in s and "4 GPU(s)" in s and "00000000:9E:00.0" in s


_TEXTS = [_text(p) for p in ALL]


@settings(max_examples=80, deadline=None)
@given(mutated(_TEXTS))
def test_fuzz_only_parse_error(text):
    assert_only_parse_error(parse_query, text)




def test_cli_json():
    r = _cli("nvidia-smi-q", str(A100_X4), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["driver_version"] == "555.42.02" and len(doc["gpus"]) == 4
    g = doc["gpus"][1]
    for key in ("index", "pci_bus_id", "product_name", "uuid", "serial", "vbios_version",
                "persistence_mode", "fb_memory_total_mib", "fb_memory_used_mib",
                "ecc_mode_current", "ecc_mode_pending", "ecc_volatile", "ecc_aggregate",
                "retired_pages_single_bit", "remapped_rows", "clocks_event_reasons",
                "temperature_c", "temp_slowdown_c", "temp_shutdown_c", "temp_max_operating_c",
                "power_draw_w", "power_limit_w", "power_limit_enforced_w",
                "power_limit_default_w", "pcie_gen_current", "pcie_gen_max",
                "pcie_width_current", "pcie_width_max", "mig_mode_current", "fabric_state"):
        assert key in g, key
    assert g["remapped_rows"]["pending"] is True
    assert g["ecc_volatile"]["correctable"] == 353


def test_cli_xml_json():
    r = _cli("nvidia-smi-q", str(A100_MIG_XML), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "xml" and len(doc["gpus"][0]["mig_devices"]) == 2


def test_cli_wrong_tool_exit_2():
    other = FIX / "nvidia-smi_topo_-m_h100x8_12nics_driver580.txt"
    r = _cli("nvidia-smi-q", str(other), "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0]
