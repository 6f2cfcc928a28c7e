"""`clusterkit parse` run as a user runs it: a subprocess."""

from __future__ import annotations

import subprocess
import sys


def run_parse(*args: str) -> subprocess.CompletedProcess:
    """``clusterkit parse ARGS…`` in a subprocess, output captured as text."""
    return subprocess.run([sys.executable, "-m", "clusterkit", "parse", *args],
                          capture_output=True, text=True, timeout=60)
