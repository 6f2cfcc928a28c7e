"""Golden files: a rendered text must equal its file under tests/golden/; a missing file fails
(never silently created); ``CLUSTERKIT_UPDATE_GOLDEN=1`` (re)writes them, to be reviewed as a diff."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest


def check_golden(name: str, text: str, directory: Path, suffix: str = ".sh") -> None:
    """``text`` must equal ``directory/<name><suffix>``; CLUSTERKIT_UPDATE_GOLDEN=1 writes it instead."""
    path = directory / f"{name}{suffix}"
    if os.environ.get("CLUSTERKIT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"golden file {path.name} is missing: write it with CLUSTERKIT_UPDATE_GOLDEN=1 and review it")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), text.splitlines(keepends=True),
                                            f"golden/{path.name}", "rendered"))
        pytest.fail(f"{path.name} differs from what was rendered (CLUSTERKIT_UPDATE_GOLDEN=1 rewrites it):\n{diff}")
