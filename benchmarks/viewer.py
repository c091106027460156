"""How the trace viewer scales: traces of 5,000 to 50,000 events written by real runs (local
sandbox, test-double models, wide fan-outs), then rendered and opened in headless Chromium.

Prints a table: events, trace size, page size, Python time to load + render, the browser's
time until the page is ready, the time to open the widest fan-out (every sub-call drawn), and
the time for one search over everything.

    python benchmarks/viewer.py [--events 5000 20000 50000]
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path

from rlmx import RLM, Limits
from rlmx.models import FunctionModel, ScriptedModel
from rlmx.view import render_trace

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


def write_trace(path: Path, events: int) -> int:
    """A run whose cells fan out to ``events / 4`` sub-calls in total (4 events each)."""
    fan_out = 500
    rounds = max(1, math.ceil(events / 4 / fan_out))
    cell = "r = llm_query_batched([f'item {{i}} of round {n}' for i in range({fan_out})])\nlen(r)"
    replies = [f"```repl\n{cell.format(n=n, fan_out=fan_out)}\n```" for n in range(rounds)]
    root = ScriptedModel([*replies, "FINAL(done)"], prices=(1, 2))
    sub = FunctionModel(lambda messages, settings: "ok " + messages[-1].content, prices=(1, 2))
    limits = Limits(max_iterations=rounds + 2, max_concurrency=64)
    RLM(root, sub, sandbox="local", trace=path, limits=limits).completion("ctx", "count")
    return path.read_text().count("\n")


def browser_times(page_path: Path) -> tuple[float, float, float] | None:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(page_path.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        ready = time.perf_counter() - started
        started = time.perf_counter()
        page.click("#iter-0-1 > summary")
        page.click("#iter-0-1 details.subs > summary")
        page.wait_for_function("document.querySelectorAll('#iter-0-1 details.sub').length >= 500")
        fan_out = time.perf_counter() - started
        started = time.perf_counter()
        page.fill("#q", "item 499 of round 0")
        page.press("#q", "Enter")
        page.wait_for_selector("#hit-count")
        search = time.perf_counter() - started
        browser.close()
    return ready, fan_out, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[5000, 20000, 50000])
    args = parser.parse_args()
    print(f"{platform.system()} {platform.machine()}, Python {platform.python_version()}")
    header = "| events | trace | page | load+render (Python) | browser ready | open 500 | search |"
    print(header)
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.events:
            trace = Path(tmp) / f"t{target}.jsonl"
            events = write_trace(trace, target)
            started = time.perf_counter()
            page_text = render_trace(trace)
            render_s = time.perf_counter() - started
            page = trace.with_suffix(".html")
            page.write_text(page_text, encoding="utf-8")
            times = browser_times(page)
            shown = ["n/a"] * 3 if times is None else [f"{t:.2f} s" for t in times]
            print(
                f"| {events:,} | {trace.stat().st_size / 1e6:.1f} MB | "
                f"{page.stat().st_size / 1e6:.1f} MB | {render_s:.2f} s | "
                + " | ".join(shown)
                + " |"
            )


if __name__ == "__main__":
    main()
