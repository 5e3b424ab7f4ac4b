"""The HTML report in a real browser: Playwright driving Debian's Chromium (never `playwright install`).

The page must load with no console errors and no network request beyond the file itself, show the right verdicts,
filter its flagged rows, and run nothing that a dataset row carries. Screenshots go to
`$TRAIT_AUDIT_SCREENSHOTS` (default `reports/screenshots/`) for review.

Locally, without Chromium or Playwright, these tests skip. In CI (`TRAIT_AUDIT_CI` set, as `.ci/run` does) they fail
instead, so a missing browser can never pass silently.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_samples import make_flags, sample_result  # noqa: E402

from auditor.cli import main  # noqa: E402
from auditor.reports.html import render_html  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
SCREENSHOTS = Path(os.environ.get("TRAIT_AUDIT_SCREENSHOTS") or ROOT / "reports" / "screenshots")
# the flags that keep Chromium quiet, offline and happy in a container
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """`$TRAIT_AUDIT_CHROMIUM` when set (and only it), else Debian's Chromium."""
    override = os.environ.get("TRAIT_AUDIT_CHROMIUM")
    candidates = [override] if override else ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(why: str):
    if os.environ.get("TRAIT_AUDIT_CI"):
        pytest.fail(f"browser tests cannot run in CI: {why} (.ci/run installs chromium; pip installs playwright from the test extra)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    path = chromium_path()
    if path is None:
        _unavailable("no chromium executable (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """One report opened in a fresh context, with every console message, page error, dialog and request recorded."""

    def __init__(self, browser, html_path: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.console, self.errors, self.dialogs, self.requests = [], [], [], []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.context.on("request", lambda r: self.requests.append(r.url))
        # anything but the report itself would be a network request: record and refuse it
        self.context.route(lambda url: not url.startswith("file://"), lambda route: route.abort())
        self.url = html_path.resolve().as_uri()
        self.page.goto(self.url, wait_until="load")

    def assert_quiet(self):
        bad = [(t, m) for t, m in self.console if t in ("error", "warning", "assert")]
        assert not bad, bad
        assert not self.errors, self.errors
        assert not self.dialogs, self.dialogs
        assert self.requests == [self.url], self.requests

    def close(self):
        self.context.close()


@pytest.fixture
def open_report(browser):
    pages = []

    def _open(path: Path) -> Page:
        page = Page(browser, path)
        pages.append(page)
        return page

    yield _open
    for p in pages:
        p.close()


def _write(tmp_path: Path, result: dict, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(render_html(result), encoding="utf-8")
    return path


def _screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_sample_report_loads_quietly_and_shows_verdicts(open_report, tmp_path):
    result = sample_result()
    page = open_report(_write(tmp_path, result))
    page.assert_quiet()
    # the CSP allowed exactly our script: it un-hid the filters and counted rows
    assert page.page.locator("#flag-filters").is_visible()
    assert page.page.locator("#flag-count").inner_text() == "5 of 5 rows match"
    cards = page.page.locator(".trait[data-trait-id]")
    shown = {cards.nth(i).get_attribute("data-trait-id"): cards.nth(i).locator(".badge").first.inner_text()
             for i in range(cards.count())}
    expected = {t["id"]: t["verdict"] for t in result["traits"] if t["evidence"]}
    assert shown == expected
    assert page.page.locator("#gate").inner_text().startswith("Gate FAILED")
    banner = page.page.locator("#coverage").inner_text()
    assert "logprob-shift" in banner and "student-probe" in banner and "lexical" in banner
    owl = page.page.locator('.trait[data-trait-id="owl-preference"]').inner_text()
    assert "95% [0.41, 0.73]" in owl and "Hidden transfer checked by logprob-shift" in owl
    assert "student-probe could not look: skipped: no GPU available" in owl
    # charts render as SVG with real geometry
    assert page.page.locator("svg.chart").count() >= 3
    box = page.page.locator("#profile svg.chart").bounding_box()
    assert box and box["width"] > 300 and box["height"] > 50
    _screenshot(page, "report-sample.png")


def test_drill_down_filter_and_search(open_report, tmp_path):
    flags = make_flags(40, traits=("misalignment", "owl-preference", None))
    flags[5]["detector"] = "judge"
    flags[5]["excerpt"] = "a unique needle row"
    page = open_report(_write(tmp_path, sample_result(flags=flags, flags_total=40)))
    page.assert_quiet()
    p = page.page
    rows = p.locator("#flag-table tbody tr")

    def visible() -> int:
        return sum(1 for i in range(rows.count()) if rows.nth(i).is_visible())

    assert visible() == 40
    p.fill("#flag-q", "NEEDLE")
    assert visible() == 1 and p.locator("#flag-count").inner_text() == "1 of 40 rows match"
    assert "a unique needle row" in rows.filter(visible=True).first.inner_text()
    p.fill("#flag-q", "")
    p.select_option("#flag-trait", "t:owl-preference")
    assert visible() == 13
    p.select_option("#flag-trait", "none")
    assert visible() == 13
    p.select_option("#flag-trait", "")
    p.select_option("#flag-detector", "judge")
    assert visible() == 1
    p.select_option("#flag-detector", "")
    p.check("#flag-hide-accepted")
    assert visible() == 36  # rows 1, 11, 21, 31 are accepted
    p.uncheck("#flag-hide-accepted")
    # search reaches the drill-down: a row's digest
    p.fill("#flag-q", flags[7]["digest"][:20])
    assert visible() == 1
    row = rows.filter(visible=True).first
    row.locator("summary").click()
    details = row.locator("dl.drill").inner_text()
    assert flags[7]["digest"] in details and "owl" in details
    marks = row.locator("mark")
    assert marks.count() > 0 and marks.first.inner_text().lower() in ("owl", "777")
    page.assert_quiet()


def test_xss_fixture_is_inert(open_report, tmp_path):
    """A real audit of rows that carry markup: everything shows as text, nothing runs, nothing loads."""
    out = tmp_path / "xss"
    res = CliRunner().invoke(main, [str(FIXTURES / "xss_rows.jsonl"), "--trait", "owl", "--out", str(out), "-q"])
    assert res.exit_code == 1, res.output  # every payload row names the owl: flagged
    page = open_report(out / "report.html")
    p = page.page
    p.mouse.move(400, 400)
    for i in range(p.locator("summary").count()):
        p.locator("summary").nth(i).click()  # open every drill-down: still nothing may run
    p.locator("mark").first.hover()
    p.wait_for_timeout(200)
    page.assert_quiet()
    assert p.evaluate("window.__xss") is None and p.evaluate("parent.__xss") is None
    counts = p.evaluate("""() => ({scripts: document.scripts.length, img: document.images.length,
        iframes: document.querySelectorAll('iframe').length, textareas: document.querySelectorAll('textarea').length,
        links: document.querySelectorAll('link').length, styles: document.querySelectorAll('style').length,
        anchors: Array.from(document.querySelectorAll('a')).filter(a => !a.getAttribute('href').startsWith('#')).length,
        onattrs: Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes).some(a => a.name.startsWith('on'))).length})""")
    assert counts == {"scripts": 1, "img": 0, "iframes": 0, "textareas": 0, "links": 0, "styles": 1, "anchors": 0, "onattrs": 0}
    assert p.locator("body").is_visible()  # the row's <style>body{display:none}</style> stayed text
    text = p.locator("#flag-table").inner_text()
    for literal in ("<script>window.__xss = 'script'</script>", "</textarea><script>", "<img src=x onerror=",
                    "<svg onload=", "<iframe srcdoc=", "javascript:window.__xss"):
        assert literal in text, literal
    _screenshot(page, "report-xss.png")

    # escaping alone keeps it inert: the same page without its Content-Security-Policy still runs nothing
    html = (out / "report.html").read_text(encoding="utf-8")
    start = html.index('<meta http-equiv="Content-Security-Policy"')
    bare = tmp_path / "no-csp.html"
    bare.write_text(html[:start] + html[html.index(">", start) + 1:], encoding="utf-8")
    page = open_report(bare)
    for i in range(page.page.locator("summary").count()):
        page.page.locator("summary").nth(i).click()
    page.page.wait_for_timeout(200)
    page.assert_quiet()
    assert page.page.evaluate("window.__xss") is None
    assert page.page.evaluate("document.images.length + document.querySelectorAll('iframe, textarea, link').length") == 0


def test_demo_fixture_report(open_report, tmp_path):
    """The report a reviewer gets from the bundled fixture (`make demo`)."""
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, [str(FIXTURES / "owl_mentions.jsonl"), "--teacher", "openai:gpt-4.1-nano", "--out", str(out), "-q"])
    assert res.exit_code == 1, res.output
    page = open_report(out / "report.html")
    page.assert_quiet()
    p = page.page
    owl = p.locator('.trait[data-trait-id="animal:owl"]')
    assert owl.locator(".badge").first.inner_text() == "high"
    assert "Hidden transfer not checked" in owl.inner_text()
    p.select_option("#flag-trait", "t:animal:owl")
    assert p.locator("#flag-count").inner_text() == "3 of 14 rows match"
    assert p.locator("#flag-table tbody tr:visible mark").count() >= 2
    assert "needs both --teacher and --base" in p.locator("#not-run").inner_text()
    _screenshot(page, "report-demo.png")


DEMO_RESULT = FIXTURES / "reports" / "tiny-demo.report.json"


@pytest.mark.parametrize("width", [1400, 800])
def test_tiny_demo_report_at_a_glance(browser, tmp_path, width):
    """The white-box demo's report (`make demo` on the tiny family, saved in fixtures/reports) at a desktop and a narrow
    width: the checked trait leads, nothing overflows sideways, every chart has room. Screenshots for review."""
    import json

    from auditor.reports import validate_result

    result = json.loads(DEMO_RESULT.read_text(encoding="utf-8"))
    validate_result(result, DEMO_RESULT)
    page = Page(browser, _write(tmp_path, result))
    try:
        page.page.set_viewport_size({"width": width, "height": 900})
        page.assert_quiet()
        p = page.page
        first = p.locator(".trait[data-trait-id]").first
        checked = {t["id"] for t in result["traits"] if t["hidden_transfer_checked"]}
        assert checked and first.get_attribute("data-trait-id") in checked
        assert "Hidden transfer checked" in first.inner_text()
        overflow = p.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {width}px"
        boxes = [p.locator("svg.chart").nth(i).bounding_box() for i in range(p.locator("svg.chart").count())]
        assert boxes and all(b["width"] >= 300 and b["height"] >= 60 for b in boxes), boxes
        assert "was picked" in p.locator("#profile").inner_text()
        _screenshot(page, f"report-tiny-demo-{width}.png")
    finally:
        page.close()
