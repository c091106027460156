"""The viewer's data and page: numbers computed in Python match the run, the page is
self-contained, and unfinished or malformed traces still render."""

from __future__ import annotations

import itertools
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rlmx.trace import load_trace
from rlmx.view import build_view, render_page, render_trace, write_trace_page
from tests.view.traces import CELL_OUTPUT, NEEDLE_ANSWER, depth_two_run, large_run


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    depth_two_run(path)
    return path


def page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="rlmx-data">(.*?)</script>', page, re.S)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_view_numbers_match_the_run(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    result = depth_two_run(path)
    view = build_view(load_trace(path))
    root = view["runs"][view["roots"][0]]
    assert root["answer"] == NEEDLE_ANSWER and root["answered"] and root["finished"]
    assert Decimal(root["stats"]["cost"]) == result.cost_usd
    assert root["stats"]["in"] == result.usage.input_tokens
    assert root["stats"]["out"] == result.usage.output_tokens
    assert root["stats"]["calls"] == result.usage.requests == len(view["calls"])
    assert len(view["runs"]) == 3 and [view["runs"][c]["depth"] for c in root["children"]] == [1, 1]
    assert len(view["subs"]) == 14 and len(view["cells"]) == 5  # 3 root cells + 1 per child
    # per-iteration totals add up to the tree's (every call belongs to exactly one iteration)
    iterations = [it for run in view["runs"] if run["depth"] == 0 for it in run["iterations"]]
    assert sum(it["stats"]["calls"] for it in iterations) == len(view["calls"])
    assert sum(Decimal(it["stats"]["cost"]) for it in iterations) == result.cost_usd
    fan_out = view["cells"][iterations[0]["cells"][0]]
    assert CELL_OUTPUT in fan_out["stdout"] and len(fan_out["subs"]) == 12
    assert fan_out["stats"]["calls"] == 12
    assert '<span class="nb">range</span>' in fan_out["html"]  # highlighted
    child_subs = [view["subs"][s] for s in view["cells"][iterations[1]["cells"][0]]["subs"]]
    assert [view["runs"][s["child"]]["answer"] for s in child_subs] == [
        "child answer a",
        "child answer b",
    ]
    assert all(view["runs"][s["child"]]["parent_sub"] == view["subs"].index(s) for s in child_subs)


def test_errors_are_listed_where_they_happened(trace_path: Path) -> None:
    view = build_view(load_trace(trace_path))
    assert [e["kind"] for e in view["errors"]] == ["cell"]
    cell = view["cells"][view["errors"][0]["index"]]
    assert "ZeroDivisionError" in cell["error"] and cell["iter"] == 3


def test_timeline_lanes_never_overlap(tmp_path: Path) -> None:
    path = tmp_path / "large.jsonl"
    large_run(path, fan_out=80, rounds=1)
    view = build_view(load_trace(path))
    bars = view["timeline"]
    assert len(bars) == len(view["calls"]) + len(view["cells"])
    by_lane: dict[int, list[tuple[float, float]]] = {}
    for _kind, _index, start, end, lane, _depth, _failed in bars:
        assert end >= start
        by_lane.setdefault(lane, []).append((start, end))
    for spans in by_lane.values():
        spans.sort()
        for (_s1, e1), (s2, _e2) in itertools.pairwise(spans):
            assert s2 >= e1 - 1e-4  # rounding to 0.1 ms
    assert len(by_lane) > 1  # the fan-out ran concurrently


def test_the_page_is_self_contained(trace_path: Path) -> None:
    page = render_trace(trace_path)
    assert "default-src 'none'" in page  # the browser refuses any request the page might make
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    data = page_data(page)
    assert data["runs"][0]["answer"] == NEEDLE_ANSWER
    assert not re.search(r"\{\{[A-Z]+\}\}", page)  # every placeholder filled


def test_data_cannot_break_out_of_its_script_element(tmp_path: Path) -> None:
    nasty = "</script><script>alert(1)</script><!-- {{SCRIPT}} & more"
    page = render_page("t", {"text": nasty}, "/* script */")
    assert "</script><script>alert" not in page
    assert page.count("/* script */") == 1  # a placeholder inside the data is not expanded
    assert page_data(page)["text"] == nasty


def test_long_texts_are_cut_in_the_page_but_not_in_the_trace(trace_path: Path) -> None:
    view = build_view(load_trace(trace_path), max_text_chars=100)
    first = view["calls"][0]["messages"][0]["content"]
    assert len(first) < 200 and "more characters in the trace" in first


def test_an_unfinished_trace_renders_and_says_so(trace_path: Path, tmp_path: Path) -> None:
    lines = trace_path.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "killed.jsonl"
    cut.write_bytes(b"".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:25])
    trace = load_trace(cut)
    assert trace.truncated and not trace.finished
    data = page_data(render_trace(trace))
    assert data["finished"] is False and data["truncated"] is True
    assert any(e["kind"] == "run" and "did not finish" in e["text"] for e in data["errors"])


def test_a_trace_with_bad_lines_still_renders(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    events = [
        {"type": "run_started", "run_id": "r", "depth": 0, "ts": 1.0, "query": "q"},
        "not json at all",
        {"type": "mystery", "run_id": "r", "depth": 0},
        {"type": "run_finished", "run_id": "r", "depth": 0, "ts": 2.0, "answer": "a"},
    ]
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in events) + "\n")
    data = page_data(render_trace(path))
    assert len(data["problems"]) == 2 and data["runs"][0]["answer"] == "a"
    assert data["timeline"] == [] and data["duration"] == 1.0


def test_write_trace_page_defaults_beside_the_trace(trace_path: Path) -> None:
    page = write_trace_page(trace_path)
    assert page == trace_path.with_suffix(".html") and page.read_text().startswith("<!DOCTYPE")


def test_highlighted_code_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    event = {"type": "cell_executed", "run_id": "r", "depth": 0, "ts": 1.0, "iteration": 1}
    event |= {"index": 0, "code": "print('</pre><img src=x onerror=alert(1)>')"}
    path.write_text(json.dumps(event) + "\n")
    cell = build_view(load_trace(path))["cells"][0]
    assert "<img" not in cell["html"] and "&lt;img" in cell["html"]
