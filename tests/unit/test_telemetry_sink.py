"""Sink and emit without a store: token sources, retries and their bound, warning lines."""

from __future__ import annotations

import pytest

from clusterkit.errors import UsageError
from clusterkit.telemetry.emit import emit_lines
from clusterkit.telemetry.sink import (
    BatchResult,
    InfluxSink,
    Outcome,
    batches,
    check_url,
    display_url,
    redact,
    resolve_token,
)
from clusterkit.telemetry.spool import Spool

SECRET = "s3cr3t-Tok3n-abcdef0123456789=="


# ------------------------------------------------------------------------------ token
def test_token_sources_in_order(tmp_path):
    f = tmp_path / "tok"
    f.write_text(f"  {SECRET}\n")
    g = tmp_path / "tok2"
    g.write_text("other\n")
    assert resolve_token(str(f), {"INFLUX_TOKEN": "env"}) == SECRET  # the option first
    assert resolve_token(None, {"INFLUX_TOKEN": "env", "CLUSTERKIT_INFLUX_TOKEN_FILE": str(g)}) == "env"
    assert resolve_token(None, {"CLUSTERKIT_INFLUX_TOKEN_FILE": str(g)}) == "other"
    assert resolve_token(None, {}) is None


@pytest.mark.parametrize("content, why", [("", "empty"), (f"{SECRET} extra\n", "more than one word")])
def test_bad_token_file_never_shows_its_content(tmp_path, content, why):
    f = tmp_path / "tok"
    f.write_text(content)
    with pytest.raises(UsageError) as e:
        resolve_token(str(f), {})
    assert why in str(e.value) and SECRET not in str(e.value) and str(f) in str(e.value)


def test_missing_token_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read it"):
        resolve_token(None, {"CLUSTERKIT_INFLUX_TOKEN_FILE": str(tmp_path / "nope")})


def test_redact_and_display_url():
    assert redact(f"HTTP 401: bad token Token {SECRET}\nmore", SECRET) == "HTTP 401: bad token Token *** more"
    assert display_url("http://user:pw@127.0.0.1:8086/base/?token=x") == "http://127.0.0.1:8086/base"


@pytest.mark.parametrize("url", ["127.0.0.1:8428", "ftp://h", "http://", "http://h:port"])
def test_bad_urls(url):
    with pytest.raises(UsageError):
        check_url(url)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(UsageError) as e:
        check_url(f"http://me:{SECRET}@127.0.0.1:8086")
    assert SECRET not in str(e.value)


def test_batches():
    assert [list(b) for b in batches([str(i) for i in range(7)], 3)] == [["0", "1", "2"], ["3", "4", "5"], ["6"]]


# ------------------------------------------------------------------------------ retries
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def _sink(clock: FakeClock, posts, **kw) -> InfluxSink:
    sink = InfluxSink("http://127.0.0.1:1", org="o", bucket="b", token=SECRET, sleep=clock.sleep, clock=clock, **kw)

    def post(body: str, timeout_s: float) -> None:
        clock.now += min(timeout_s, 0.01)
        action = posts.pop(0)
        if action is not None:
            raise action

    sink._post = post  # type: ignore[method-assign]
    return sink


def _api_error(status: int, retry_after=None):
    from influxdb_client.rest import ApiException

    e = ApiException(status=status, reason=f"reason {SECRET}")
    e.retry_after = retry_after
    return e


def test_transient_failures_are_retried_with_backoff_then_written():
    clock = FakeClock()
    sink = _sink(clock, [ConnectionRefusedError(), _api_error(503), None])
    r = sink.write("m v=1 1", deadline=10.0)
    assert r.ok and r.attempts == 3
    assert len(clock.sleeps) == 2 and 0.2 <= clock.sleeps[0] <= 0.3 and 0.4 <= clock.sleeps[1] <= 0.6


@pytest.mark.parametrize("status, outcome", [(400, Outcome.REJECTED), (413, Outcome.REJECTED),
                                             (401, Outcome.REFUSED), (403, Outcome.REFUSED), (404, Outcome.REFUSED)])
def test_client_errors_are_not_retried(status, outcome):
    clock = FakeClock()
    sink = _sink(clock, [_api_error(status)])
    r = sink.write("m v=1 1", deadline=10.0)
    assert r.outcome is outcome and r.attempts == 1 and r.status == status and clock.sleeps == []
    assert SECRET not in r.detail and "***" in r.detail


def test_retries_stop_at_max_attempts_and_the_deadline():
    clock = FakeClock()
    sink = _sink(clock, [ConnectionRefusedError()] * 10)
    r = sink.write("m v=1 1", deadline=100.0)
    assert r.outcome is Outcome.UNAVAILABLE and r.attempts == 4 and r.detail == "connection refused"
    clock = FakeClock()
    sink = _sink(clock, [_api_error(429, retry_after="30")] * 10)
    r = sink.write("m v=1 1", deadline=5.0)  # Retry-After beyond the deadline: give up now
    assert r.attempts == 1 and clock.now < 5.0
    clock = FakeClock()
    clock.now = 9.99
    r = _sink(clock, [None]).write("m v=1 1", deadline=10.0)
    assert r.outcome is Outcome.UNAVAILABLE and r.attempts == 0  # no time left to start one


# ------------------------------------------------------------------------------ emit
class ScriptedSink:
    def __init__(self, *outcomes: Outcome, detail: str = "connection refused") -> None:
        self.script = list(outcomes)
        self.detail = detail
        self.bodies: list[str] = []

    def write(self, body: str, *, deadline: float) -> BatchResult:
        self.bodies.append(body)
        o = self.script.pop(0) if self.script else Outcome.WRITTEN
        status = {Outcome.WRITTEN: 204, Outcome.REJECTED: 400, Outcome.REFUSED: 401}.get(o)
        return BatchResult(o, status=status, detail=self.detail, attempts=4, elapsed_s=1.7)


LINES = [f"m,i={i} v={i}i 1000" for i in range(12)]


def _emit(tmp_path, sink, **kw):
    return emit_lines(LINES, url="http://127.0.0.1:1", org="o", bucket="b", token=SECRET,
                      spool_dir=str(tmp_path / "spool"), batch_lines=5, sink=sink, **kw)


def test_outage_is_one_warning_and_everything_is_spooled(tmp_path):
    res = _emit(tmp_path, ScriptedSink(Outcome.UNAVAILABLE))
    assert (res.written, res.spooled, res.lost, res.exit_code) == (0, 12, 0, 3)
    assert len(res.warnings) == 1
    assert res.warnings[0].startswith("telemetry: metrics store http://127.0.0.1:1 unavailable (connection refused")
    assert "12 of 12 points spooled" in res.warnings[0]
    # the next emit replays first, oldest first, then sends its own
    sink = ScriptedSink()
    res = _emit(tmp_path, sink)
    assert (res.replayed, res.written, res.waiting, res.warnings) == (12, 12, 0, [])
    assert [b.split("\n") for b in sink.bodies] == [LINES[0:5], LINES[5:10], LINES[10:12]] * 2


def test_store_down_during_replay_sends_nothing_new(tmp_path):
    _emit(tmp_path, ScriptedSink(Outcome.UNAVAILABLE))
    sink = ScriptedSink(Outcome.UNAVAILABLE)
    res = _emit(tmp_path, sink)
    assert len(sink.bodies) == 1  # one try (the first spooled batch), then straight to the spool
    assert res.spooled == 12 and len(res.warnings) == 1 and res.waiting == 6


def test_rejected_batch_is_kept_aside_and_reported(tmp_path):
    sink = ScriptedSink(Outcome.REJECTED, detail=f"HTTP 400: bad line {SECRET}")
    res = _emit(tmp_path, sink)
    assert (res.written, res.rejected, res.spooled) == (7, 5, 0)
    assert len(res.warnings) == 1 and "rejected 5 of 12 points" in res.warnings[0]
    assert SECRET not in res.warnings[0]
    sp = Spool(str(tmp_path / "spool"))
    assert [sp.read(p) for p in sp.rejected()] == [LINES[0:5]] and sp.pending() == []
    for p in sp.rejected():
        with open(p, encoding="utf-8") as fh:
            assert SECRET not in fh.read()


def test_full_spool_is_one_line_and_counts_the_loss(tmp_path):
    res = _emit(tmp_path, ScriptedSink(Outcome.UNAVAILABLE), spool_max_bytes=300)
    assert res.spooled + res.lost == 12 and res.lost > 0
    spool_lines = [w for w in res.warnings if "spool" in w and "is full" in w]
    assert len(spool_lines) == 1 and f"{res.lost} of 12 points neither sent nor kept" in spool_lines[0]


def test_unwritable_spool_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    res = emit_lines(LINES, url="http://127.0.0.1:1", org="o", bucket="b", spool_dir=str(tmp_path / "file" / "sp"),
                     batch_lines=5, sink=ScriptedSink(Outcome.UNAVAILABLE))
    assert res.lost == 12 and res.spooled == 0
    bad = [w for w in res.warnings if "cannot write the spool" in w]
    assert len(bad) == 1 and "(the report is kept)" in bad[0]
