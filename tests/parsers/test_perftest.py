"""perftest parsers (ib_write_bw, ib_write_lat): real outputs, units, failures, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.perftest import (
    MIB_PER_SEC_TO_GBPS,
    parse_ib_write_bw,
    parse_ib_write_lat,
)
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "perftest"
STREAM = FIX / "ib_write_bw_dgx_spark_cx7_roce_run_infinitely_stream.txt"
CUDA = FIX / "ib_write_bw_h200_use_cuda_dmabuf_gpudirect_sweep.txt"
LAT = FIX / "ib_write_lat_dgx_spark_cx7_client_2B.txt"
IBSTAT_FILE = (Path(__file__).resolve().parent.parent / "fixtures" / "ibstat"
               / "ibstat_a100_node_mt4126_200g_ib_and_eth_all_active.txt")


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- fixtures


def test_bw_run_infinitely_stream_cut_off():
    m = parse_ib_write_bw(_text(STREAM))
    assert m.test == "RDMA_Write BW Test"
    assert m.device == "roceP2p1s0f0" and m.transport == "IB" and m.connection_type == "RC"
    assert m.link_type == "Ethernet" and m.mtu == 1024 and m.gid_index == 3 and m.num_qps == 1
    assert m.settings["CQ Moderation"] == "1" and m.settings["Data ex. method"] == "Ethernet"
    assert m.report_unit == "Gb/sec"
    assert len(m.rows) == 6 and all(r.bytes == 65536 for r in m.rows)
    assert [r.iterations for r in m.rows] == [927940, 927790, 927766, 927754, 927804, 927807]
    assert [r.bw_avg_gbps for r in m.rows] == [97.28, 97.28, 97.28, 97.28, 97.29, 97.28]
    assert m.rows[0].msg_rate_mpps == 0.185548 and m.rows[4].msg_rate_mpps == 0.185557
    # the run said the peak is not measured: the printed 0.00 is not a measurement
    assert not m.peak_measured and all(r.bw_peak_gbps is None for r in m.rows)
    assert m.warnings == ["WARNING: BW peak won't be measured in this run."]
    assert not m.complete and not m.truncated and m.error is None
    assert m.max_bw_avg_gbps == 97.29
    assert m.local[0].qpn == "0x01a9" and m.local[0].psn == "0x5e41f9"
    assert m.local[0].gid == "00:00:00:00:00:00:00:00:00:00:255:255:192:168:201:13"
    assert m.remote[0].rkey == "0x1a0300" and m.remote[0].lid == 0
    assert not m.use_cuda
    assert "incomplete" in m.summary()


def test_bw_cuda_dmabuf_sweep():
    m = parse_ib_write_bw(_text(CUDA))
    assert m.use_cuda and m.use_dmabuf and m.gpu_name == "NVIDIA H200" and m.cuda_device == 0
    assert m.device == "mlx5_3" and m.mtu == 4096 and m.link_type == "Ethernet"
    assert m.settings["Lock-free"] == "OFF" and m.settings["CQE Poll Batch"] == "16"
    assert len(m.rows) == 23
    assert [r.bytes for r in m.rows] == [2 ** k for k in range(1, 24)]
    assert all(r.iterations == 5000 for r in m.rows)
    first = m.rows[0]
    assert (first.bw_peak_gbps, first.bw_avg_gbps, first.msg_rate_mpps) == (
        0.05724, 0.056633, 3.53956)
    by_size = {r.bytes: r for r in m.rows}
    assert by_size[65536].bw_peak_gbps == 140.90 and by_size[65536].bw_avg_gbps == 140.88
    assert by_size[8388608].bw_avg_gbps == 140.40 and by_size[8388608].msg_rate_mpps == 0.002092
    assert m.max_bw_avg_gbps == 140.95 and by_size[131072].bw_avg_gbps == 140.95
    assert m.peak_measured and m.complete and m.error is None and m.warnings == []
    assert m.remote[0].gid == "00:00:00:00:00:00:00:00:00:00:255:255:10:00:04:08"
    s = m.summary()
    assert "CUDA (DMA-BUF)" in s and "140.95 Gb/s at 131072 B" in s


def test_lat_single_row_spaces():
    m = parse_ib_write_lat(_text(LAT))
    assert m.test == "RDMA_Write Latency Test" and m.device == "rocep1s0f1"
    assert m.link_type == "IB" and m.mtu == 1024 and m.settings["rdma_cm QPs"] == "ON"
    (r,) = m.rows
    assert r.bytes == 2 and r.iterations == 1000
    assert (r.t_min_us, r.t_max_us, r.t_typical_us, r.t_avg_us, r.t_stdev_us) == (
        1.42, 1.93, 1.47, 1.47, 0.00)
    assert r.t_p99_us == 1.57 and r.t_p99_9_us == 1.93
    assert m.complete and m.error is None
    assert m.local[0].qpn == "0x02ee" and m.remote[0].psn == "0x14568b"


# --------------------------------------------------------------------------- failures

# A size sweep that died at 128 KiB (google/dranet, examples/demo_gke_rdma/README.md, the
# ib_write_bw client block; the shell prompt is left out, the echoed command line kept).
MID_SWEEP_FAILURE = """\
 ib_write_bw 10.0.4.8 -a --report_gbits
---------------------------------------------------------------------------------------
                    RDMA_Write BW Test
 Dual-port       : OFF          Device         : mlx5_3
 Number of qps   : 1            Transport type : IB
 Connection type : RC           Using SRQ      : OFF
 PCIe relax order: ON           Lock-free      : OFF
 ibv_wr* API     : ON           Using DDP      : OFF
 TX depth        : 128
 CQ Moderation   : 100
 CQE Poll Batch  : 16
 Mtu             : 4096[B]
 Link type       : Ethernet
 GID index       : 3
 Max inline data : 0[B]
 rdma_cm QPs     : OFF
 Data ex. method : Ethernet
---------------------------------------------------------------------------------------
 local address: LID 0000 QPN 0x029d PSN 0x85dc13 RKey 0x020f00 VAddr 0x0078cecebed000
 GID: 00:00:00:00:00:00:00:00:00:00:255:255:10:00:04:07
 remote address: LID 0000 QPN 0x02a3 PSN 0xa645ce RKey 0x021400 VAddr 0x007a2e150d7000
 GID: 00:00:00:00:00:00:00:00:00:00:255:255:10:00:04:08
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]
 2          5000           0.050986            0.048851            3.053158
 4          5000             0.10               0.10                 3.274080
 8          5000             0.21               0.21                 3.203698
 16         5000             0.40               0.40                 3.119732
 32         5000             0.83               0.83                 3.250371
 64         5000             1.64               1.63                 3.188603
 128        5000             3.20               3.18                 3.105230
 256        5000             6.33               6.29                 3.070249
 512        5000             13.01              13.00                3.174636
 1024       5000             25.75              25.65                3.130913
 2048       5000             49.51              49.38                3.013817
 4096       5000             81.05              80.69                2.462356
 8192       5000             163.65             163.47               2.494365
 16384      5000             282.31             280.96               2.143528
 32768      5000             376.54             376.29               1.435442
 65536      5000             381.50             381.41               0.727473
 Completion with error at client
 Failed status 10: wr_id 0 syndrom 0x88
scnt=128, ccnt=0
 Failed to complete run_iter_bw function successfully
"""


def test_bw_failure_mid_sweep_keeps_rows_and_reports_error():
    m = parse_ib_write_bw(MID_SWEEP_FAILURE)
    assert len(m.rows) == 16 and m.rows[-1].bytes == 65536
    assert m.rows[-1].bw_avg_gbps == 381.41 and m.max_bw_avg_gbps == 381.41
    assert m.error == "Completion with error at client"
    assert m.errors == ["Completion with error at client",
                        "Failed status 10: wr_id 0 syndrom 0x88",
                        "Failed to complete run_iter_bw function successfully"]
    assert not m.complete
    assert "error: Completion with error at client" in m.summary()


# Connection refused before any header: published in a public Kubernetes/SR-IOV note.
CONNECT_FAILURE = """\
Couldn't connect to 10.55.206.82:18515
Unable to open file descriptor for socket connection Unable to init the socket connection
"""

# Logical port Down: published in a public diagnostic note (BlueField-3, no subnet manager).
PORT_DOWN_FAILURE = """\
 Port number 1 state is Down
 Couldn't set the link layer
 Couldn't get context for the device
 WARNING: BW peak won't be measured in this run.
"""


def test_bw_failure_before_header():
    m = parse_ib_write_bw(CONNECT_FAILURE)
    assert m.rows == [] and m.error == "Couldn't connect to 10.55.206.82:18515"
    assert len(m.errors) == 2 and m.device is None
    m = parse_ib_write_bw(PORT_DOWN_FAILURE)
    assert m.error == "Couldn't set the link layer" and m.rows == []
    assert "Couldn't get context for the device" in m.errors and not m.peak_measured


def test_lat_failure_before_header():
    m = parse_ib_write_lat(CONNECT_FAILURE)
    assert m.rows == [] and m.error.startswith("Couldn't connect to")


# --------------------------------------------------------------------------- units and layouts


def test_mb_and_mib_per_sec_converted_to_gbps():
    assert MIB_PER_SEC_TO_GBPS == pytest.approx(0.008388608)
    # constructed: the stream fixture with its header in perftest's default (non
    # --report_gbits) unit, as older and newer releases spell it
    for unit in ("MB/sec", "MiB/sec"):
        m = parse_ib_write_bw(_text(STREAM).replace("Gb/sec", unit))
        assert m.report_unit == unit
        assert m.rows[0].bw_avg_gbps == pytest.approx(97.28 * 1_048_576 * 8 / 1e9)
    # header as perftest prints it; the row is one published under such a header (tabs kept)
    text = (" #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]\n"
            " 65536      5000             11030.78            11030.45\t\t     0.176487\n")
    (r,) = parse_ib_write_bw(text).rows
    assert r.bw_avg_gbps == pytest.approx(92.530, abs=1e-3)
    assert r.bw_peak_gbps == pytest.approx(92.533, abs=1e-3) and r.msg_rate_mpps == 0.176487


def test_per_port_and_cpu_util_columns():
    # header strings from perftest's source (RESULT_FMT_G_PER_PORT + CPU util), constructed row
    text = (" #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]"
            "   BW Port1[Gb/sec]   MsgRate Port1[Mpps]   BW Port2[Gb/sec]   MsgRate Port2[Mpps]"
            "    CPU_Util[%]\n"
            " 65536      10000          180.10             179.90\t\t   0.343128        90.00"
            "            0.171600              89.90            0.171528\t    12.50\n")
    (r,) = parse_ib_write_bw(text).rows
    assert (r.bw_port1_gbps, r.msg_rate_port1_mpps, r.bw_port2_gbps) == (90.0, 0.1716, 89.9)
    assert r.cpu_util_pct == 12.5 and r.bw_avg_gbps == 179.9


def test_lat_duration_table():
    # header string from perftest's source (RESULT_FMT_LAT_DUR, ib_write_lat -D), constructed row
    text = (" #bytes        #iterations       t_avg[usec]    tps average\n"
            " 2             3403127            1.47           680625.40\n")
    (r,) = parse_ib_write_lat(text).rows
    assert r.iterations == 3403127 and r.t_avg_us == 1.47 and r.tps_avg == 680625.40
    assert r.t_min_us is None


def test_truncated_last_row_and_garbled_row():
    cut = _text(STREAM)[: _text(STREAM).rindex("97.28")]
    m = parse_ib_write_bw(cut)
    assert m.truncated and len(m.rows) == 5
    lines = _text(CUDA).splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(" 4096 "))
    lines[i] = " 4096       5000             86.67"
    with pytest.raises(ParseError) as e:
        parse_ib_write_bw("\n".join(lines))
    assert e.value.line_no == i + 1


def test_wrong_test_kind_and_other_text_rejected():
    with pytest.raises(ParseError) as e:
        parse_ib_write_bw(_text(LAT))
    assert "latency" in str(e.value) and e.value.line_no == 2
    with pytest.raises(ParseError) as e:
        parse_ib_write_lat(_text(CUDA))
    assert "bandwidth" in str(e.value)
    with pytest.raises(ParseError) as e:
        parse_ib_write_bw(_text(IBSTAT_FILE))
    assert e.value.line_no == 1
    with pytest.raises(ParseError):
        parse_ib_write_lat("")
    with pytest.raises(ParseError) as e:
        parse_ib_write_lat(_text(LAT).replace("[usec]", "[cycles]"))
    assert "cycles" in str(e.value)


# --------------------------------------------------------------------------- fuzzing

BW_TEXTS = [_text(STREAM), _text(CUDA), MID_SWEEP_FAILURE, CONNECT_FAILURE]
LAT_TEXTS = [_text(LAT), PORT_DOWN_FAILURE]


@settings(max_examples=80, deadline=None)
@given(mutated(BW_TEXTS))
def test_fuzz_ib_write_bw(text):
    assert_only_parse_error(parse_ib_write_bw, text)


@settings(max_examples=60, deadline=None)
@given(mutated(LAT_TEXTS + BW_TEXTS[:1]))
def test_fuzz_ib_write_lat(text):
    assert_only_parse_error(parse_ib_write_lat, text)


@pytest.mark.parametrize("parse", [parse_ib_write_bw, parse_ib_write_lat])
def test_long_lines_are_fast(parse):
    for line in (" #bytes" + " x" * 100_000, "a BW" + " " * 200_000 + "x",
                 " 2" + " 1" * 100_000, "Device" + " " * 100_000 + ":" * 1000):
        assert_only_parse_error(parse, _text(STREAM) + line + "\n", seconds=5)


# --------------------------------------------------------------------------- CLI




def test_cli_bw_json_keys():
    r = _cli("ib_write_bw", str(CUDA), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "error" in doc and doc["error"] is None and doc["use_cuda"] is True
    for key in ("bytes", "iterations", "bw_peak_gbps", "bw_avg_gbps", "msg_rate_mpps"):
        assert key in doc["rows"][0]
    assert doc["rows"][-1]["bytes"] == 8388608 and doc["device"] == "mlx5_3"


def test_cli_lat_json_keys():
    r = _cli("ib_write_lat", str(LAT), "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["rows"][0]
    assert row["t_typical_us"] == 1.47 and row["t_p99_9_us"] == 1.93


def test_cli_wrong_tool_exit_2():
    r = _cli("ib_write_bw", str(IBSTAT_FILE), "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(IBSTAT_FILE) in lines[0]


def test_provider_hex_dump_after_failure_is_not_rows():
    # the mid-sweep failure with the provider's completion dump mlx5 prints before perftest's
    # own message (constructed from the published sample; dump layout as libmlx5 prints it)
    dump = ("mlx5: rdma-perftest-1: got completion with error:\n"
            "00000000 00000000 00000000 00000000\n"
            "00000000 00000000 00000000 00000000\n"
            "00000000 00000000 00000000 00000000\n"
            "00000000 00008813 08000122 000161d2\n")
    text = MID_SWEEP_FAILURE.replace(" Completion with error at client\n",
                                     dump + " Completion with error at client\n")
    m = parse_ib_write_bw(text)
    assert len(m.rows) == 16 and m.error == "mlx5: rdma-perftest-1: got completion with error:"
    assert "Completion with error at client" in m.errors


def test_non_fatal_message_before_the_table_keeps_rows():
    text = "Couldn't set the link layer\n" + _text(CUDA)
    m = parse_ib_write_bw(text)
    assert len(m.rows) == 23 and m.error == "Couldn't set the link layer"
