"""clusterkit.hostlist against the real ``scontrol`` (Slurm 22.05), name for name.

``scontrol show hostnames`` / ``show hostlist`` / ``show hostlistsorted`` need no running
slurmctld, only a slurm.conf with ClusterName and SlurmctldHost (SLURM_CONF points at one
written to a temporary directory). Starting scontrol costs tens of milliseconds, so one
scontrol reads all the commands on its stdin; arguments that its command-line reader
would split or mangle (spaces, quotes, non-ASCII, very long) go through argv instead.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterkit import hostlist
from clusterkit.errors import HostlistError

if shutil.which("scontrol") is None:
    pytest.skip(
        "scontrol is not on PATH (install Slurm's client, e.g. Debian's slurm-client, to run it)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.integration

_MARK = "clusterkit-end-of-answer"
_SIMPLE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,[]:@+=%")


class Scontrol:
    """Runs scontrol's show hostnames/hostlist/hostlistsorted; None when it refuses."""

    def __init__(self, conf: Path) -> None:
        self.env = dict(
            os.environ,
            SLURM_CONF=str(conf),
            # its readline echoes each command; keep the echo on one plain line
            TERM="dumb",
            COLUMNS="1000000",
            LINES="1000",
            INPUTRC=os.devnull,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.buf = b""
        try:
            self.proc = subprocess.Popen(
                ["scontrol"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self.env,
            )
            long_arg = ",".join(f"gpu-{i:03d}" for i in range(0, 400, 3))
            ok = (
                self._interactive("hostnames", "n[1-2]") == ["n1", "n2"]
                and self._interactive("hostlistsorted", "n2,n1") == ["n[1-2]"]
                and self._interactive("hostnames", "n[2-1]") is None
                and self._interactive("hostlist", long_arg) == self._argv("hostlist", long_arg)
            )
        except (OSError, RuntimeError):
            ok = False
        if not ok:
            self.close()

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def show(self, what: str, arg: str) -> list[str] | None:
        if self.proc is not None and 0 < len(arg) <= 2000 and all(c in _SIMPLE for c in arg):
            try:
                return self._interactive(what, arg)
            except RuntimeError:  # out of step with it: go on one process per command
                self.close()
        return self._argv(what, arg)

    def _argv(self, what: str, arg: str) -> list[str] | None:
        p = subprocess.run(
            ["scontrol", "show", what, "--", arg], capture_output=True, env=self.env, timeout=30
        )
        out = p.stdout.decode("utf-8", "surrogateescape").splitlines()
        if p.returncode != 0 or b"Invalid hostlist" in p.stderr or not out:
            return None
        return out

    def _interactive(self, what: str, arg: str) -> list[str] | None:
        assert self.proc is not None and self.proc.stdin is not None
        command = f"show {what} {arg}"
        self.proc.stdin.write(f"{command}\nshow hostnames {_MARK}\n".encode())
        self.proc.stdin.flush()
        echoes = {f"scontrol: {command}", f"scontrol: show hostnames {_MARK}"}
        out: list[str] = []
        for line in self._lines():
            if line == _MARK:
                return out or None
            if line in echoes:
                echoes.discard(line)
            elif line.startswith("scontrol:"):
                raise RuntimeError(f"unexpected scontrol line {line!r}")
            else:
                out.append(line)
        raise RuntimeError("scontrol stopped answering")

    def _lines(self) -> Iterator[str]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + 30
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                yield line.decode("utf-8", "surrogateescape")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError("scontrol did not answer within 30 s")
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self.buf += chunk


@pytest.fixture(scope="module")
def scontrol(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scontrol]:
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    conf.write_text("ClusterName=clusterkit-test\nSlurmctldHost=localhost\n")
    sc = Scontrol(conf)
    if sc._argv("hostnames", "n[1-2]") != ["n1", "n2"]:
        pytest.skip("scontrol does not run without a controller here")
    yield sc
    sc.close()


def _ours(expr: str) -> list[str] | None:
    try:
        return hostlist.expand(expr)
    except HostlistError:
        return None


def _check_expression(sc: Scontrol, expr: str) -> list[str]:
    """expand == show hostnames; fold == show hostlistsorted / show hostlist."""
    names = hostlist.expand(expr)
    assert names == sc.show("hostnames", expr), expr
    joined = ",".join(names)
    assert [hostlist.fold(names)] == sc.show("hostlistsorted", joined), expr
    assert [hostlist.fold(names, sort=False)] == sc.show("hostlist", joined), expr
    return names


# Expressions both accept; each is expanded and folded both ways by both.
VALID = [
    "gpu-[001-003]",
    "gpu-[001-1000]",
    "gpu-[0001-1200]",
    "rack[1-2]-gpu[01-02]",
    "gpu-[001-003,007],login1,cpu[1-2]",
    "n[8-10]",
    "n[08-10]",
    "n[008-10]",
    "n[8-010]",
    "n[01-3]",
    "n[001-3]",
    "n[1-003]",
    "n[0001-1]",
    "n[9-11]",
    "n[009-011]",
    "n[99-101],n[099-101]",
    "n[0-0]",
    "n[1]",
    "n[1,2-3,5]",
    "n[5,1-3]",
    "n[3,3]",
    "n[1-3,2]",
    "n[1-3],n2",
    "n3,n1,n2",
    "n1,n1",
    "n1,n2,n1",
    "n[1-5],n[3-7]",
    "n[1-3],n[1-3],n[1-3]",
    "n[1-10],n5",
    "n[1-20],n[1-20],n[5-15],n[1-2]",
    "n[1-2][3-4]",
    "n[1-2]-[3-4]",
    "n[1-2]_[1-2]",
    "a[1-2]b[1-2]c[1-2]",
    "a[1-2]b[1-2]c[1-2]d[1-2]",
    "a[1-3]b[1-2]c[1-4]",
    "r[1-2]-c[01-03]-n[1,3]",
    "[1-3]",
    "[001-003],[1-2]",
    "login",
    "login,n1,n2",
    "n2,login,n1",
    "n,n1,n2",
    "n1,n,n2",
    "n1.example.com,n2.example.com",
    "gpu-001,gpu-002,gpu-010",
    "gpu-010,gpu-001,gpu-002",
    "gpu-10,gpu-9,gpu-010,gpu-09",
    "n1,n01,n001",
    "n0,n00,n000",
    "n9,n10,n11,n012",
    "n0009,n0010,n10",
    "rack1-gpu01,rack1-gpu02,rack2-gpu01",
    "rack2-gpu01,rack1-gpu02,rack1-gpu01,rack10-gpu1",
    "rack01-gpu1,rack1-gpu1,rack001-gpu1",
    "a01x,a1x,a001x,a10x",
    "n1x,n2x",
    "a1,b1,a2,b2",
    "N1,n1,M2",
    "1,2,3,001,002",
    "n-1,n-2,n_1",
    "n[1-2],",
    ",n1",
    "n1,,n2",
    "n1 n2\tn3",
    'a"b,a"[1-2]',
    "a;b,$(x),`id`",
    "é1,e1,f1,z1",
    "x1,x2147483647,x2",
    "n[2147483640-2147483647]",
    "gpu-[001-064],gpu-[033-096]",
]

# Expressions both refuse.
BOTH_REFUSE = [
    "n[1-3]x",
    "n[1-2].example.com",
    "n[1-2]:3",
    "rack[1-2]-gpu[1-2]-x",
    "n[3-1]",
    "n[a-b]",
    "n[]",
    "n[-1]",
    "n[-]",
    "n[,]",
    "n[1,,2]",
    "n[1-2,]",
    "n[1-2-3]",
    "n[1x2]",
    "n[[1-2]]",
    "n[1-2]]",
    "n[1-65537]",
    "n[1-40000,1-40000][1]",
    "n[1-2],m[a]",
]

# Where Slurm prints something odd and clusterkit refuses instead (docs/commands/hosts.md).
SLURM_ACCEPTS_WE_REFUSE = [
    ("n[1-2", ["n]"]),
    ("n[", ["n]"]),
    ("n]", ["n]"]),
    ("n1-2]", ["n1-2]"]),
    ("n[1-2]m[", ["n[1-2]m]"]),
    ("n[1-]", ["n1"]),
    ("n[ 1-2]", ["n01", "n02"]),
    ("n[+1-2]", ["n01", "n02"]),
    ("x3000000000", ["x3000000000"]),
]


def test_scontrol_answers_without_a_controller(scontrol: Scontrol) -> None:
    assert scontrol.show("hostnames", "gpu-[001-003]") == ["gpu-001", "gpu-002", "gpu-003"]
    assert scontrol.show("hostlistsorted", "gpu-010,gpu-001,gpu-002") == ["gpu-[001-002,010]"]
    assert scontrol.show("hostlist", "gpu-010,gpu-001,gpu-002") == ["gpu-[010,001-002]"]
    assert scontrol.show("hostnames", "gpu-[3-1]") is None


@pytest.mark.parametrize("expr", VALID)
def test_valid_expressions_match_scontrol(scontrol: Scontrol, expr: str) -> None:
    _check_expression(scontrol, expr)


def test_table_is_wide() -> None:
    assert len(VALID) + len(BOTH_REFUSE) + len(SLURM_ACCEPTS_WE_REFUSE) >= 50


@pytest.mark.parametrize("expr", BOTH_REFUSE)
def test_malformed_expressions_are_refused_by_both(scontrol: Scontrol, expr: str) -> None:
    assert scontrol.show("hostnames", expr) is None
    with pytest.raises(HostlistError):
        hostlist.expand(expr)


@pytest.mark.parametrize(("expr", "slurm_prints"), SLURM_ACCEPTS_WE_REFUSE)
def test_known_divergences_still_hold(scontrol: Scontrol, expr: str, slurm_prints: list[str]) -> None:
    assert scontrol.show("hostnames", expr) == slurm_prints
    with pytest.raises(HostlistError):
        hostlist.expand(expr)


def test_a_shuffled_thousand_names_fold_like_scontrol(scontrol: Scontrol) -> None:
    rng = random.Random(20240601)
    names = [f"gpu-{i:04d}" for i in range(1, 2001) if rng.random() < 0.6]
    names += [f"rack{r}-gpu{g}" for r in range(1, 12) for g in range(1, 9)]
    rng.shuffle(names)
    assert len(names) > 1000
    joined = ",".join(names)
    folded = hostlist.fold(names)
    assert [folded] == scontrol.show("hostlistsorted", joined)
    assert [hostlist.fold(names, sort=False)] == scontrol.show("hostlist", joined)
    assert hostlist.expand(folded) == scontrol.show("hostnames", folded)


def test_many_prefixes_with_digits_fold_like_scontrol(scontrol: Scontrol) -> None:
    # over 64 distinct prefixes with digits: fold() replays glibc's merge sort
    rng = random.Random(7)
    names = [f"p{i}q{rng.randint(0, 30):0{rng.randint(0, 3)}d}" for i in range(90) for _ in range(3)]
    names += [f"p0{i}q{j}" for i in range(12) for j in range(3)] + ["p07q1", "p7q01", "p07q1"]
    rng.shuffle(names)
    joined = ",".join(names)
    assert [hostlist.fold(names)] == scontrol.show("hostlistsorted", joined)
    assert [hostlist.fold(names, sort=False)] == scontrol.show("hostlist", joined)


# --------------------------------------------------------------------------- generated
_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_PREFIX = st.sampled_from(
    ["n", "gpu-", "rack1-gpu", "rack01-gpu", "rack10-gpu", "rack2-gpu", "a1b", "a01b", "a001b",
     "x0-", "x00-", "A", "b", "", "q."]
)
_DIGITS = st.builds(
    lambda v, w: f"{v:0{w}d}",
    st.one_of(st.integers(0, 15), st.integers(0, 1200), st.integers(0, 2**31 - 4)),
    st.sampled_from([0, 0, 1, 2, 3, 5]),
)


@st.composite
def _name_lists(draw: st.DrawFn) -> list[str]:
    names: list[str] = []
    for _ in range(draw(st.integers(1, 25))):
        prefix = draw(_PREFIX)
        if draw(st.integers(0, 9)) == 0:
            names.append(prefix or "login")
            continue
        digits = draw(_DIGITS)
        run = draw(st.integers(1, 4))  # consecutive numbers fold into ranges
        for k in range(run):
            names.append(f"{prefix}{int(digits) + k:0{len(digits)}d}")
    if draw(st.booleans()):  # duplicates, at random places
        for _ in range(draw(st.integers(1, 5))):
            names.insert(draw(st.integers(0, len(names))), draw(st.sampled_from(names)))
    return names


@_SETTINGS
@given(_name_lists())
def test_generated_name_lists_fold_like_scontrol(scontrol: Scontrol, names: list[str]) -> None:
    joined = ",".join(names)
    folded = hostlist.fold(names)
    assert [folded] == scontrol.show("hostlistsorted", joined)
    assert [hostlist.fold(names, sort=False)] == scontrol.show("hostlist", joined)
    assert hostlist.expand(folded) == scontrol.show("hostnames", folded)


_RANGE = st.builds(
    lambda lo, span, w: f"{lo:0{w}d}" if span < 0 else f"{lo:0{w}d}-{lo + span}",
    st.integers(0, 120),
    st.integers(-1, 12),
    st.sampled_from([0, 1, 2, 3]),
)
_GROUP = st.lists(_RANGE, min_size=1, max_size=3).map(lambda rs: "[" + ",".join(rs) + "]")
_TEXT = st.sampled_from(["n", "gpu-", "rack", "-", "_", "x", "c0", ""])


@st.composite
def _expressions(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(1, 3))):
        parts = [draw(_TEXT)]
        for _ in range(draw(st.integers(0, 3))):
            parts.append(draw(_GROUP))
            parts.append(draw(_TEXT))
        if len(parts) > 1 and draw(st.integers(0, 4)):
            parts[-1] = ""  # Slurm allows nothing after the last group; sometimes test that
        items.append("".join(parts) or "login")
    return draw(st.sampled_from([",", ",", ",", " "])).join(items)


@_SETTINGS
@given(_expressions())
def test_generated_expressions_expand_like_scontrol(scontrol: Scontrol, expr: str) -> None:
    slurm = scontrol.show("hostnames", expr)
    ours = _ours(expr)
    if ours is not None:
        assert ours == slurm
        joined = ",".join(ours)
        if len(joined) < 100_000:
            assert [hostlist.fold(ours)] == scontrol.show("hostlistsorted", joined)
    else:
        assert slurm is None


@_SETTINGS
@given(st.text(alphabet="gn-01,[]x9", min_size=1, max_size=24))
def test_junk_is_refused_or_read_exactly_like_scontrol(scontrol: Scontrol, text: str) -> None:
    ours = _ours(text)
    slurm = scontrol.show("hostnames", text)
    if ours is not None:
        assert ours == slurm  # never accept anything that Slurm reads differently
    if slurm is None:
        assert ours is None  # never accept anything that Slurm refuses
