"""Suite-wide settings: in-process probes keep their state (counters compared between runs)
in a temporary directory, never in the machine's /var/lib/clusterkit."""

from __future__ import annotations

import os
import shutil
import tempfile

_STATE = tempfile.mkdtemp(prefix="clusterkit-test-state-")
os.environ["CLUSTERKIT_STATE_DIR"] = _STATE


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_STATE, ignore_errors=True)
