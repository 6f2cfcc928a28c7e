"""ibstat / ibstatus / ibv_devinfo parsers: real outputs, normalisation, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.infiniband import (
    norm_guid,
    norm_link_layer,
    norm_phys_state,
    norm_state,
    parse_ibstat,
    parse_ibstatus,
    parse_ibv_devinfo,
)
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures"
IBSTAT = FIX / "ibstat"
IBSTATUS = FIX / "ibstatus"
DEVINFO = FIX / "ibv_devinfo"

IBSTAT_A100 = IBSTAT / "ibstat_a100_node_mt4126_200g_ib_and_eth_all_active.txt"
IBSTAT_NDR = IBSTAT / "ibstat_h100_cx7_ndr400_ib_active_three_eth_ports_down_disabled.txt"
IBSTAT_ROCE = IBSTAT / "ibstat_h100_cx7_roce400_ethernet_all_active.txt"
IBSTAT_ROCE_DOWN = IBSTAT / "ibstat_h100_cx7_roce_two_400g_ports_down_disabled.txt"
IBSTATUS_HDR = IBSTATUS / "ibstatus_a100_cx6_hdr200_all_active.txt"
IBSTATUS_FDR = IBSTATUS / "ibstatus_cx3_mlx4_fdr56_tabs.txt"
DEVINFO_CX3 = DEVINFO / "ibv_devinfo_cx3_mlx4_fdr_dual_port_port2_down.txt"
DEVINFO_SPARK = DEVINFO / "ibv_devinfo_cx7_fw28.45_roce_two_of_four_ports_down_dgx_spark.txt"


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def _port(model, ca_name: str, port: int = 1):
    ca = next(c for c in model.cas if c.name == ca_name)
    return ca, next(p for p in ca.ports if p.port == port)


# --------------------------------------------------------------------------- ibstat fixtures


def test_ibstat_a100_all_active_mixed_link_layers():
    m = parse_ibstat(_text(IBSTAT_A100))
    assert m.tool == "ibstat" and m.error is None
    assert [c.name for c in m.cas] == [f"mlx5_{i}" for i in range(9)]
    assert all(c.ca_type == "MT4126" for c in m.cas)
    ports = m.ports()
    assert len(ports) == 9
    assert all(p.state == "ACTIVE" and p.physical_state == "LinkUp" for _, p in ports)
    assert all(p.rate_gbps == 200 for _, p in ports)
    layers = [p.link_layer for _, p in ports]
    assert layers.count("InfiniBand") == 8 and layers.count("Ethernet") == 1
    ca0, p0 = _port(m, "mlx5_0")
    assert p0.link_layer == "Ethernet" and p0.lid == 0 and p0.sm_lid == 0
    assert ca0.firmware == "22.35.2302"
    assert ca0.node_guid == "0x1e918efffe7a03a0"
    assert p0.port_guid == "0x1c918efffe7a03a0"
    ca1, p1 = _port(m, "mlx5_1")
    assert ca1.firmware == "28.37.1014" and ca1.num_ports == 1
    assert p1.lid == 1369 and p1.sm_lid == 83 and p1.lmc == 0
    assert p1.capability_mask == "0xa651ec48"
    assert ca1.sys_image_guid == "0x946dae03009377da"


def test_ibstat_ndr400_three_ethernet_ports_down_disabled():
    m = parse_ibstat(_text(IBSTAT_NDR))
    assert len(m.cas) == 12
    ib = [(c, p) for c, p in m.ports() if p.link_layer == "InfiniBand"]
    assert len(ib) == 8
    assert all(p.state == "ACTIVE" and p.rate_gbps == 400 and c.ca_type == "MT4129"
               for c, p in ib)
    assert all(c.firmware == "28.39.1002" for c, _ in ib)
    down = sorted(c.name for c, p in m.ports() if p.state == "DOWN")
    assert down == ["mlx5_2", "mlx5_7", "mlx5_8"]
    for name in down:
        ca, p = _port(m, name)
        assert p.physical_state == "Disabled" and p.rate_gbps == 40
        assert p.link_layer == "Ethernet" and ca.ca_type == "MT4125"
    _, p0 = _port(m, "mlx5_0")
    assert p0.lid == 75 and p0.sm_lid == 334
    _, p1 = _port(m, "mlx5_1")
    assert p1.state == "ACTIVE" and p1.rate_gbps == 100 and p1.link_layer == "Ethernet"


def test_ibstat_roce_all_active():
    m = parse_ibstat(_text(IBSTAT_ROCE))
    ports = m.ports()
    assert len(ports) == 12
    assert all(p.state == "ACTIVE" and p.link_layer == "Ethernet" for _, p in ports)
    rates = sorted(p.rate_gbps for _, p in ports)
    assert rates == [100] * 4 + [400] * 8
    assert {c.name for c, p in ports if p.rate_gbps == 100} == {
        "mlx5_1", "mlx5_2", "mlx5_7", "mlx5_8"}
    _, p1 = _port(m, "mlx5_1")
    assert p1.port_guid == "0x0000000000000000"


def test_ibstat_roce_two_400g_ports_down():
    m = parse_ibstat(_text(IBSTAT_ROCE_DOWN))
    down = {c.name: p for c, p in m.ports() if p.state != "ACTIVE"}
    assert sorted(down) == ["mlx5_11", "mlx5_5"]
    for p in down.values():
        assert p.state == "DOWN" and p.physical_state == "Disabled" and p.rate_gbps == 40
    ca11, _ = _port(m, "mlx5_11")
    assert ca11.ca_type == "MT4129" and ca11.node_guid == "0xa088c20300bb3514"
    assert sum(1 for _, p in m.ports() if p.state == "ACTIVE") == 10
    s = m.summary()
    assert "mlx5_11/1 DOWN/Disabled" in s and "mlx5_5/1 DOWN/Disabled" in s


# BlueField-3 (MT41692) ports with the link trained but no subnet manager: logical Down,
# physical LinkUp, LID 65535. Published in a public diagnostic note (`ibstat` run once per CA
# by the author's loop, which printed the '---- mlx5_1 ----' separator line).
IBSTAT_BF3_NO_SM = """\
CA 'mlx5_0'
\tCA type: MT41692
\tNumber of ports: 1
\tFirmware version: 32.47.1088
\tHardware version: 1
\tNode GUID: 0xc470bd0300b8638a
\tSystem image GUID: 0xc470bd0300b8638a
\tPort 1:
\t\tState: Down
\t\tPhysical state: LinkUp
\t\tRate: 100
\t\tBase lid: 65535
\t\tLMC: 0
\t\tSM lid: 0
\t\tCapability mask: 0xa751ec48
\t\tPort GUID: 0xc470bd0300b8638a
\t\tLink layer: InfiniBand
---- mlx5_1 ----
CA 'mlx5_1'
\tCA type: MT41692
\tNumber of ports: 1
\tFirmware version: 32.47.1088
\tHardware version: 1
\tNode GUID: 0xc470bd0300b8638b
\tSystem image GUID: 0xc470bd0300b8638a
\tPort 1:
\t\tState: Down
\t\tPhysical state: LinkUp
\t\tRate: 100
\t\tBase lid: 65535
\t\tLMC: 0
\t\tSM lid: 0
\t\tCapability mask: 0xa751ec48
\t\tPort GUID: 0xc470bd0300b8638b
\t\tLink layer: InfiniBand
"""


def test_ibstat_link_up_but_logically_down_no_sm():
    m = parse_ibstat(IBSTAT_BF3_NO_SM)
    assert [c.name for c in m.cas] == ["mlx5_0", "mlx5_1"]
    for _, p in m.ports():
        assert p.state == "DOWN" and p.physical_state == "LinkUp"
        assert p.lid == 65535 and p.rate_gbps == 100 and p.link_layer == "InfiniBand"
    assert m.cas[0].ca_type == "MT41692" and m.cas[0].hardware_version == "1"


def test_ibstat_crlf_and_elision_tolerated():
    text = _text(IBSTAT_NDR).replace("\n", "\r\n")
    lines = text.split("\r\n")
    lines.insert(20, "[...]")
    m = parse_ibstat("\r\n".join(lines))
    assert len(m.cas) == 12


def test_ibstat_polling_and_initializing_states():
    # One port of the NDR fixture with its states switched to the other words ibstat prints.
    text = _text(IBSTAT_NDR).replace("State: Active", "State: Initializing", 1).replace(
        "Physical state: LinkUp", "Physical state: Polling", 1)
    m = parse_ibstat(text)
    _, p0 = _port(m, "mlx5_0")
    assert p0.state == "INIT" and p0.physical_state == "Polling"


def test_ibstat_rejects_other_text():
    with pytest.raises(ParseError) as e:
        parse_ibstat(_text(IBSTATUS_HDR))
    assert e.value.line_no == 1 and "Infiniband device 'mlx5_0'" in str(e.value)
    with pytest.raises(ParseError):
        parse_ibstat("")
    with pytest.raises(ParseError) as e:
        parse_ibstat(_text(IBSTAT_A100).replace("Rate: 200", "Rate: fast", 1))
    assert e.value.line_no == 11


def test_ibstat_panic_is_an_error_not_a_parse_error():
    m = parse_ibstat("ibpanic: [12345] main: stat of IB device 'mlx5_9' failed: "
                     "No such file or directory\n")
    assert m.cas == [] and m.error is not None and "mlx5_9" in m.error


# --------------------------------------------------------------------------- ibstatus fixtures


def test_ibstatus_hdr200_spaces():
    m = parse_ibstatus(_text(IBSTATUS_HDR))
    assert m.tool == "ibstatus"
    assert [c.name for c in m.cas] == [f"mlx5_{i}" for i in range(9)]
    ib = [(c, p) for c, p in m.ports() if p.link_layer == "InfiniBand"]
    assert len(ib) == 8
    assert all(p.state == "ACTIVE" and p.physical_state == "LinkUp" and p.rate_gbps == 200
               and p.width == "4X" and p.speed == "HDR" and p.sm_lid == 1 for _, p in ib)
    _, p0 = _port(m, "mlx5_0")
    assert p0.lid == 0x33BF and p0.default_gid == "fe80:0000:0000:0000:0015:5dff:fd34:11eb"
    _, p8 = _port(m, "mlx5_8")
    assert p8.link_layer == "Ethernet" and p8.rate_gbps == 40 and p8.speed == "QDR"
    assert p8.default_gid is None and p8.lid == 0


def test_ibstatus_fdr56_tabs_two_ports_one_ca():
    m = parse_ibstatus(_text(IBSTATUS_FDR))
    assert len(m.cas) == 1 and m.cas[0].name == "mlx4_0"
    ports = m.cas[0].ports
    assert [p.port for p in ports] == [1, 2]
    assert all(p.state == "ACTIVE" and p.rate_gbps == 56 and p.width == "4X"
               and p.speed == "FDR" for p in ports)
    assert [p.lid for p in ports] == [3, 2] and [p.sm_lid for p in ports] == [3, 2]
    assert ports[1].default_gid == "fe80:0000:0000:0000:0002:c903:00a4:e722"


def test_ibstatus_rejects_ibstat():
    with pytest.raises(ParseError) as e:
        parse_ibstatus(_text(IBSTAT_A100))
    assert e.value.line_no == 1


# --------------------------------------------------------------------------- ibv_devinfo fixtures


def test_ibv_devinfo_cx3_port2_down():
    m = parse_ibv_devinfo(_text(DEVINFO_CX3))
    assert [c.name for c in m.cas] == ["mlx4_1", "mlx4_0"]
    for ca in m.cas:
        assert ca.hca_id == ca.name and ca.firmware == "2.42.5000"
        assert ca.vendor_part_id == 4099 and ca.ca_type == "MT4099"
        assert ca.num_ports == 2 and ca.board_id == "MT_1090120019"
        assert ca.transport == "InfiniBand"
        assert [p.state for p in ca.ports] == ["ACTIVE", "DOWN"]
        assert all(p.active_mtu == 4096 and p.link_layer == "InfiniBand" for p in ca.ports)
        # no -v: no phys_state, no width/speed, so no rate
        assert all(p.rate_gbps is None and p.physical_state is None for p in ca.ports)
    assert m.cas[0].node_guid == "0x7cfe900300a595c0"
    _, p1 = _port(m, "mlx4_1", 1)
    assert p1.lid == 22 and p1.sm_lid == 1
    _, p1b = _port(m, "mlx4_0", 1)
    assert p1b.lid == 32 and p1b.sm_lid == 18


def test_ibv_devinfo_dgx_spark_two_of_four_down():
    m = parse_ibv_devinfo(_text(DEVINFO_SPARK))
    assert [c.name for c in m.cas] == ["rocep1s0f0", "rocep1s0f1", "roceP2p1s0f0",
                                       "roceP2p1s0f1"]
    assert all(c.firmware == "28.45.4028" and c.ca_type == "MT4129"
               and c.board_id == "NVD0000000087" for c in m.cas)
    states = {c.name: p.state for c, p in m.ports()}
    assert states == {"rocep1s0f0": "DOWN", "rocep1s0f1": "ACTIVE",
                      "roceP2p1s0f0": "DOWN", "roceP2p1s0f1": "ACTIVE"}
    mtus = {c.name: p.active_mtu for c, p in m.ports()}
    assert mtus == {"rocep1s0f0": 1024, "rocep1s0f1": 4096,
                    "roceP2p1s0f0": 1024, "roceP2p1s0f1": 4096}
    assert all(p.link_layer == "Ethernet" and p.max_mtu == 4096 for _, p in m.ports())


# Constructed: the DGX Spark fixture's first block with the four verbose port lines that a
# public note quotes from `ibv_devinfo -d rocep1s0f0 -v` on the same machine type, plus two
# -v flag-list lines; checks width x lane speed -> rate.
DEVINFO_VERBOSE = """\
hca_id:\trocep1s0f0
\ttransport:\t\t\tInfiniBand (0)
\tfw_ver:\t\t\t\t28.45.4028
\tnode_guid:\t\t\t4cbb:4703:002d:1a16
\tvendor_id:\t\t\t0x02c9
\tvendor_part_id:\t\t\t4129
\tdevice_cap_flags:\t\t0x21361c36
\t\t\t\t\tBAD_PKEY_CNTR
\t\t\t\t\tBAD_QKEY_CNTR
\tphys_port_cnt:\t\t\t1
\t\tport:\t1
\t\t\tstate:\t\t\tPORT_ACTIVE (4)
\t\t\tmax_mtu:\t\t4096 (5)
\t\t\tactive_mtu:\t\t4096 (5)
\t\t\tphys_state:\t\tLINK_UP (5)
\t\t\tactive_width:\t\t2X (16)
\t\t\tactive_speed:\t\t100.0 Gbps (128)
\t\t\tlink_layer:\t\tEthernet
\t\t\tGID[  0]:\t\tfe80:0000:0000:0000:4ebb:47ff:fe2d:1a16, RoCE v1
"""


def test_ibv_devinfo_verbose_rate_from_width_and_speed():
    m = parse_ibv_devinfo(DEVINFO_VERBOSE)
    (_, p), = m.ports()
    assert p.state == "ACTIVE" and p.physical_state == "LinkUp"
    assert p.width == "2X" and p.speed == "NDR" and p.rate_gbps == 200
    four_x_edr = DEVINFO_VERBOSE.replace("2X (16)", "4X (2)").replace(
        "100.0 Gbps (128)", "25.0 Gbps (32)")
    (_, p), = parse_ibv_devinfo(four_x_edr).ports()
    assert p.rate_gbps == 100 and p.speed == "EDR"
    fdr = DEVINFO_VERBOSE.replace("2X (16)", "4X (2)").replace("100.0 Gbps (128)", "FDR")
    (_, p), = parse_ibv_devinfo(fdr).ports()
    assert p.rate_gbps == 56
    no_width = DEVINFO_VERBOSE.replace("\t\t\tactive_width:\t\t2X (16)\n", "")
    (_, p), = parse_ibv_devinfo(no_width).ports()
    assert p.rate_gbps is None and p.speed == "NDR"


def test_ibv_devinfo_no_devices_and_driver_warning():
    m = parse_ibv_devinfo("libibverbs: Warning: couldn't load driver 'libvmw_pvrdma-rdmav34.so'"
                          ": libvmw_pvrdma-rdmav34.so: cannot open shared object file\n"
                          "No IB devices found\n")
    assert m.cas == [] and m.error == "No IB devices found" and len(m.warnings) == 1


def test_ibv_devinfo_rejects_other_text():
    with pytest.raises(ParseError) as e:
        parse_ibv_devinfo(_text(IBSTAT_NDR))
    assert e.value.line_no == 1 and "CA 'mlx5_0'" in str(e.value)


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("raw, want", [
    ("Active", "ACTIVE"), ("Down", "DOWN"), ("Initializing", "INIT"), ("Armed", "ARMED"),
    ("4: ACTIVE", "ACTIVE"), ("1: DOWN", "DOWN"), ("2: INIT", "INIT"), ("3: ARMED", "ARMED"),
    ("PORT_ACTIVE (4)", "ACTIVE"), ("PORT_DOWN (1)", "DOWN"), ("PORT_INIT (2)", "INIT"),
    ("PORT_ARMED (3)", "ARMED"), ("PORT_ACTIVE_DEFER (5)", "ACTIVE_DEFER"),
    ("weird (4)", "ACTIVE"), ("Something Else", "SOMETHING_ELSE"),
])
def test_norm_state(raw, want):
    assert norm_state(raw) == want


@pytest.mark.parametrize("raw, want", [
    ("LinkUp", "LinkUp"), ("Disabled", "Disabled"), ("Polling", "Polling"),
    ("5: LinkUp", "LinkUp"), ("3: Disabled", "Disabled"), ("2: Polling", "Polling"),
    ("LINK_UP (5)", "LinkUp"), ("DISABLED (3)", "Disabled"), ("POLLING (2)", "Polling"),
    ("PORT_CONFIGURATION_TRAINING (4)", "PortConfigurationTraining"),
    ("LinkErrorRecovery", "LinkErrorRecovery"), ("7: Phy Test", "PhyTest"),
])
def test_norm_phys_state(raw, want):
    assert norm_phys_state(raw) == want


def test_norm_link_layer_and_guid():
    assert norm_link_layer("InfiniBand") == "InfiniBand"
    assert norm_link_layer("ETHERNET") == "Ethernet"
    assert norm_guid("7cfe:9003:00a5:95c0") == "0x7cfe900300a595c0"
    assert norm_guid("0x946DAE0300CDE72C") == "0x946dae0300cde72c"
    assert norm_guid("not-a-guid") == "not-a-guid"


# --------------------------------------------------------------------------- fuzzing

IBSTAT_TEXTS = [_text(p) for p in sorted(IBSTAT.iterdir())] + [IBSTAT_BF3_NO_SM]
IBSTATUS_TEXTS = [_text(p) for p in sorted(IBSTATUS.iterdir())]
DEVINFO_TEXTS = [_text(p) for p in sorted(DEVINFO.iterdir())] + [DEVINFO_VERBOSE]


@settings(max_examples=60, deadline=None)
@given(mutated(IBSTAT_TEXTS))
def test_fuzz_ibstat(text):
    assert_only_parse_error(parse_ibstat, text)


@settings(max_examples=60, deadline=None)
@given(mutated(IBSTATUS_TEXTS))
def test_fuzz_ibstatus(text):
    assert_only_parse_error(parse_ibstatus, text)


@settings(max_examples=60, deadline=None)
@given(mutated(DEVINFO_TEXTS))
def test_fuzz_ibv_devinfo(text):
    assert_only_parse_error(parse_ibv_devinfo, text)


@pytest.mark.parametrize("parse", [parse_ibstat, parse_ibstatus, parse_ibv_devinfo])
def test_long_lines_are_fast(parse):
    # a pathological line must not make any matcher quadratic/exponential
    for line in (" " * 200_000 + "x", "State:" + " " * 200_000 + "(", "(" * 100_000 + ")"):
        assert_only_parse_error(parse, "CA 'x'\nhca_id:\tx\n" + line + "\n", seconds=5)


# --------------------------------------------------------------------------- CLI




@pytest.mark.parametrize("tool, path", [
    ("ibstat", IBSTAT_NDR), ("ibstatus", IBSTATUS_FDR), ("ibv_devinfo", DEVINFO_SPARK),
])
def test_cli_json_keys(tool, path):
    r = _cli(tool, str(path), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ca = doc["cas"][0]
    for key in ("name", "firmware", "ports"):
        assert key in ca
    for key in ("port", "state", "physical_state", "rate_gbps", "link_layer"):
        assert key in ca["ports"][0]


def test_cli_ibstat_values():
    r = _cli("ibstat", str(IBSTAT_NDR), "--json")
    doc = json.loads(r.stdout)
    mlx5_0 = doc["cas"][0]
    assert mlx5_0["name"] == "mlx5_0" and mlx5_0["firmware"] == "28.39.1002"
    assert mlx5_0["ports"][0]["rate_gbps"] == 400 and isinstance(
        mlx5_0["ports"][0]["rate_gbps"], int)
    r = _cli("ibstat", str(IBSTAT_NDR))
    assert r.returncode == 0 and "mlx5_2/1 DOWN/Disabled" in r.stdout


def test_cli_wrong_tool_exit_2():
    r = _cli("ibstat", str(DEVINFO_CX3), "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(DEVINFO_CX3) in lines[0]
