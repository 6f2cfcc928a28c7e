"""node_exporter textfile: written atomically, parsed back by a strict exposition-format parser."""

from __future__ import annotations

import os
import re

import pytest

from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status
from clusterkit.telemetry.prom import prom_text, write_prom_textfile

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_VALUE = r'"((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL}={_VALUE})(?:,{_LABEL}={_VALUE})*)?\}})? (\S+)$")
_PAIR = re.compile(rf"({_LABEL})={_VALUE}")


def _unescape(v: str) -> str:
    out, i = [], 0
    while i < len(v):
        if v[i] == "\\":
            out.append({"\\": "\\", '"': '"', "n": "\n"}[v[i + 1]])
            i += 2
        else:
            out.append(v[i])
            i += 1
    return "".join(out)


def parse_exposition(text: str) -> dict[str, dict]:
    """Strict reader of the text format (version 0.0.4) for gauges: every family once, HELP and
    TYPE before its samples, samples of a family together, label sets unique, no timestamps."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and name not in families, line
            families[name] = {"help": help_text, "type": None, "samples": {}}
            current = name
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and kind == "gauge", line
            families[name]["type"] = kind
            continue
        assert not line.startswith("#"), line
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(m.lastindex)
        assert name == current and families[name]["type"] == "gauge", line
        labels = tuple((k, _unescape(v)) for k, v in _PAIR.findall(labels_text))
        assert len({k for k, _ in labels}) == len(labels), line
        assert labels not in families[name]["samples"], f"duplicate series: {line}"
        families[name]["samples"][labels] = float(value)
    return families


def _report() -> FleetReport:
    hostile = 'gpu "7",\\ x\ny'
    checks = [
        CheckResult(check="gpu.temperature", subject="gpu0", gpu=0, status=Status.PASS, value=31.0, threshold=85.0),
        CheckResult(check="gpu.temperature", subject="gpu1", gpu=1, status=Status.FAIL, value=91.0, threshold=85.0),
        CheckResult(check="ib.port.rate", subject="mlx5_0/1", device="mlx5_0", port=1, status=Status.PASS, value=400),
        CheckResult(check="storage.free", path=hostile, status=Status.WARN, value=10.5),
        CheckResult(check="gpu.model", gpu=0, status=Status.PASS, value="H100"),
    ]
    return FleetReport(created="2026-03-04T05:06:07+00:00", profile="h100-sxm", partition="gpu", duration_s=12.5,
                       nodes=[NodeReport(node="gpu-001", status=NodeStatus.FAIL, checks=checks),
                              NodeReport(node="gpu-002", status=NodeStatus.UNREACHABLE)]).finalize()


def test_textfile_parses_back(tmp_path):
    path = tmp_path / "clusterkit.prom"
    write_prom_textfile(_report(), str(path))
    fams = parse_exposition(path.read_text(encoding="utf-8"))
    status = fams["clusterkit_check_status"]["samples"]
    base = (("host", "gpu-001"), ("partition", "gpu"), ("profile", "h100-sxm"))
    assert status[(*base, ("check", "gpu.temperature"), ("gpu", "1"))] == 2
    assert status[(*base, ("check", "ib.port.rate"), ("device", "mlx5_0"), ("port", "1"))] == 0
    # hostile label values survive the exposition format's escaping
    assert status[(*base, ("check", "storage.free"), ("path", 'gpu "7",\\ x\ny'))] == 1
    values = fams["clusterkit_check_value"]["samples"]
    assert values[(*base, ("check", "gpu.temperature"), ("gpu", "0"))] == 31.0
    assert not any(dict(k).get("check") == "gpu.model" for k in values)  # strings are not values
    assert fams["clusterkit_check_threshold"]["samples"][(*base, ("check", "gpu.temperature"), ("gpu", "0"))] == 85
    nodes = fams["clusterkit_node_status"]["samples"]
    assert nodes[(("host", "gpu-002"), ("partition", "gpu"), ("profile", "h100-sxm"))] == 5
    run = (("partition", "gpu"), ("profile", "h100-sxm"))
    assert fams["clusterkit_run_exit_code"]["samples"][run] == 1
    assert fams["clusterkit_run_nodes"]["samples"][(*run, ("status", "unreachable"))] == 1
    assert fams["clusterkit_run_duration_seconds"]["samples"][run] == 12.5
    assert fams["clusterkit_run_timestamp_seconds"]["samples"][run] == 1772600767
    assert "0 pass" in fams["clusterkit_check_status"]["help"]
    # no run or job ids as labels
    for fam in fams.values():
        for labels in fam["samples"]:
            assert not {"run_id", "job_id"} & {k for k, _ in labels}
    # written atomically: nothing else left in the directory
    assert os.listdir(tmp_path) == ["clusterkit.prom"]


def test_textfile_that_cannot_be_written_is_one_line(tmp_path):
    from clusterkit.errors import OutputError

    with pytest.raises(OutputError) as e:
        write_prom_textfile(_report(), str(tmp_path / "missing" / "x.prom"))
    assert "\n" not in str(e.value) and "cannot write" in str(e.value)


def test_simulated_run_parses_back():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "clusterkit", "validate", "--sim", "--nodes", "gpu-[001-002]",
                        "--json", "--no-progress"], capture_output=True, text=True, timeout=300)
    fams = parse_exposition(prom_text(FleetReport.model_validate_json(p.stdout)))
    assert len(fams["clusterkit_check_status"]["samples"]) == sum(
        len(n["checks"]) for n in __import__("json").loads(p.stdout)["nodes"])
