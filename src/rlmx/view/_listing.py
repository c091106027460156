"""``rlmx view DIR``: an index page of every trace in a folder (a benchmark's output, say),
with each run's score, cost and time, linking to one viewer page per trace."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlmx.trace import load_trace
from rlmx.view._model import DEFAULT_MAX_TEXT_CHARS
from rlmx.view._page import asset, render_page, write_trace_page

__all__ = ["TraceSummary", "find_traces", "render_index", "write_index"]

_RESULTS_FILE = "results.jsonl"


@dataclass(slots=True)
class TraceSummary:
    """One row of the index: a trace's root run at a glance, and its benchmark record if any."""

    trace: str
    """The trace file, relative to the folder."""
    page: str | None
    """The viewer page, relative to the index page."""
    query: str | None
    model: str | None
    finished: bool
    answered: bool
    stopped_by: str | None
    answer: str | None
    cost_usd: str | None
    input_tokens: int
    output_tokens: int
    elapsed_s: float | None
    iterations: int
    sub_calls: int
    runs: int
    errors: int
    problems: int
    score: float | None = None
    task: str | None = None
    method: str | None = None
    length: int | None = None
    item_id: str | None = None


def _is_trace(path: Path) -> bool:
    """Whether the file's first line is a trace event (a results file or other JSONL is not)."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(1 << 20)
        event = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(event, dict) and "run_id" in event and "type" in event


def find_traces(folder: str | Path) -> list[Path]:
    """Every trace file (``*.jsonl`` whose first line is an event) under ``folder``, sorted."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*.jsonl") if p.is_file() and _is_trace(p))


def _benchmark_records(folder: Path) -> dict[Path, dict[str, Any]]:
    """Benchmark records (``results.jsonl`` lines naming a ``trace``), by resolved trace path."""
    records: dict[Path, dict[str, Any]] = {}
    for results in folder.rglob(_RESULTS_FILE):
        with results.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                trace = record.get("trace") if isinstance(record, dict) else None
                if isinstance(trace, str) and trace:
                    path = Path(trace)
                    path = path if path.is_absolute() else results.parent / path
                    records[path.resolve()] = record
    return records


def _summary(path: Path, folder: Path, record: dict[str, Any] | None) -> TraceSummary:
    trace = load_trace(path)
    root = trace.root
    runs = list(trace.runs.values())
    score = record.get("score") if record else None
    length = record.get("length") if record else None
    cost = root.cost_usd if root is not None else None
    return TraceSummary(
        trace=path.relative_to(folder).as_posix(),
        page=None,
        query=root.query if root else None,
        model=root.model if root else None,
        finished=trace.finished,
        answered=bool(root and root.answered),
        stopped_by=root.stopped_by if root else None,
        answer=(root.answer or "")[:300] if root else None,
        cost_usd=None if cost is None else str(cost),
        input_tokens=root.input_tokens if root else 0,
        output_tokens=root.output_tokens if root else 0,
        elapsed_s=root.elapsed_s if root else None,
        iterations=len(root.iterations) if root else 0,
        sub_calls=sum(len(r.sub_calls) for r in runs),
        runs=len(runs),
        errors=sum(len(r.errors) for r in runs),
        problems=len(trace.problems) + int(trace.truncated),
        score=float(score) if isinstance(score, int | float) else None,
        task=_text(record, "task"),
        method=_text(record, "method"),
        length=length if isinstance(length, int) else None,
        item_id=_text(record, "item_id"),
    )


def _text(record: dict[str, Any] | None, key: str) -> str | None:
    value = record.get(key) if record else None
    return value if isinstance(value, str) else None


def render_index(title: str, rows: list[TraceSummary]) -> str:
    """The index page for already summarised traces."""
    data = {"title": title, "rows": [asdict(row) for row in rows]}
    return render_page(title, data, asset("index.js"))


def write_index(
    folder: str | Path,
    out_dir: str | Path | None = None,
    *,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> tuple[Path, list[TraceSummary]]:
    """Write a viewer page per trace under ``folder`` and an ``index.html`` listing them.

    Pages go to ``out_dir`` (default ``FOLDER/view``), named after each trace's path.
    Returns the index page and its rows; the output folder itself is never scanned.
    """
    root = Path(folder)
    target = Path(out_dir) if out_dir is not None else root / "view"
    target.mkdir(parents=True, exist_ok=True)
    records = _benchmark_records(root)
    rows: list[TraceSummary] = []
    for path in find_traces(root):
        if target in path.parents:
            continue
        row = _summary(path, root, records.get(path.resolve()))
        page_name = row.trace.removesuffix(".jsonl").replace("/", "__") + ".html"
        write_trace_page(path, target / page_name, max_text_chars=max_text_chars)
        row.page = page_name
        rows.append(row)
    index = target / "index.html"
    index.write_text(render_index(f"rlmx traces · {root.resolve().name}", rows), encoding="utf-8")
    return index, rows
