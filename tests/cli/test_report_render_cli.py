"""`validate --html` and `clusterkit report render` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import ck, one_error_line


def test_validate_html_and_render_again(tmp_path: Path) -> None:
    rep, page = tmp_path / "r.json", tmp_path / "r.html"
    p = ck("validate", "--sim", "--output", str(rep), "--html", str(page))
    assert p.returncode == 1, p.stderr
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "gpu-003" in html and "gpu.ecc.uncorrectable" in html
    doc = json.loads(rep.read_text())
    assert doc["run_id"] in html
    # the saved report renders to the same page, and to JUnit
    again, junit = tmp_path / "again.html", tmp_path / "j.xml"
    p = ck("report", "render", str(rep), "--html", str(again), "--junit", str(junit))
    assert p.returncode == 0 and p.stdout == "", p.stderr
    assert again.read_text() == html
    assert "<testsuites" in junit.read_text()
    # no file option: the terminal report
    p = ck("report", "render", str(rep))
    assert p.returncode == 0 and "gpu.ecc.uncorrectable  gpu-003" in p.stdout


def test_bad_inputs_are_one_line_exit_2(tmp_path: Path) -> None:
    p = ck("report", "render", str(tmp_path / "missing.json"))
    assert p.returncode == 2 and "cannot read report" in one_error_line(p)
    (tmp_path / "x.json").write_text("{}")
    p = ck("report", "render", str(tmp_path / "x.json"), "--html", str(tmp_path / "x.html"))
    assert p.returncode == 2 and "not a clusterkit report" in one_error_line(p)
    p = ck("validate", "--sim", "--output", str(tmp_path / "a"), "--html", str(tmp_path / "a"))
    assert p.returncode == 2 and "--output and --html name the same file" in one_error_line(p)
    p = ck("validate", "--sim", "--html", str(tmp_path / "nodir" / "a.html"))
    assert p.returncode == 2 and "--html" in one_error_line(p)
