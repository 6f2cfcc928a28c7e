"""fio parser: JSON and text outputs, error lines, fuzzing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings

from clusterkit.errors import ParseError
from clusterkit.parsers.fio import parse_fio
from tests.parsers.fuzz import assert_only_parse_error, mutated
from tests.parsers.cli import run_parse as _cli

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "fio"
SLURM_FIX = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
JSON_FILE = FIX / "fio_json_seq_write_256k_qd64_libaio_fio-3.26-19.json"
READ_FILE = FIX / "fio_text_seq_read_4k_libaio_fio-3.1_aws_micro.txt"
WRITE_FILE = FIX / "fio_text_seq_write_4k_libaio_fio-3.1_aws_micro.txt"
ERR_FILE = FIX / "fio_error_io_u_queued_complete_err84.txt"


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


# fio-3.33 writing to /dev/full (ENOSPC), default text output, captured with 2>&1; the
# per-depth histogram lines of the job block are left out.
FIO333_ENOSPC = """\
full: (g=0): rw=write, bs=(R) 4096B-4096B, (W) 4096B-4096B, (T) 4096B-4096B, ioengine=psync, iodepth=1
fio-3.33
Starting 1 process
fio: io_u error on file /dev/full: No space left on device: write offset=0, buflen=4096
fio: pid=10364, err=28/file:io_u.c:1876, func=io_u error, error=No space left on device

full: (groupid=0, jobs=1): err=28 (file:io_u.c:1876, func=io_u error, error=No space left on device): pid=10364: Sun Nov 22 03:10:27 2026
  cpu          : usr=0.00%, sys=0.00%, ctx=0, majf=0, minf=19
     issued rwts: total=0,1,0,0 short=0,0,0,0 dropped=0,0,0,0
"""

# fio-2.2.10 text output (old 'read : io=..., bw=...KB/s, iops=...' layout), as published in a
# public benchmark note; the tail of the job block is left out.
FIO2_READ = """\
hdd_randread_test: (g=0): rw=randread, bs=4K-4K/4K-4K/4K-4K, ioengine=libaio, iodepth=1
fio-2.2.10
Starting 1 process
Jobs: 1 (f=1): [r(1)] [100.0% done] [63272KB/0KB/0KB /s] [15.9K/0/0 iops] [eta 00m:00s]
hdd_randread_test: (groupid=0, jobs=1): err= 0: pid=1715567: Tue Sep 20 22:00:38 2022
  read : io=1024.0MB, bw=61460KB/s, iops=15365, runt= 17061msec
    slat (usec): min=4, max=218, avg= 6.24, stdev= 2.61
    clat (usec): min=3, max=10994, avg=57.33, stdev=151.94
     lat (usec): min=47, max=10999, avg=63.70, stdev=152.00
    clat percentiles (usec):
     |  1.00th=[   44],  5.00th=[   45], 10.00th=[   46], 20.00th=[   47],
     | 30.00th=[   48], 40.00th=[   48], 50.00th=[   49], 60.00th=[   49],
     | 70.00th=[   50], 80.00th=[   51], 90.00th=[   55], 95.00th=[   68],
     | 99.00th=[  177], 99.50th=[  209], 99.90th=[  940], 99.95th=[ 2640],
     | 99.99th=[ 8384]
"""


# --------------------------------------------------------------------------- fixtures
def test_text_seq_read_fio31():
    out = parse_fio(_text(READ_FILE))
    assert out.format == "text" and out.version == "fio-3.1"
    assert out.ok and out.error is None
    (job,) = out.jobs
    assert job.name == "myjob" and job.rw == "read" and job.ioengine == "libaio"
    assert job.iodepth == 4 and job.block_size == "4096B-4096B"
    assert job.pid == 21485 and job.errors == 0
    assert job.read_iops == 3070
    assert job.read_bw_bytes == pytest.approx(12.6e6)  # "(12.6MB/s)"
    assert job.read_io_bytes == 3598 * 1024**2 and job.read_runtime_ms == 300002
    assert job.read_lat_mean_us == pytest.approx(1301.45)
    assert job.read_clat_p99_us == 3392
    assert job.write_bw_bytes is None and job.write_iops is None
    (disk,) = out.disks
    assert (disk.name, disk.read_ios, disk.write_ios, disk.util_pct) == ("xvda", 920720, 20, 100.0)


def test_text_seq_write_fio31():
    out = parse_fio(_text(WRITE_FILE))
    (job,) = out.jobs
    assert job.rw == "write" and job.pid == 21461
    assert job.write_iops == 3068
    assert job.write_bw_bytes == pytest.approx(12.6e6)
    assert job.write_io_bytes == 4096 * 1024**2 and job.write_runtime_ms == 341704
    assert job.write_lat_mean_us == pytest.approx(1301.99)
    assert job.write_clat_p99_us == 13435
    assert job.read_bw_bytes is None
    assert out.disks[0].write_ios == 1048453
    assert "write 12.6 MB/s 3068 IOPS" in out.summary()


def test_json_seq_write_fio326_duplicate_key():
    out = parse_fio(_text(JSON_FILE))
    assert out.format == "json" and out.version == "fio-3.26-19-ge7e53"
    assert out.ok
    (job,) = out.jobs
    assert job.name == "disk_fill" and job.rw == "write" and job.block_size == "256k"
    assert job.iodepth == 64 and job.ioengine == "libaio"
    assert job.write_bw_bytes == 192599430  # bw_bytes
    assert job.write_iops == pytest.approx(734.70852)
    assert job.write_io_bytes == 1073741824 and job.write_runtime_ms == 5575
    assert job.write_lat_mean_us == pytest.approx(87058.217758301)
    assert job.write_clat_p99_us == pytest.approx(114819.072)
    assert job.read_bw_bytes == 0 and job.read_iops == 0
    assert job.read_lat_mean_us is None  # no read I/O at all
    assert job.errors == 0 and job.error_code == 0
    assert [(d.name, d.write_ios, d.util_pct) for d in out.disks] == [
        ("sdd", 2001, pytest.approx(85.060371)), ("sdc", 2208, pytest.approx(52.490975))]


def test_error_line_only():
    out = parse_fio(_text(ERR_FILE))
    assert not out.ok
    (job,) = out.jobs
    assert job.pid == 8281 and job.error_code == 84 and job.errors == 1
    assert "Invalid or incomplete multibyte or wide character" in job.error
    assert "io_u_queued_complete" in job.error
    assert out.error == job.error


# --------------------------------------------------------------------------- variants
def test_json_after_warning_lines():
    text = "fio: this platform does not support process shared mutexes, forcing use of threads\n" \
        + _text(JSON_FILE)
    out = parse_fio(text)
    assert out.jobs[0].write_bw_bytes == 192599430
    assert out.messages == ["fio: this platform does not support process shared mutexes, "
                            "forcing use of threads"]


def test_json_job_error_joins_error_line():
    text = _text(JSON_FILE).replace('"error" : 0,', '"error" : 28,', 1)
    text = "fio: pid=4242, err=28/file:io_u.c:1876, func=io_u error, error=No space left on device\n" \
        + text
    out = parse_fio(text)
    assert not out.ok
    (job,) = out.jobs
    assert job.name == "disk_fill" and job.error_code == 28 and job.errors == 1 and job.pid == 4242
    assert "No space left on device" in job.error


def test_json_job_error_without_line():
    out = parse_fio(_text(JSON_FILE).replace('"error" : 0,', '"error" : 5,', 1))
    assert not out.ok and out.jobs[0].errors == 1 and out.jobs[0].error == "err=5"


def test_text_fio333_enospc_header_error():
    out = parse_fio(FIO333_ENOSPC)
    assert out.version == "fio-3.33" and not out.ok
    (job,) = out.jobs  # the pid line belongs to the job, no extra entry
    assert job.name == "full" and job.pid == 10364 and job.error_code == 28 and job.errors == 1
    assert "No space left on device" in job.error
    assert len(out.messages) == 2


def test_text_fio2_layout():
    out = parse_fio(FIO2_READ)
    (job,) = out.jobs
    assert out.version == "fio-2.2.10"
    assert job.rw == "randread" and job.block_size == "4K-4K/4K-4K/4K-4K"
    assert job.read_bw_bytes == 61460 * 1024  # fio 2 'KB' is KiB
    assert job.read_iops == 15365 and job.read_runtime_ms == 17061
    assert job.read_io_bytes == 1024 * 1024**2
    assert job.read_lat_mean_us == pytest.approx(63.70) and job.read_clat_p99_us == 177


def test_iops_k_suffix_and_zone_resets():
    text = ("t1: (groupid=0, jobs=1): err= 0: pid=10116: Sun Nov 22 03:10:19 2026\n"
            "  write: IOPS=10.5k, BW=41.2MiB/s (43.2MB/s)(2152KiB/51msec); 0 zone resets\n"
            "     lat (nsec): min=2353, max=47581, avg=3410.35, stdev=2747.32\n")
    job = parse_fio(text).jobs[0]
    assert job.write_iops == 10500 and job.write_bw_bytes == pytest.approx(43.2e6)
    assert job.write_io_bytes == 2152 * 1024 and job.write_runtime_ms == 51
    assert job.write_lat_mean_us == pytest.approx(3.41035)


def test_crlf_and_tabs_tolerated():
    out = parse_fio(_text(READ_FILE).replace("\n", "\r\n"))
    assert out.jobs[0].read_iops == 3070


@pytest.mark.parametrize("text", [
    "", "   \n\n", "hello world\n", "CA 'mlx5_0'\n\tCA type: MT4129\n",
    '{"nodes": []}\n', "{ not json at all\n",
])
def test_not_fio_output(text):
    with pytest.raises(ParseError):
        parse_fio(text)


def test_invalid_json_quotes_line():
    text = _text(JSON_FILE)[:500]
    with pytest.raises(ParseError) as ei:
        parse_fio(text)
    assert ei.value.tool == "fio" and ei.value.line_no is not None


# --------------------------------------------------------------------------- fuzz
_ALL = [_text(p) for p in (JSON_FILE, READ_FILE, WRITE_FILE, ERR_FILE)] + [FIO333_ENOSPC, FIO2_READ]


@settings(max_examples=80, deadline=None)
@given(mutated(_ALL))
def test_fuzz_only_parse_error(text):
    assert_only_parse_error(parse_fio, text)


# --------------------------------------------------------------------------- CLI


def test_cli_json_keys():
    r = _cli("fio", str(READ_FILE), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    job = doc["jobs"][0]
    for key in ("name", "read_bw_bytes", "write_bw_bytes", "read_iops", "write_iops", "errors"):
        assert key in job
    assert job["read_iops"] == 3070 and job["errors"] == 0


def test_cli_error_file_is_not_a_parse_error():
    r = _cli("fio", str(ERR_FILE), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["jobs"][0]["errors"] == 1


def test_cli_wrong_tool_exit_2():
    other = SLURM_FIX / "sinfo_-R_slurm20.11_low_realmemory_drain_reasons.txt"
    r = _cli("fio", str(other), "--json")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(other) in lines[0]
