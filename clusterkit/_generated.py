"""Generated modules (the check index, the parsed packaged YAML): write one, or check that it is
current. One command-line shape for both: ``python -m MODULE --write-X | --check-X``."""

from __future__ import annotations

import sys
from typing import Callable


def write_or_check(argv: list[str], *, what: str, command: str, path: str, shown: str,
                   source: Callable[[], str]) -> int:
    """``--write-<what>``: write ``path`` when its text differs from ``source()``;
    ``--check-<what>``: exit 1 (naming the command that fixes it) when it differs."""
    write, check = f"--write-{what}", f"--check-{what}"
    if argv not in ([write], [check]):
        print(f"usage: {command} {write} | {check}", file=sys.stderr)
        return 2
    text = source()
    try:
        with open(path, encoding="utf-8") as fh:
            same = fh.read() == text
    except OSError:
        same = False
    if argv == [check]:
        if not same:
            print(f"{shown} is out of date: run `{command} {write}`", file=sys.stderr)
        return 0 if same else 1
    if not same:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    print(f"{shown}: {'unchanged' if same else 'written'}")
    return 0
