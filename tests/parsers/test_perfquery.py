"""perfquery parser: -x / -E / plain outputs, error and congestion counters, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.perfquery import parse_perfquery
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "perfquery"
RCV_DETAILS = FIX / "perfquery_E_rcv_error_details.txt"
NONZERO = FIX / "perfquery_x_extended_port_xmitdiscards_linkdowned_nonzero.txt"
TWO_PORTS = FIX / "perfquery_x_extended_two_ports_clean.txt"
IBSTAT_FILE = (Path(__file__).resolve().parent.parent / "fixtures" / "ibstat"
               / "ibstat_h100_cx7_ndr400_ib_active_three_eth_ports_down_disabled.txt")


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def test_extended_nonzero_errors_and_congestion():
    m = parse_perfquery(_text(NONZERO))
    assert m.error is None
    (s,) = m.sections
    assert s.kind == "port_extended" and s.title == "Port extended"
    assert s.lid == 2052 and s.port == 1 and not s.all_ports and s.cap_mask == "0x5300"
    assert len(s.counters) == 25
    assert s.counters["PortXmitData"] == 178791657177235
    assert s.counters["PortRcvPkts"] == 387654829341
    assert s.counters["CounterSelect2"] == 0 and s.counters["QP1Dropped"] == 0
    assert s.errors == {"LinkDownedCounter": 1, "PortRcvSwitchRelayErrors": 7,
                        "PortXmitDiscards": 20046}
    # PortXmitWait is congestion, kept out of the error dict
    assert "PortXmitWait" not in s.errors and s.xmit_wait == 41864608
    assert s.xmit_bytes == 178791657177235 * 4 and s.rcv_bytes == 178762341961629 * 4
    assert m.errors == s.errors and m.xmit_wait == 41864608
    assert "PortXmitDiscards=20046" in m.summary()


def test_extended_two_ports_clean():
    m = parse_perfquery(_text(TWO_PORTS))
    assert [(s.lid, s.port) for s in m.sections] == [(1719, 1), (1719, 2)]
    assert all(s.kind == "port_extended" and len(s.counters) == 25 for s in m.sections)
    assert all(s.errors == {} for s in m.sections) and m.errors == {}
    assert [s.xmit_wait for s in m.sections] == [22730501, 36510964]
    assert m.xmit_wait == 22730501 + 36510964
    assert m.sections[0].counters["PortXmitData"] == 36298026860928
    assert m.sections[1].counters["PortSelect"] == 2
    assert m.sections[1].counters["PortMulticastRcvPkts"] == 0


def test_rcv_error_details():
    m = parse_perfquery(_text(RCV_DETAILS))
    (s,) = m.sections
    assert s.kind == "port_rcv_error_details" and s.title == "PortRcvErrorDetails"
    assert s.lid == 1719 and s.port == 1 and s.cap_mask is None
    assert set(s.counters) == {"PortSelect", "CounterSelect", "PortLocalPhysicalErrors",
                               "PortMalformedPktErrors", "PortBufferOverrunErrors",
                               "PortDLIDMappingErrors", "PortVLMappingErrors",
                               "PortLoopingErrors"}
    assert all(v == 0 for k, v in s.counters.items() if k != "PortSelect")
    assert s.errors == {} and s.xmit_wait is None and s.xmit_bytes is None


def test_rcv_error_details_nonzero_counts_as_error():
    text = _text(RCV_DETAILS).replace("PortMalformedPktErrors:..........0",
                                      "PortMalformedPktErrors:..........12")
    assert parse_perfquery(text).errors == {"PortMalformedPktErrors": 12}


def test_mixed_outputs_do_not_double_count_one_port():
    # the -x output followed by a plain-counter section of the same port (same values)
    plain = _text(NONZERO).replace("# Port extended counters", "# Port counters")
    m = parse_perfquery(_text(NONZERO) + plain)
    assert [s.kind for s in m.sections] == ["port_extended", "port"]
    assert m.errors["PortXmitDiscards"] == 20046 and m.xmit_wait == 41864608


# `$ perfquery` from an old infiniband-diags release (short counter names, no CapMask), as
# quoted in the source of a public HPC monitoring tool.
OLD_PERFQUERY = """\
# Port counters: Lid 936 port 1
PortSelect:......................1
CounterSelect:...................0x0000
SymbolErrors:....................0
LinkRecovers:....................0
LinkDowned:......................0
RcvErrors:.......................0
RcvRemotePhysErrors:.............0
RcvSwRelayErrors:................0
XmtDiscards:.....................0
XmtConstraintErrors:.............0
RcvConstraintErrors:.............0
LinkIntegrityErrors:.............0
ExcBufOverrunErrors:.............0
VL15Dropped:.....................0
XmtData:.........................905972985
RcvData:.........................2411533950
XmtPkts:.........................22945597
RcvPkts:.........................26264095
"""


def test_old_short_names():
    m = parse_perfquery(OLD_PERFQUERY)
    (s,) = m.sections
    assert s.kind == "port" and s.lid == 936 and s.port == 1
    assert s.counters["XmtData"] == 905972985 and s.xmit_bytes == 905972985 * 4
    assert s.rcv_bytes == 2411533950 * 4 and s.errors == {}
    bad = parse_perfquery(OLD_PERFQUERY.replace("XmtDiscards:.....................0",
                                                "XmtDiscards:.....................3"))
    assert bad.errors == {"PortXmitDiscards": 3}


def test_all_ports_aggregate_and_crlf():
    text = _text(NONZERO).replace("port 1 (", "port 255 (").replace("\n", "\r\n")
    (s,) = parse_perfquery(text).sections
    assert s.port == 255 and s.all_ports


def test_query_failure_is_a_model_with_error():
    text = ("ibwarn: [31960] mad_rpc: _do_madrpc failed; dport (Lid 2052)\n"
            "perfquery: iberror: failed: perfquery\n")
    m = parse_perfquery(text)
    assert m.sections == [] and m.error == "perfquery: iberror: failed: perfquery"
    assert len(m.warnings) == 1


def test_rejects_other_text():
    with pytest.raises(ParseError) as e:
        parse_perfquery(_text(IBSTAT_FILE))
    assert e.value.line_no == 1
    with pytest.raises(ParseError):
        parse_perfquery("   \n\n")
    with pytest.raises(ParseError) as e:
        parse_perfquery(_text(NONZERO).replace("PortRcvErrors:...................0",
                                               "PortRcvErrors:...................zero"))
    assert e.value.line_no == 16 and "PortRcvErrors" in str(e.value)
    # counter lines without their '# ... counters:' header
    with pytest.raises(ParseError) as e:
        parse_perfquery("\n".join(_text(NONZERO).splitlines()[1:]))
    assert e.value.line_no == 1


@settings(max_examples=80, deadline=None)
@given(mutated([_text(p) for p in sorted(FIX.iterdir())] + [OLD_PERFQUERY]))
def test_fuzz_perfquery(text):
    assert_only_parse_error(parse_perfquery, text)


def test_long_lines_are_fast():
    for line in ("#" + " " * 200_000 + "counters", "PortXmitData:" + "." * 200_000 + " x y",
                 "# a counters:" + " port" * 50_000):
        assert_only_parse_error(parse_perfquery, _text(NONZERO) + line + "\n", seconds=5)




def test_cli_json():
    r = _cli("perfquery", str(NONZERO), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sec = doc["sections"][0]
    for key in ("kind", "lid", "port", "counters"):
        assert key in sec
    assert doc["errors"] == {"LinkDownedCounter": 1, "PortRcvSwitchRelayErrors": 7,
                             "PortXmitDiscards": 20046}
    assert doc["xmit_wait"] == 41864608


def test_cli_wrong_tool_exit_2():
    r = _cli("perfquery", str(IBSTAT_FILE))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(IBSTAT_FILE) in lines[0]
