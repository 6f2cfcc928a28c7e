"""Shared helpers for parsers: the result base class and line handling."""

from __future__ import annotations

from clusterkit.record import ConfigDict, Record

from clusterkit.errors import ParseError


class ParsedOutput(Record):
    """Base of every parser's result model."""

    model_config = ConfigDict(extra="forbid")

    def summary(self) -> str:
        """A short human summary (a few lines) for ``clusterkit parse`` without ``--json``."""
        return self.model_dump_json(indent=2)


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` with CRLF/CR endings normalised and trailing white space kept off."""
    return [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def fail(tool: str, message: str, line_no: int | None = None, line: str | None = None) -> ParseError:
    """Build a ParseError (``raise fail(...)``)."""
    return ParseError(message, line_no=line_no, line=line, tool=tool)


def not_recognised(tool: str, lines: list[str], what: str) -> ParseError:
    """The error for text with nothing of ``tool``'s output in it: quotes the first non-blank
    line, or says the input is empty (``raise not_recognised(...)``)."""
    for i, ln in enumerate(lines, 1):
        if ln.strip():
            return ParseError(what, line_no=i, line=ln, tool=tool)
    return ParseError(f"empty input: no {tool} output", tool=tool)
