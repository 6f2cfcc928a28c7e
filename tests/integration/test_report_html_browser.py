"""The HTML report in a real headless Chromium (Debian's ``chromium``, driven by playwright
without any browser download): no console or page errors, no request but the file itself,
the heatmap and its detail panel work, hostile strings stay text, 1,024 nodes load quickly.

Skipped, with the reason, where chromium or playwright is missing (scripts/test installs both).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterkit.models import CheckResult, FleetReport, NodeReport, NodeStatus, Status
from clusterkit.report import write_report
from tests.infra.reports import scaled_report, sim_report

#: page load plus full-page screenshot of the 1,024-node report must stay under this (seconds)
BIG_PAGE_BOUND_S = 15.0


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip playwright is not installed")
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


class Opened:
    """One page, with everything it said and asked for."""

    def __init__(self, browser: Any, path: Path, *, javascript: bool = True,
                 viewport: tuple[int, int] = (1400, 900)) -> None:
        self.context = browser.new_context(java_script_enabled=javascript,
                                           viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        started = time.perf_counter()
        self.page.goto(self.url, wait_until="load")
        self.load_s = time.perf_counter() - started

    def assert_clean(self) -> None:
        assert self.errors == []
        assert [m for m in self.console if m.startswith(("error", "warning"))] == []
        assert self.requests == [self.url]  # the file itself, nothing else

    def failing_rows(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#hm tr[data-n]", "rows => rows.filter(r => r.querySelector('td.f')).map(r => r.cells[0].textContent)")

    def cell(self, node: str, domain: str) -> Any:
        col = self.page.eval_on_selector_all(
            "#hm thead tr:first-child th", "ths => ths.map(t => t.textContent)").index(domain)
        n = self.page.eval_on_selector_all(
            "#hm tr[data-n]", "(rows, name) => rows.filter(r => r.cells[0].textContent === name)"
            ".map(r => r.getAttribute('data-n'))", node)
        assert len(n) == 1, (node, n)
        return self.page.locator(f'#hm tr[data-n="{n[0]}"] > :nth-child({col + 1})')

    def close(self) -> None:
        self.context.close()


def test_sim_report_in_chromium(browser, tmp_path):
    path = tmp_path / "report.html"
    write_report(sim_report(), "html", str(path))
    page = Opened(browser, path)
    try:
        p = page.page
        assert page.failing_rows() == ["gpu-003", "gpu-006"]
        # the first failing cell is shown on load; a click shows another, then gpu-003's again
        page.cell("gpu-001", "nvlink").click()
        detail = p.locator("#detail")
        assert "gpu-001 · nvlink" in detail.inner_text() and "nvlink.links" in detail.inner_text()
        assert "gpu.ecc.uncorrectable" not in detail.inner_text()
        page.cell("gpu-003", "gpu").click()
        text = detail.inner_text()
        assert "gpu-003 · gpu" in text and "gpu.ecc.uncorrectable" in text
        first_row = detail.locator("tbody tr").first.inner_text()
        assert "FAIL" in first_row and "gpu.ecc.uncorrectable" in first_row and "gpu5" in first_row
        assert p.locator("#hm td.sel").count() == 1
        page.cell("gpu-006", "gpu").click()
        assert "gpu.pcie.width" in detail.inner_text()
        page.cell("gpu-006", "node").click()
        assert "facts" in detail.inner_text() and "driver_version" in detail.inner_text()
        # the CSS-only filter
        assert p.locator("#hm tr[data-n]:visible").count() == 8
        p.locator("#only").check()
        assert p.eval_on_selector_all("#hm tr[data-n]", "rows => rows.filter(r => r.offsetParent)"
                                      ".map(r => r.cells[0].textContent)") == ["gpu-003", "gpu-006"]
        page.assert_clean()
    finally:
        page.close()


def test_static_sections_without_javascript(browser, tmp_path):
    path = tmp_path / "report.html"
    write_report(sim_report(), "html", str(path))
    page = Opened(browser, path, javascript=False)
    try:
        p = page.page
        assert "gpu.ecc.uncorrectable" in p.locator("#problems").inner_text()
        assert p.locator("#hm td.f").count() == 2
        assert "need JavaScript" in p.locator("#detail").inner_text()
        page.assert_clean()
    finally:
        page.close()


def test_hostile_strings_stay_text_in_the_browser(browser, tmp_path):
    evil = '<img src=x onerror="window.pwned=1">'
    message = "</script><script>window.pwned=2</script><!-- " + evil
    report = FleetReport(source="nodes:" + evil, nodes=[
        NodeReport(node="ok-1", status=NodeStatus.PASS,
                   checks=[CheckResult(check="gpu.count", status=Status.PASS, value=8, threshold=8)]),
        NodeReport(node="x" + evil, status=NodeStatus.FAIL, checks=[
            CheckResult(check="gpu.count", subject=evil, status=Status.FAIL, value=evil, threshold=8,
                        unit=evil, message=message)]),
    ]).finalize()
    path = tmp_path / "evil.html"
    write_report(report, "html", str(path))
    page = Opened(browser, path)
    try:
        p = page.page
        assert p.evaluate("window.pwned") is None
        assert p.locator("#hm img, #problems img, #detail img, #hm script").count() == 0
        page.cell("x" + evil, "gpu").click()
        detail = p.locator("#detail").inner_text()
        assert message in detail and evil in detail
        assert p.evaluate("window.pwned") is None
        assert message in p.locator("#problems").inner_text()
        page.assert_clean()
    finally:
        page.close()


def test_1024_nodes_load_and_screenshot_in_bounded_time(browser, tmp_path, capsys):
    report = scaled_report(sim_report(), 1024)
    path = tmp_path / "big.html"
    started = time.perf_counter()
    write_report(report, "html", str(path))
    render_s = time.perf_counter() - started
    page = Opened(browser, path)
    try:
        p = page.page
        t0 = time.perf_counter()
        p.screenshot(path=str(tmp_path / "big.png"), full_page=True)
        shot_s = time.perf_counter() - t0
        with capsys.disabled():
            print(f"\n1,024 nodes: HTML {path.stat().st_size / 1024:.0f} KiB, render {render_s:.2f} s, "
                  f"page load {page.load_s:.2f} s, full-page screenshot {shot_s:.2f} s")
        assert page.load_s + shot_s < BIG_PAGE_BOUND_S
        assert (tmp_path / "big.png").stat().st_size > 10_000
        assert p.locator("#hm tr[data-n]").count() == 1024
        assert page.failing_rows() == ["gpu-0003", "gpu-0006", "gpu-0101"]
        t0 = time.perf_counter()
        page.cell("gpu-0101", "ib").click()
        text = p.locator("#detail").inner_text()
        click_s = time.perf_counter() - t0
        assert "ib.write_bw" in text and "301.5" in text
        assert click_s < 2.0, click_s
        assert p.locator("#figures svg").count() == 4
        assert p.locator("#figures circle.out").count() == 3
        page.assert_clean()
    finally:
        page.close()
