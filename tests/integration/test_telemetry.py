"""Telemetry against a real VictoriaMetrics (InfluxDB v2 write API) and loopback stand-ins.

Read back through VictoriaMetrics' export API: measurement ``gpu`` + field ``value`` arrive as
metric ``gpu_value``, tags as labels, timestamps in milliseconds. VictoriaMetrics keeps every
sample it gets (no deduplication here), so counting samples shows whether a point arrived
exactly once.
"""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status
from clusterkit.telemetry.emit import DEFAULT_DEADLINE_S, emit
from clusterkit.telemetry.lineproto import parse_line
from clusterkit.telemetry.points import report_lines
from clusterkit.telemetry.spool import Spool
from tests.infra.vmstore import VictoriaMetrics, samples

SECRET = "ck-" + uuid.uuid4().hex + "-TOKEN"
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ helpers
def _created(offset_s: int = 0) -> str:
    t = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=30) + dt.timedelta(seconds=offset_s)
    return t.isoformat(timespec="seconds")


def make_report(partition: str, *, offset_s: int = 0, nodes: int = 2, names: list[str] | None = None,
                device: str = "mlx5_0", path: str = "/mnt/weights") -> FleetReport:
    reports = []
    for name in names or [f"gpu-{i:03d}" for i in range(1, nodes + 1)]:
        checks = [CheckResult(check="gpu.temperature", subject=f"gpu{g}", gpu=g, status=Status.PASS,
                              value=30.0 + g + offset_s, threshold=85.0, unit="C", message=f"{30 + g} C")
                  for g in range(8)]
        checks += [
            CheckResult(check="gpu.count", status=Status.PASS, value=8, threshold=8),
            CheckResult(check="ib.port.rate", subject=f"{device}/1", device=device, port=1, status=Status.PASS,
                        value=400.0, threshold=400.0, unit="Gb/s"),
            CheckResult(check="nvlink.errors", subject="gpu2/link7", gpu=2, link=7, status=Status.WARN, value=3,
                        threshold=0, message="3 replay errors"),
            CheckResult(check="topo.p2p", subject="gpu2-gpu5", gpu=2, peer_gpu=5, status=Status.FAIL, value="SYS",
                        threshold="NV18"),
            CheckResult(check="storage.free", subject=path, path=path, status=Status.PASS, value=3100.0, unit="GiB"),
        ]
        reports.append(NodeReport(node=name, status=NodeStatus.FAIL, checks=checks, duration_s=2.5,
                                  facts={"profile": "h100-sxm", "gpu_count": 8, "driver_version": "565.57.01"}))
    return FleetReport(created=_created(offset_s), source="test", profile="h100-sxm", partition=partition,
                       job_id="4242", duration_s=3.0, nodes=reports).finalize()


def expected_samples(lines: list[str]) -> collections.Counter:
    """(metric, labels, timestamp) -> samples VictoriaMetrics should hold for these lines."""
    want: collections.Counter = collections.Counter()
    for line in lines:
        p = parse_line(line)
        for f in p.fields:
            want[(f"{p.measurement}_{f}", frozenset(p.tags.items()), p.time)] += 1
    return want


def exported(vm: VictoriaMetrics, partition: str, expect: int) -> collections.Counter:
    rows = vm.export(f'{{partition="{partition}"}}', expect=expect)
    got: collections.Counter = collections.Counter()
    for r in rows:
        labels = dict(r["metric"])
        name = labels.pop("__name__")
        for ts in r["timestamps"]:
            got[(name, frozenset(labels.items()), ts)] += 1
    return got


def _emit(report: FleetReport, url: str, spool_dir: Path, **kw: Any):
    kw.setdefault("org", "ops")
    kw.setdefault("bucket", "clusterkit")
    return emit(report, url=url, spool_dir=str(spool_dir), **kw)


class StubStore:
    """An HTTP server on loopback answering /api/v2/write from a script of (status, body,
    headers); records every request (path, headers, decompressed body)."""

    def __init__(self, script: list[tuple[int, str, dict[str, str]]], default: tuple[int, str, dict[str, str]]
                 = (204, "", {})) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
                status, text, headers = stub.script.pop(0) if stub.script else stub.default
                text = text.replace("{auth}", self.headers.get("Authorization", ""))
                data = text.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v.replace("{auth}", self.headers.get("Authorization", "")))
                self.send_header("Content-Length", str(len(data)))
                if data:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_factory() -> Iterator[Any]:
    stubs: list[StubStore] = []

    def make(script: list[tuple[int, str, dict[str, str]]], **kw: Any) -> StubStore:
        s = StubStore(script, **kw)
        stubs.append(s)
        return s

    yield make
    for s in stubs:
        s.close()


@pytest.fixture
def silent_store() -> Iterator[str]:
    """A TCP listener on loopback that accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    sock.close()


_WRAPPER = ("import sys\n"
            "from clusterkit import cli\n"
            "from clusterkit.telemetry.cli import telemetry_group\n"
            "if 'telemetry' not in cli.cli.commands:\n"
            "    cli.cli.add_command(telemetry_group)\n"
            "cli.main(sys.argv[1:])\n")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``clusterkit telemetry …`` through clusterkit's own entry point (errors, exit codes)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERKIT_", "INFLUX"))}
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", _WRAPPER, "telemetry", *args], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------------------ arrival
def test_points_arrive_with_names_tags_values_and_timestamps(vmstore, tmp_path):
    part = "arrival-" + uuid.uuid4().hex[:8]
    report = make_report(part)
    lines = report_lines(report)
    res = _emit(report, vmstore.url, tmp_path / "spool")
    assert (res.points, res.written, res.spooled, res.warnings) == (len(lines), len(lines), 0, [])
    want = expected_samples(lines)
    got = exported(vmstore, part, sum(want.values()))
    assert got == want
    ts = int(dt.datetime.fromisoformat(report.created).timestamp() * 1000)
    assert {k[2] for k in got} == {ts}
    rows = {(r["metric"]["host"], r["metric"].get("gpu")): r
            for r in vmstore.export(f'gpu_value{{partition="{part}",check="gpu.temperature"}}')}
    assert len(rows) == 16
    r = rows[("gpu-002", "3")]
    assert r["metric"] == {"__name__": "gpu_value", "check": "gpu.temperature", "gpu": "3", "host": "gpu-002",
                           "partition": part, "profile": "h100-sxm"}
    assert r["values"] == [33.0] and r["timestamps"] == [ts]
    (ib,) = vmstore.export(f'ib_value{{partition="{part}",host="gpu-001"}}')
    assert ib["metric"]["device"] == "mlx5_0" and ib["metric"]["port"] == "1" and ib["values"] == [400]
    (link,) = vmstore.export(f'nvlink_status_code{{partition="{part}",host="gpu-001"}}')
    assert link["metric"]["link"] == "7" and link["values"] == [1]
    (p2p,) = vmstore.export(f'clusterkit_check_status_code{{partition="{part}",host="gpu-001",check="topo.p2p"}}')
    assert p2p["metric"]["peer_gpu"] == "5" and p2p["values"] == [2]
    (run,) = vmstore.export(f'clusterkit_run_exit_code{{partition="{part}"}}')
    assert run["values"] == [1]
    assert not any({"run_id", "job_id"} & {k for k, _ in labels} for _name, labels, _t in got)


def test_hostile_tag_values_arrive_intact(vmstore, tmp_path):
    part = "hostile-" + uuid.uuid4().hex[:8]
    names = ["gpu 001,x=y", "gpu-\u00fc\u4e2d\\", 'q"uote\nnewline']
    report = make_report(part, names=names, device="mlx5 0,=\\", path="/mnt/a b,c=d\\")
    lines = report_lines(report)
    res = _emit(report, vmstore.url, tmp_path / "spool")
    assert res.written == len(lines) and res.warnings == []
    want = expected_samples(lines)
    assert exported(vmstore, part, sum(want.values())) == want
    hosts = {r["metric"]["host"] for r in vmstore.export(f'clusterkit_node_status_code{{partition="{part}"}}')}
    assert hosts == {"gpu 001,x=y", "gpu-\u00fc\u4e2d\\", 'q"uote newline'}  # a line break becomes a space
    devices = {r["metric"]["device"] for r in vmstore.export(f'ib_value{{partition="{part}"}}')}
    assert devices == {"mlx5 0,=\\"}


# ------------------------------------------------------------------------------ outage
def test_outage_spools_then_replay_delivers_every_point_exactly_once(vmstore, tmp_path):
    part = "outage-" + uuid.uuid4().hex[:8]
    spool_dir = tmp_path / "spool"
    a, b, c, d = (make_report(part, offset_s=i) for i in range(4))
    assert _emit(a, vmstore.url, spool_dir, batch_lines=20).written == len(report_lines(a))

    vmstore.stop()  # the store goes away mid-series
    t0 = time.monotonic()
    res_b = _emit(b, vmstore.url, spool_dir, batch_lines=20)
    assert time.monotonic() - t0 < 5
    assert res_b.written == 0 and res_b.spooled == len(report_lines(b)) and res_b.exit_code == 3
    assert len(res_b.warnings) == 1, res_b.warnings
    assert "unavailable (connection refused" in res_b.warnings[0] and str(spool_dir) in res_b.warnings[0]
    res_c = _emit(c, vmstore.url, spool_dir, batch_lines=20)  # still down: replay fails first, nothing new tried
    assert res_c.spooled == len(report_lines(c)) and len(res_c.warnings) == 1
    waiting = len(Spool(str(spool_dir)).pending())
    assert waiting == res_c.waiting > 0

    vmstore.start()  # back, same data
    res_d = _emit(d, vmstore.url, spool_dir, batch_lines=20)
    assert res_d.warnings == []
    assert res_d.replayed == len(report_lines(b)) + len(report_lines(c))
    assert res_d.written == len(report_lines(d)) and res_d.waiting == 0
    assert Spool(str(spool_dir)).pending() == []

    want = expected_samples(report_lines(a) + report_lines(b) + report_lines(c) + report_lines(d))
    got = exported(vmstore, part, sum(want.values()))
    assert sum(got.values()) == sum(want.values())
    assert [k for k, n in got.items() if n != 1] == []  # every point exactly once
    assert got == want


def test_replay_command_after_an_outage(vmstore, tmp_path):
    part = "replaycmd-" + uuid.uuid4().hex[:8]
    spool_dir = tmp_path / "spool"
    report_file = tmp_path / "report.json"
    report = make_report(part)
    report_file.write_text(report.to_json())
    vmstore.stop()
    opts = ["--influx-url", vmstore.url, "--influx-org", "o", "--influx-bucket", "b", "--spool-dir", str(spool_dir)]
    p = run_cli("push", str(report_file), *opts, "--telemetry-timeout", "3")
    assert p.returncode == 3, p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("clusterkit: warning: telemetry: metrics store")
    p = run_cli("replay", *opts, "--telemetry-timeout", "3")
    assert p.returncode == 3 and p.stdout.startswith("replayed 0 points (0 batches)") and "1 batch waiting" in p.stdout
    vmstore.start()
    p = run_cli("replay", *opts)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"replayed {len(report_lines(report))} points (1 batch) ")
    assert p.stdout.rstrip().endswith("0 batches waiting")
    want = expected_samples(report_lines(report))
    assert exported(vmstore, part, sum(want.values())) == want


# ------------------------------------------------------------------------------ slow store
@pytest.mark.parametrize("deadline", [2.0, DEFAULT_DEADLINE_S])
def test_store_that_never_answers_costs_at_most_the_bound(silent_store, tmp_path, deadline):
    report = make_report("slow")
    t0 = time.monotonic()
    res = _emit(report, silent_store, tmp_path / "spool", deadline_s=deadline, request_timeout_s=1.0
                if deadline < 5 else 5.0)
    took = time.monotonic() - t0
    assert took <= deadline + 1.0, took
    assert res.written == 0 and res.spooled == res.points == len(report_lines(report))
    assert len(res.warnings) == 1 and "no answer within" in res.warnings[0]


# ------------------------------------------------------------------------------ full spool
def test_full_spool_is_one_line_and_the_report_is_kept(tmp_path):
    report = make_report("full")
    report_file = tmp_path / "report.json"
    report_file.write_text(report.to_json())
    before = report_file.read_bytes()
    closed = f"http://127.0.0.1:{_closed_port()}"
    res = _emit(report, closed, tmp_path / "spool", batch_lines=10, spool_max_bytes=8 * 1024)
    assert res.spooled > 0 and res.lost > 0 and res.spooled + res.lost == res.points
    full = [w for w in res.warnings if "is full" in w]
    assert len(full) == 1 and f"{res.lost} of {res.points} points neither sent nor kept" in full[0]
    assert sum(os.path.getsize(p) for p in Spool(str(tmp_path / "spool")).pending()) <= 8 * 1024
    # through the command: a spool that cannot be written at all
    (tmp_path / "blocker").write_text("")
    p = run_cli("push", str(report_file), "--influx-url", closed, "--influx-org", "o", "--influx-bucket", "b",
                "--spool-dir", str(tmp_path / "blocker" / "spool"), "--telemetry-timeout", "2")
    assert p.returncode == 3
    spool_lines = [ln for ln in p.stderr.splitlines() if "spool" in ln and "cannot write" in ln]
    assert len(spool_lines) == 1 and "(the report is kept)" in spool_lines[0]
    assert report_file.read_bytes() == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ rejected batches
def test_rejected_batch_is_kept_and_reported_not_retried(stub_factory, tmp_path):
    stub = stub_factory([(400, '{"code":"invalid","message":"unable to parse \'bad line\': missing fields"}', {})])
    report = make_report("rej")
    lines = report_lines(report)
    res = _emit(report, stub.url, tmp_path / "spool", batch_lines=20)
    n_batches = -(-len(lines) // 20)
    assert len(stub.requests) == n_batches  # the rejected one was not sent again
    assert res.rejected == 20 and res.written == len(lines) - 20 and res.exit_code == 3
    assert len(res.warnings) == 1
    assert "rejected 20 of" in res.warnings[0] and "HTTP 400: unable to parse 'bad line'" in res.warnings[0]
    sp = Spool(str(tmp_path / "spool"))
    assert [sp.read(p) for p in sp.rejected()] == [lines[:20]] and sp.pending() == []
    # the next run does not send it again by itself
    res2 = _emit(make_report("rej", offset_s=1), stub.url, tmp_path / "spool", batch_lines=20)
    assert res2.replayed == 0 and len(stub.requests) == 2 * n_batches and len(sp.rejected()) == 1
    # every request: the write API, precision ms, gzip, line protocol
    r = stub.requests[0]
    assert r["path"].startswith("/api/v2/write?") and "precision=ms" in r["path"]
    assert r["headers"]["Content-Encoding"] == "gzip" and r["body"].split("\n") == lines[:20]


def test_refused_token_keeps_batches_waiting_until_fixed(stub_factory, vmstore, tmp_path):
    stub = stub_factory([], default=(401, '{"code":"unauthorized","message":"unauthorized access"}', {}))
    part = "refused-" + uuid.uuid4().hex[:8]
    report = make_report(part)
    res = _emit(report, stub.url, tmp_path / "spool", token=SECRET)
    assert len(stub.requests) == 1 and res.spooled == res.points
    assert "refused the write (HTTP 401: unauthorized access" in res.warnings[0]
    res = _emit(make_report(part, offset_s=1), vmstore.url, tmp_path / "spool")
    assert res.replayed == len(report_lines(report)) and res.warnings == []


def test_server_errors_are_retried(stub_factory, tmp_path):
    stub = stub_factory([(503, "", {"Retry-After": "0"}), (500, '{"message":"internal"}', {})])
    res = _emit(make_report("retry"), stub.url, tmp_path / "spool")
    assert res.written == res.points and res.warnings == [] and len(stub.requests) == 3


# ------------------------------------------------------------------------------ the token
def test_the_token_is_never_printed(stub_factory, tmp_path, caplog):
    """A hostile store that echoes the Authorization header back in its error body and headers:
    the token reaches the store, and nothing clusterkit prints, logs or keeps shows it."""
    import logging

    echo = '{"code":"unauthorized","message":"bad token: {auth}"}'
    stub = stub_factory([], default=(401, echo, {"X-Influxdb-Error": "bad {auth}"}))
    report = make_report("token")
    report_file = tmp_path / "report.json"
    report_file.write_text(report.to_json())
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    outputs = []
    common = ["--influx-url", stub.url, "--influx-org", "o", "--influx-bucket", "b"]
    for spool, env, extra in (("s1", {"INFLUX_TOKEN": SECRET}, []),
                              ("s2", {}, ["--influx-token-file", str(token_file)]),
                              ("s3", {"CLUSTERKIT_INFLUX_TOKEN_FILE": str(token_file)}, []),
                              ("s4", {"INFLUX_TOKEN": SECRET, "CLUSTERKIT_DEBUG": "1"}, [])):
        p = run_cli("push", str(report_file), *common, *extra, "--spool-dir", str(tmp_path / spool), env=env)
        assert p.returncode == 3
        outputs += [p.stdout, p.stderr]
        p = run_cli("replay", *common, *extra, "--spool-dir", str(tmp_path / spool), env=env)
        outputs += [p.stdout, p.stderr]
    assert all(r["headers"].get("Authorization") == f"Token {SECRET}" for r in stub.requests)
    # in-process too, with every logger at DEBUG
    with caplog.at_level(logging.DEBUG):
        res = _emit(report, stub.url, tmp_path / "s5", token=SECRET)
    outputs += res.warnings + [repr(res), caplog.text]
    from clusterkit.telemetry.cli import TelemetryOptions

    settings = TelemetryOptions(influx_url=stub.url, influx_org="o", influx_bucket="b",
                                influx_token_file=str(token_file)).settings()
    outputs.append(repr(settings))
    joined = "\n".join(outputs)
    assert "bad token" in joined  # the store's message is shown ...
    assert SECRET not in joined  # ... never the token
    for root, _dirs, files in os.walk(tmp_path):
        for f in files:
            if f != "token":
                assert SECRET not in Path(root, f).read_text(errors="replace"), f


# ------------------------------------------------------------------------------ commands
def test_push_command(vmstore, tmp_path):
    part = "push-" + uuid.uuid4().hex[:8]
    report = make_report(part)
    f = tmp_path / "report.json"
    f.write_text(report.to_json())
    opts = ["--influx-url", vmstore.url, "--influx-org", "o", "--influx-bucket", "b",
            "--spool-dir", str(tmp_path / "spool")]
    p = run_cli("push", str(f), *opts)
    assert p.returncode == 0, p.stderr
    n = len(report_lines(report))
    assert p.stdout.strip() == f"wrote {n} of {n} points to {vmstore.url}" and p.stderr == ""
    want = expected_samples(report_lines(report))
    assert exported(vmstore, part, sum(want.values())) == want


@pytest.mark.parametrize("content, why", [(None, "cannot read report"), ("{not json", "not a clusterkit report"),
                                          ("{}", "not a clusterkit report"), ("[1]", "not a clusterkit report"),
                                          ('{"schema": "other/v1"}', "not a clusterkit report")])
def test_push_of_a_missing_or_garbled_report_is_a_usage_error(tmp_path, content, why):
    f = tmp_path / "report.json"
    if content is not None:
        f.write_text(content)
    p = run_cli("push", str(f), "--influx-url", "http://127.0.0.1:9", "--influx-org", "o", "--influx-bucket", "b",
                "--spool-dir", str(tmp_path / "spool"))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("clusterkit: error: ") and why in p.stderr
    assert not (tmp_path / "spool").exists()


@pytest.mark.parametrize("args, why", [
    ([], "--influx-url is required"),
    (["--influx-url", "http://127.0.0.1:9"], "needs --influx-org and --influx-bucket"),
    (["--influx-url", "127.0.0.1:9", "--influx-org", "o", "--influx-bucket", "b"], "want http(s)://HOST[:PORT]"),
])
def test_bad_options_are_usage_errors(tmp_path, args, why):
    p = run_cli("replay", *args, "--spool-dir", str(tmp_path / "spool"))
    assert p.returncode == 2 and why in p.stderr and p.stderr.count("\n") == 1


def test_validate_hook(vmstore, tmp_path):
    """What validate calls after a run: the textfile, then the store; warnings through warn."""
    from clusterkit.telemetry.cli import TelemetryOptions, send_after_run

    part = "hook-" + uuid.uuid4().hex[:8]
    report = make_report(part)
    prom = tmp_path / "clusterkit.prom"
    settings = TelemetryOptions(influx_url=vmstore.url, influx_org="o", influx_bucket="b",
                                spool_dir=str(tmp_path / "spool"), prom_textfile=str(prom)).settings()
    warned: list[str] = []
    res = send_after_run(report, settings, warn=warned.append)
    assert res is not None and res.ok and warned == []
    assert prom.read_text().startswith("# HELP clusterkit_check_status")
    vmstore.stop()
    res = send_after_run(make_report(part, offset_s=1), settings, warn=warned.append)
    assert res is not None and not res.ok and len(warned) == 1
    assert TelemetryOptions().settings() is None
