"""Turn a loaded :class:`~rlmx.trace.Trace` into the plain JSON the viewer page renders.

Everything the page shows is computed here (totals per node, times relative to the start,
timeline lanes, highlighted code), so the page's script only draws and the numbers are
tested in Python. Runs, model calls, cells and sub-calls are flat lists that refer to each
other by index; the page builds the tree from them lazily.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from rlmx.trace import Cell, ModelCall, Run, SubCall, Trace

__all__ = ["DEFAULT_MAX_TEXT_CHARS", "build_view", "code_style"]

DEFAULT_MAX_TEXT_CHARS = 50_000
"""Longer texts (prompts, outputs, replies) are cut in the page; the trace keeps them whole."""


def code_style() -> str:
    """CSS for the highlighted code's token classes, scoped to ``.hl``."""
    from pygments.formatters import HtmlFormatter

    return str(HtmlFormatter(style="default").get_style_defs(".hl"))  # type: ignore[no-untyped-call]


@functools.cache
def _highlighter() -> Callable[[str], str]:
    # Pygments is imported on first use: `rlmx --help` should not pay for it.
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    lexer, formatter = PythonLexer(), HtmlFormatter(nowrap=True)
    return lambda code: str(highlight(code, lexer, formatter))


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n… [{len(text) - limit:,} more characters in the trace]"


class _Totals:
    """Tokens and cost over a set of model calls; cost is ``None`` once any call is unpriced."""

    def __init__(self, calls: Iterable[ModelCall]) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.calls = 0
        cost: Decimal | None = Decimal(0)
        for call in calls:
            self.calls += 1
            self.input_tokens += call.input_tokens
            self.output_tokens += call.output_tokens
            if not call.done or call.error:
                continue
            cost = None if cost is None or call.cost_usd is None else cost + call.cost_usd
        self.cost = cost

    def to_dict(self, wall_s: float | None) -> dict[str, Any]:
        return {
            "in": self.input_tokens,
            "out": self.output_tokens,
            "cost": None if self.cost is None else str(self.cost),
            "calls": self.calls,
            "wall": None if wall_s is None else round(wall_s, 4),
        }


def _sub_calls_of(sub: SubCall) -> list[ModelCall]:
    """The model calls a sub-call made: its own request, or every request of its child run."""
    if sub.child is not None:
        return [c for run in sub.child.walk() for c in run.model_calls]
    return [sub.model_call] if sub.model_call is not None else []


class _ViewBuilder:
    def __init__(self, trace: Trace, max_text_chars: int) -> None:
        self.trace = trace
        self.limit = max_text_chars
        self.run_index: dict[str, int] = {}
        self.call_index: dict[int, int] = {}  # id(ModelCall) -> index
        self.sub_index: dict[int, int] = {}
        self.runs: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.cells: list[dict[str, Any]] = []
        self.subs: list[dict[str, Any]] = []
        self.t0 = self._first_timestamp()
        self.t_end = self._last_timestamp()

    def _first_timestamp(self) -> float:
        stamps = [r.started_at for r in self.trace.runs.values() if r.started_at is not None]
        stamps += [c.started_at for c in self.trace.model_calls() if c.started_at]
        stamps += [c.at - c.duration_s for c in self.trace.cells()]
        return min(stamps, default=0.0)

    def _last_timestamp(self) -> float:
        stamps = [r.ended_at for r in self.trace.runs.values() if r.ended_at is not None]
        stamps += [c.finished_at or c.started_at for c in self.trace.model_calls()]
        stamps += [c.at for c in self.trace.cells()]
        stamps += [s.finished_at or s.started_at for s in self.trace.sub_calls()]
        return max(stamps, default=self.t0)

    def rel(self, ts: float | None) -> float | None:
        return None if ts is None else round(ts - self.t0, 4)

    def text(self, value: str | None) -> str | None:
        return _clip(value, self.limit)

    def build(self) -> dict[str, Any]:
        ordered: list[Run] = [run for root in self.trace.roots for run in root.walk()]
        for run in ordered:
            self.run_index[run.run_id] = len(self.run_index)
        for run in ordered:
            for call in run.model_calls:
                self.call_index[id(call)] = len(self.call_index)
                self.calls.append(self._call(call))
            for sub in run.sub_calls:
                self.sub_index[id(sub)] = len(self.sub_index)
        for run in ordered:
            for sub in run.sub_calls:
                self.subs.append(self._sub(sub))
        self.runs = [self._run(run) for run in ordered]
        roots = [self.run_index[r.run_id] for r in self.trace.roots]
        return {
            "file": str(self.trace.path.name) if self.trace.path else None,
            "events": self.trace.events,
            "finished": self.trace.finished,
            "truncated": self.trace.truncated,
            "problems": self.trace.problems,
            "duration": round(self.t_end - self.t0, 4),
            "roots": roots,
            "runs": self.runs,
            "calls": self.calls,
            "cells": self.cells,
            "subs": self.subs,
            "timeline": self._timeline(),
            "errors": self._errors(),
        }

    def _call(self, call: ModelCall) -> dict[str, Any]:
        totals = _Totals([call])
        return {
            "id": call.request_id,
            "run": self.run_index[call.run_id],
            "model": call.model,
            "answered_by": call.answered_by,
            "t": self.rel(call.started_at),
            "end": self.rel(call.finished_at),
            "depth": call.depth,
            "iter": call.iteration,
            "messages": [
                {"role": str(m.get("role", "?")), "content": self.text(str(m.get("content", "")))}
                for m in call.messages
            ],
            "total_messages": call.total_messages,
            "reply": self.text(call.reply),
            "error": call.error,
            "finish": call.finish_reason,
            "cached_in": call.cached_input_tokens,
            "reasoning": call.reasoning_tokens,
            "stats": totals.to_dict(call.duration_s),
        }

    def _sub(self, sub: SubCall) -> dict[str, Any]:
        wall = sub.duration_s
        if wall is None and sub.finished_at is not None:
            wall = sub.finished_at - sub.started_at
        return {
            "id": sub.call_id,
            "run": self.run_index[sub.run_id],
            "kind": sub.kind,
            "model": sub.model,
            "prompt": self.text(sub.prompt),
            "prompt_chars": sub.prompt_chars,
            "t": self.rel(sub.started_at),
            "answer": self.text(sub.answer),
            "error": sub.error,
            "refused": sub.refused,
            "done": sub.done,
            "call": self.call_index.get(id(sub.model_call)) if sub.model_call else None,
            "child": self.run_index.get(sub.child.run_id) if sub.child else None,
            "stats": _Totals(_sub_calls_of(sub)).to_dict(wall),
        }

    def _cell(self, cell: Cell) -> int:
        calls = [c for sub in cell.sub_calls for c in _sub_calls_of(sub)]
        self.cells.append(
            {
                "run": self.run_index[cell.run_id],
                "iter": cell.iteration,
                "index": cell.index,
                "code": self.text(cell.code),
                "html": _highlighter()(cell.code),
                "t": self.rel(cell.at - cell.duration_s),
                "stdout": self.text(cell.stdout),
                "stderr": self.text(cell.stderr),
                "error": self.text(cell.error),
                "final": self.text(cell.final),
                "timed_out": cell.timed_out,
                "restarted": cell.restarted,
                "subs": [self.sub_index[id(s)] for s in cell.sub_calls],
                "stats": _Totals(calls).to_dict(cell.duration_s),
            }
        )
        return len(self.cells) - 1

    def _run(self, run: Run) -> dict[str, Any]:
        iterations = []
        for it in run.iterations:
            cells = [self._cell(cell) for cell in it.cells]
            in_cells = {id(s) for cell in it.cells for s in cell.sub_calls}
            loose = [self.sub_index[id(s)] for s in it.sub_calls if id(s) not in in_cells]
            calls = [it.model_call] if it.model_call is not None else []
            calls += [c for sub in it.sub_calls for c in _sub_calls_of(sub)]
            start = it.model_call.started_at if it.model_call is not None else None
            ends = [cell.at for cell in it.cells]
            if it.model_call is not None and it.model_call.finished_at is not None:
                ends.append(it.model_call.finished_at)
            wall = max(ends) - start if start is not None and ends else None
            iterations.append(
                {
                    "n": it.number,
                    "call": self.call_index[id(it.model_call)] if it.model_call else None,
                    "cells": cells,
                    "loose_subs": loose,
                    "stats": _Totals(calls).to_dict(wall),
                }
            )
        wall = run.elapsed_s
        if wall is None and run.started_at is not None:
            wall = self.t_end - run.started_at  # a run that never finished: up to the last event
        parent_sub = None
        if run.parent_id is not None:
            parent = self.trace.runs.get(run.parent_id)
            for sub in parent.sub_calls if parent else []:
                if sub.child_run_id == run.run_id:
                    parent_sub = self.sub_index[id(sub)]
        own = _Totals(run.model_calls)
        return {
            "id": run.run_id,
            "parent": self.run_index.get(run.parent_id) if run.parent_id else None,
            "parent_sub": parent_sub,
            "depth": run.depth,
            "query": self.text(run.query),
            "model": run.model,
            "sub_model": run.sub_model,
            "context": run.context,
            "limits": run.limits,
            "t": self.rel(run.started_at),
            "finished": run.finished,
            "answered": run.answered,
            "answer": self.text(run.answer),
            "stopped_by": run.stopped_by,
            "stop_message": run.stop_message,
            "iterations": iterations,
            "children": [self.run_index[c.run_id] for c in run.children],
            "stats": _Totals(c for r in run.walk() for c in r.model_calls).to_dict(wall),
            "own": own.to_dict(None),
        }

    def _timeline(self) -> list[list[Any]]:
        """Bars ``[kind, index, start, end, lane, depth, failed]``, packed into lanes so bars
        that overlap in time (a fan-out) sit on different lanes."""
        bars: list[tuple[float, float, str, int, int, bool]] = []
        for i, call in enumerate(self.calls):
            start = call["t"] or 0.0
            end = call["end"] if call["end"] is not None else self.t_end - self.t0
            bars.append((start, end, "call", i, call["depth"], call["error"] is not None))
        for i, cell in enumerate(self.cells):
            start = cell["t"] or 0.0
            depth = self.runs[cell["run"]]["depth"] if cell["run"] < len(self.runs) else 0
            end = start + (cell["stats"]["wall"] or 0.0)
            bars.append((start, end, "cell", i, depth, cell["error"] is not None))
        bars.sort(key=lambda bar: (bar[0], bar[1]))
        free: list[tuple[float, int]] = []  # (time the lane frees up, lane)
        lanes = 0
        out: list[list[Any]] = []
        for start, end, kind, index, depth, failed in bars:
            if free and free[0][0] <= start:
                _, lane = heapq.heappop(free)
            else:
                lane = lanes
                lanes += 1
            heapq.heappush(free, (max(end, start + 1e-6), lane))
            out.append([kind, index, round(start, 4), round(end, 4), lane, depth, failed])
        return out

    def _errors(self) -> list[dict[str, Any]]:
        """Everything that went wrong, in time order, with where to find it on the page."""
        found: list[dict[str, Any]] = []
        for i, call in enumerate(self.calls):
            if call["error"]:
                found.append({"kind": "call", "index": i, "t": call["t"], "text": call["error"]})
        for i, cell in enumerate(self.cells):
            if cell["error"] or cell["timed_out"]:
                text = cell["error"] or "cell timed out"
                found.append({"kind": "cell", "index": i, "t": cell["t"], "text": text})
        for i, sub in enumerate(self.subs):
            if sub["error"] or sub["refused"]:
                text = sub["error"] or f"refused: {sub['refused']}"
                found.append({"kind": "sub", "index": i, "t": sub["t"], "text": text})
        for i, run in enumerate(self.runs):
            if not run["finished"]:
                found.append(
                    {"kind": "run", "index": i, "t": run["t"], "text": "the run did not finish"}
                )
        found.sort(key=lambda e: e["t"] if e["t"] is not None else 0.0)
        for error in found:
            error["text"] = _clip(error["text"], 300)
        return found


def build_view(trace: Trace, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> dict[str, Any]:
    """The page's data for ``trace``: JSON-ready, with totals and the timeline computed."""
    return _ViewBuilder(trace, max_text_chars).build()
