"""Every captured tool output is parsed by its tool; every parser survives every other tool's
output (a model or ParseError, nothing else); the shared fixture set is fully covered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clusterkit.errors import ParseError
from clusterkit.parsers import TOOLS, get_parser

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
SHARED = HERE.parents[2] / "shared" / "fixtures"  # beside the checkout, where there is one


def tool_for(path: Path) -> str | None:
    d, name = path.parent.name, path.name
    if d == "nvidia-smi":
        if "topo" in name:
            return "nvidia-smi-topo"
        if "nvlink" in name:
            return "nvidia-smi-nvlink"
        if "query-gpu" in name:
            return "nvidia-smi-csv"
        return "nvidia-smi-q"
    if d == "perftest":
        return "ib_write_lat" if "ib_write_lat" in name else "ib_write_bw"
    if d == "slurm":
        if name.startswith("sinfo"):
            return "sinfo"
        if name.startswith("scontrol"):
            return "scontrol-node"
        return None  # squeue: no squeue tool (yet)
    return {"dcgmi": "dcgmi-diag", "dmesg-xid": "dmesg-xid"}.get(d, d if d in TOOLS else None)


ALL = sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.suffix != ".md")
PARSEABLE = [p for p in ALL if tool_for(p)]


def test_fixture_set_is_complete():
    assert len(PARSEABLE) >= 55
    if not SHARED.is_dir():
        pytest.skip("shared fixtures not beside this checkout")
    shared = sorted(p for p in SHARED.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    missing = [str(p.relative_to(SHARED)) for p in shared
               if not (FIXTURES / p.relative_to(SHARED)).is_file()
               or (FIXTURES / p.relative_to(SHARED)).read_bytes() != p.read_bytes()]
    assert missing == []


@pytest.mark.parametrize("path", PARSEABLE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_fixture_parses_with_its_tool(path):
    model = get_parser(tool_for(path))(path.read_text(encoding="utf-8", errors="replace"))
    assert model.model_dump_json(by_alias=True)
    assert model.summary().strip()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_parser_survives_every_fixture(tool):
    parse = get_parser(tool)
    refused = 0
    for path in ALL:
        try:
            parse(path.read_text(encoding="utf-8", errors="replace"))
        except ParseError as e:
            refused += 1
            assert "\n" not in str(e)
    # each parser refuses most other tools' outputs
    assert refused >= len(ALL) // 2


def test_squeue_json_given_to_sinfo_is_one_clean_line():
    path = FIXTURES / "slurm" / "squeue_json_slurm21.08.5_openapi_v0.0.37_sanitized.json"
    if not path.is_file():
        pytest.skip("squeue fixture not copied")
    p = subprocess.run([sys.executable, "-m", "clusterkit", "parse", "sinfo", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and path.name in p.stderr
