"""Slurm hostlist expressions: expand and fold with Slurm's semantics (placeholder)."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders gpu-2 before gpu-10 and keeps text order otherwise."""
    return tuple((0, int(p), len(p)) if p.isdigit() else (1, p, 0) for p in _DIGITS.split(name) if p)
