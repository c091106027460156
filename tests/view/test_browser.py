"""The viewer in a real headless Chromium (the system browser, driven by Playwright): a
depth-2 trace with a fan-out is explored the way a person would, a 5,000-event trace stays
usable, and a folder's index links to its pages. Screenshots go to ``test-artifacts/``
(or ``$RLMX_TEST_ARTIFACTS``).

``scripts/test`` installs Debian's ``chromium`` when it can; without it these tests skip,
except under ``RLMX_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rlmx.cli import main
from rlmx.view import write_trace_page
from tests.view.traces import CELL_OUTPUT, NEEDLE_ANSWER, bench_record, depth_two_run, large_run

expect: Any = None  # playwright's expect, bound by the browser fixture

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

# Headless, and nothing that phones home: this machine's network is closed, and the page
# must not need it anyway.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("RLMX_TEST_ARTIFACTS") or Path(__file__).parents[2] / "test-artifacts"
)


def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in another thread: Playwright's sync API keeps an event loop running in
    this one, and ``RLM.completion`` refuses to block inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def _missing(reason: str) -> None:
    if os.environ.get("RLMX_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = os.environ.get("RLMX_CHROMIUM") or shutil.which("chromium")
    executable = executable or shutil.which("chromium-browser")
    if not executable:
        _missing("no Chromium on this machine (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import expect as playwright_expect
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    global expect
    expect = playwright_expect
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Session:
    """One page with everything the page asked the network for and every script error."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1300, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None
        )
        self.page.on("request", lambda request: self.requests.append(request.url))

    def open(self, path: Path) -> float:
        started = time.perf_counter()
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready='1']")
        return time.perf_counter() - started

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)


@pytest.fixture
def session(browser: Any) -> Iterator[Session]:
    s = Session(browser)
    yield s
    s.page.close()


def test_exploring_a_depth_two_trace(session: Session, tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    result = off_loop(depth_two_run, trace)
    page_path = write_trace_page(trace)
    session.open(page_path)
    page = session.page

    # the final answer and the total cost are on the first screen
    assert page.locator("h2 + pre.final").first.inner_text() == NEEDLE_ANSWER
    cost_text = page.locator(".totals div", has_text="total cost").locator("b").inner_text()
    assert result.cost_usd is not None
    assert Decimal(cost_text.lstrip("$")) == pytest.approx(result.cost_usd, rel=Decimal("0.001"))
    assert page.locator("#run-0 > summary").inner_text().count("answered") == 1

    # iteration 1: the fan-out cell's code (highlighted) and its output
    page.click("#iter-0-1 > summary")
    cell = page.locator("#iter-0-1 details.cell").first
    assert cell.locator("pre.hl span.nb", has_text="range").is_visible()
    assert CELL_OUTPUT in cell.locator("pre.stdout").inner_text()
    page.click("#iter-0-1 details.subs > summary")
    expect(page.locator("#iter-0-1 details.sub")).to_have_count(12)

    # iteration 2: open the second rlm_query and its child run
    page.click("#iter-0-2 > summary")
    page.click("#iter-0-2 details.subs > summary")
    child_sub = page.locator("#iter-0-2 details.sub", has_text="topic-b")
    child_sub.locator("> summary").click()
    child_run = child_sub.locator("details.run")
    assert "Child run (depth 1)" in child_run.locator("> summary").inner_text()
    child_run.locator("> summary").click()
    assert "child answer b" in child_run.locator("pre.final").inner_text()
    assert "$" in child_run.locator("> summary .stats").inner_text()

    # the failing cell is listed under Errors and highlighted in the tree
    page.click("#errors li")
    failing = page.locator("#iter-0-3 details.cell.failed")
    assert failing.is_visible() and "ZeroDivisionError" in failing.inner_text()

    # search finds a sub-call prompt and reveals it
    page.fill("#q", "summarise part 11")
    page.wait_for_selector("#hit-count")
    # the sub-call's prompt and answer, and its model request's message and reply
    assert page.locator("#hit-count").inner_text() == "4 matches"
    page.locator("#results .hit").first.click()
    hit = page.locator("details.sub[open]", has_text="summarise part 11")
    assert hit.count() == 1 and hit.is_visible()

    # the timeline draws one bar per model call and cell; clicking one reveals it
    assert page.locator("#timeline svg rect").count() == result.usage.requests + 5
    page.click("#iter-0-3 > summary")  # close the failing iteration again
    page.locator("#timeline rect[data-kind='cell']").first.click()
    assert page.locator("#iter-0-1 details.cell").first.is_visible()
    session.screenshot("viewer-depth-two.png")

    assert session.errors == []
    assert session.requests == [page_path.resolve().as_uri()]  # self-contained


def test_a_five_thousand_event_trace_stays_usable(session: Session, tmp_path: Path) -> None:
    trace = tmp_path / "large.jsonl"
    off_loop(large_run, trace, 650, 2)
    events = trace.read_text().count("\n")
    assert events >= 5000
    page_path = write_trace_page(trace)
    load_s = session.open(page_path)
    page = session.page
    page.click("#iter-0-2 > summary")
    page.click("#iter-0-2 details.subs > summary")
    expect(page.locator("#iter-0-2 details.sub")).to_have_count(650)
    page.fill("#q", "item 649 of round 0")
    page.press("#q", "Enter")
    page.locator("#results .hit").first.click()
    assert page.locator("details.sub[open]", has_text="item 649 of round 0").is_visible()
    session.screenshot("viewer-5000-events.png")
    assert session.errors == []
    print(f"{events} events: page of {page_path.stat().st_size:,} bytes ready in {load_s:.2f} s")


def test_a_folder_index_links_to_each_trace(session: Session, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "traces").mkdir(parents=True)
    for name in ("a", "b"):
        off_loop(depth_two_run, folder / "traces" / f"{name}.jsonl")
    records = [bench_record("a", "rlm", 1.0), bench_record("b", "direct", 0.25)]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["view", str(folder)]) == 0
    session.open(folder / "view" / "index.html")
    page = session.page
    rows = page.locator("table.index tbody tr")
    expect(rows).to_have_count(2)
    page.click("th:has-text('score')")  # ascending: the 0.25 first
    assert "25.0" in rows.first.inner_text() and "direct" in rows.first.inner_text()
    page.fill("#filter", "rlm")
    expect(rows).to_have_count(1)
    session.screenshot("viewer-index.png")
    page.click("table.index tbody a")
    page.wait_for_selector("body[data-ready='1']")
    assert NEEDLE_ANSWER in page.locator("pre.final").first.inner_text()
    assert session.errors == []
