"""The disk spool: order, bound, atomic files, replay semantics (with a scripted store)."""

from __future__ import annotations

import os

import pytest

from clusterkit.telemetry.sink import BatchResult, Outcome
from clusterkit.telemetry.spool import (
    DEFAULT_MAX_BYTES,
    Spool,
    SpoolError,
    SpoolFull,
    default_spool_dir,
    replay,
)


class ScriptedSink:
    """Answers write() from a script of outcomes (then WRITTEN), recording every body."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.script = list(outcomes)
        self.bodies: list[str] = []

    def write(self, body: str, *, deadline: float) -> BatchResult:
        self.bodies.append(body)
        outcome = self.script.pop(0) if self.script else Outcome.WRITTEN
        status = {Outcome.WRITTEN: 204, Outcome.REJECTED: 400, Outcome.REFUSED: 401}.get(outcome)
        return BatchResult(outcome, status=status, detail=f"HTTP {status}" if status else "connection refused",
                           attempts=1)


def _batch(i: int, n: int = 3) -> list[str]:
    return [f"m,b={i} v={k}i {1000 + k}" for k in range(n)]


def test_files_sort_in_spool_order_and_hold_the_lines(tmp_path):
    sp = Spool(str(tmp_path / "spool"))
    paths = [sp.put(_batch(i)) for i in range(25)]
    assert sp.pending() == paths == sorted(paths)
    assert [sp.read(p) for p in paths] == [_batch(i) for i in range(25)]
    with open(paths[0], encoding="utf-8") as fh:
        assert fh.readline().startswith("# clusterkit spool v1 precision=ms lines=3")
    assert oct(os.stat(paths[0]).st_mode & 0o777) == "0o600"
    assert oct(os.stat(sp.directory).st_mode & 0o777) == "0o700"
    # nothing but the batches: no temporary files left behind
    assert sorted(os.listdir(sp.directory)) == sorted(os.path.basename(p) for p in paths)


def test_bound_refuses_new_batches_and_keeps_the_old(tmp_path):
    sp = Spool(str(tmp_path / "spool"), max_bytes=600)
    kept = []
    with pytest.raises(SpoolFull) as e:
        for i in range(100):
            kept.append(sp.put(_batch(i)))
    assert "is full" in str(e.value) and str(tmp_path) in str(e.value)
    assert "\n" not in str(e.value)
    assert 0 < len(kept) < 100
    assert sp.pending() == kept  # the oldest were not dropped to make room
    assert sp.size_bytes() <= 600
    # a fresh Spool object counts what is on disk
    again = Spool(sp.directory, max_bytes=600)
    with pytest.raises(SpoolFull):
        again.put(_batch(999))
    assert DEFAULT_MAX_BYTES == 256 * 1024 * 1024


def test_unwritable_spool_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sp = Spool(str(blocker / "spool"))
    with pytest.raises(SpoolError) as e:
        sp.put(_batch(1))
    assert not isinstance(e.value, SpoolFull)
    assert str(e.value).startswith(f"cannot write the spool {blocker / 'spool'}")
    assert "\n" not in str(e.value)


def test_replay_sends_in_order_and_deletes_only_what_was_written(tmp_path):
    sp = Spool(str(tmp_path / "spool"))
    for i in range(5):
        sp.put(_batch(i))
    sink = ScriptedSink(Outcome.WRITTEN, Outcome.WRITTEN, Outcome.UNAVAILABLE)
    r = replay(sp, sink, deadline=float("inf"))
    assert [b.split("\n") for b in sink.bodies] == [_batch(0), _batch(1), _batch(2)]
    assert r.files == 2 and r.lines == 6 and r.left == 3
    assert r.stopped is not None and r.stopped.outcome is Outcome.UNAVAILABLE
    # the failed batch and everything after it stay, in order
    assert [sp.read(p) for p in sp.pending()] == [_batch(2), _batch(3), _batch(4)]
    r = replay(sp, ScriptedSink(), deadline=float("inf"))
    assert r.files == 3 and r.stopped is None and sp.pending() == []


def test_replay_stops_at_a_refusal_and_moves_rejected_batches_aside(tmp_path):
    sp = Spool(str(tmp_path / "spool"))
    for i in range(4):
        sp.put(_batch(i))
    sink = ScriptedSink(Outcome.REJECTED, Outcome.WRITTEN, Outcome.REFUSED)
    r = replay(sp, sink, deadline=float("inf"))
    assert r.rejected_files == 1 and r.rejected_lines == 3 and r.rejected_detail == "HTTP 400"
    assert r.files == 1 and r.left == 2
    assert [sp.read(p) for p in sp.rejected()] == [_batch(0)]
    assert [sp.read(p) for p in sp.pending()] == [_batch(2), _batch(3)]
    # rejected batches are not sent again by a plain replay ...
    sink = ScriptedSink()
    replay(sp, sink, deadline=float("inf"))
    assert [b.split("\n") for b in sink.bodies] == [_batch(2), _batch(3)]
    assert len(sp.rejected()) == 1
    # ... only when asked, once
    sink = ScriptedSink()
    r = replay(sp, sink, deadline=float("inf"), include_rejected=True)
    assert [b.split("\n") for b in sink.bodies] == [_batch(0)] and sp.rejected() == []


def test_replay_respects_the_deadline(tmp_path):
    sp = Spool(str(tmp_path / "spool"))
    for i in range(3):
        sp.put(_batch(i))
    ticks = iter([0.0, 0.5, 2.0, 3.0, 4.0])
    sink = ScriptedSink()
    r = replay(sp, sink, deadline=1.0, clock=lambda: next(ticks))
    assert r.files == 2 and r.out_of_time and r.left == 1 and len(sp.pending()) == 1


def test_one_replay_at_a_time(tmp_path):
    sp = Spool(str(tmp_path / "spool"))
    sp.put(_batch(0))
    other = Spool(sp.directory)
    with other.locked() as mine:
        assert mine
        sink = ScriptedSink()
        r = replay(sp, sink, deadline=float("inf"))
        assert r.busy and sink.bodies == [] and len(sp.pending()) == 1


def test_replay_of_a_missing_spool_does_nothing(tmp_path):
    r = replay(Spool(str(tmp_path / "nothing")), ScriptedSink(), deadline=float("inf"))
    assert r.files == 0 and not r.busy and r.stopped is None


def test_unreadable_batch_is_set_aside(tmp_path):
    sp = Spool(str(tmp_path / "spool"))
    bad = sp.put(_batch(0))
    sp.put(_batch(1))
    with open(bad, "wb") as fh:
        fh.write(b"\xff\xfe not utf-8")
    sink = ScriptedSink()
    r = replay(sp, sink, deadline=float("inf"))
    assert [b.split("\n") for b in sink.bodies] == [_batch(1)]
    assert len(r.warnings) == 1 and "not UTF-8" in r.warnings[0]
    assert len(sp.rejected()) == 1 and sp.pending() == []


def test_default_spool_dir(monkeypatch):
    assert default_spool_dir({"CLUSTERKIT_SPOOL_DIR": "/x/spool"}) == "/x/spool"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_spool_dir({"XDG_STATE_HOME": "/st"}) == "/st/clusterkit/spool"
    assert default_spool_dir({}) == os.path.join(os.path.expanduser("~"), ".local", "state", "clusterkit", "spool")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_spool_dir({}) == "/var/spool/clusterkit"
    assert default_spool_dir({"XDG_STATE_HOME": "/st"}) == "/var/spool/clusterkit"


def test_a_delivered_batch_that_cannot_be_deleted_stops_the_replay(tmp_path, monkeypatch):
    sp = Spool(str(tmp_path / "spool"))
    for i in range(3):
        sp.put(_batch(i))

    def refuse(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "unlink", refuse)
    sink = ScriptedSink()
    r = replay(sp, sink, deadline=float("inf"))
    assert len(sink.bodies) == 1 and r.files == 1 and r.left == 3
    assert len(r.warnings) == 1 and "Permission denied" in r.warnings[0] and "delivered" in r.warnings[0]
