"""Hypothesis strategies that mutate real tool outputs, for parser fuzzing.

Usage::

    @settings(max_examples=60, deadline=None)
    @given(mutated(FIXTURE_TEXTS))
    def test_fuzz(text):
        assert_only_parse_error(parse_fn, text)
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

from hypothesis import strategies as st

from clusterkit.errors import ParseError

_GARBAGE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40
)


@st.composite
def mutated(draw, texts: list[str]):
    """One fixture text with a few random mutations applied."""
    text = draw(st.sampled_from(texts))
    lines = text.split("\n")
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(
            ["truncate", "delete", "duplicate", "crlf", "tabs", "spaces", "garbage_line",
             "garbage_in_line", "swap", "empty"]
        ))
        if not lines:
            lines = [""]
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        if op == "truncate":
            joined = "\n".join(lines)
            cut = draw(st.integers(min_value=0, max_value=len(joined)))
            lines = joined[:cut].split("\n")
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "crlf":
            lines = [ln + "\r" for ln in lines]
        elif op == "tabs":
            lines = [ln.replace("    ", "\t") for ln in lines]
        elif op == "spaces":
            lines = [ln.replace("\t", "  ") for ln in lines]
        elif op == "garbage_line":
            lines.insert(i, draw(_GARBAGE))
        elif op == "garbage_in_line":
            ln = lines[i]
            pos = draw(st.integers(min_value=0, max_value=len(ln)))
            lines[i] = ln[:pos] + draw(_GARBAGE) + ln[pos:]
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "empty":
            lines = [""]
    return "\n".join(lines)


@contextmanager
def _time_limit(seconds: int):
    def _raise(signum, frame):  # pragma: no cover - only on a hang
        raise AssertionError(f"parser did not finish within {seconds}s (hang?)")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def assert_only_parse_error(parse, text: str, seconds: int = 5):
    """Run ``parse(text)``: it returns a model or raises ParseError, within ``seconds``."""
    with _time_limit(seconds):
        try:
            return parse(text)
        except ParseError:
            return None


def check_fuzzed(parse, text: str) -> None:
    """One fuzz example: ParseError or a model that still serialises and summarises."""
    out = assert_only_parse_error(parse, text)
    if out is not None:
        out.model_dump_json(by_alias=True)
        out.summary()
