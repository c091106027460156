"""Usage arithmetic and the trace primitives."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from rlmx.trace import JSONLTraceSink, TraceEvent, Tracer, read_events
from rlmx.usage import ModelUsage, RequestUsage, RunUsage


def test_run_usage_rolls_up_per_model_and_depth() -> None:
    usage = RunUsage()
    usage.incr("a", 0, RequestUsage(10, 2, cached_input_tokens=4), Decimal("0.5"))
    usage.incr("b", 1, RequestUsage(5, 1, reasoning_tokens=1), Decimal("0.25"))
    usage.incr("b", 1, RequestUsage(5, 1), None)
    assert usage.requests == 3
    assert (usage.input_tokens, usage.output_tokens) == (20, 4)
    assert usage.cached_input_tokens == 4 and usage.reasoning_tokens == 1
    assert usage.total_tokens == 24
    assert usage.cost_usd is None  # one unpriced request makes the total unknown
    assert usage.by_model["a"].cost_usd == Decimal("0.5")
    assert usage.by_depth[1].requests == 2 and usage.by_depth[1].cost_usd is None
    as_dict = usage.to_dict()
    assert as_dict["by_depth"]["1"]["requests"] == 2 and as_dict["cost_usd"] is None


def test_run_usage_addition_merges_breakdowns() -> None:
    left, right = RunUsage(), RunUsage()
    left.incr("a", 0, RequestUsage(1, 1), Decimal(1))
    right.incr("a", 0, RequestUsage(2, 2), Decimal(2))
    right.incr("b", 1, RequestUsage(3, 3), Decimal(3))
    both = left + right
    assert both.requests == 3 and both.cost_usd == Decimal(6)
    assert both.by_model["a"].input_tokens == 3
    assert both.by_depth[1].output_tokens == 3
    unknown = ModelUsage()
    unknown.add(RequestUsage(1, 1), None)
    known = ModelUsage()
    known.merge(unknown)
    assert known.cost_usd is None and known.total_tokens == 2


def test_jsonl_sink_and_reader_survive_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "t.jsonl"
    sink = JSONLTraceSink(path)
    tracer = Tracer([sink])
    tracer.emit("run_started", run_id="r", parent_id=None, depth=0, cost=Decimal("1.5"), s={1})
    tracer.emit("run_finished", run_id="r", parent_id=None, depth=0, obj=object())
    sink.close()
    sink(TraceEvent("late", "r", None, 0, 9, 0.0))  # after close: ignored
    with path.open("a") as fh:
        fh.write('{"type": "cut off')
    events = read_events(path)
    assert [e["type"] for e in events] == ["run_started", "run_finished"]
    assert events[0]["cost"] == "1.5" and events[0]["s"] == [1]
    assert json.loads(path.read_text().splitlines()[1])["seq"] == 1


def test_tracer_without_sinks_is_free_and_a_broken_sink_is_skipped() -> None:
    Tracer().emit("x", run_id="r", parent_id=None, depth=0)
    calls: list[str] = []

    def broken(event: TraceEvent) -> None:
        calls.append(event.type)
        raise OSError("disk full")

    tracer = Tracer([broken])
    with pytest.warns(RuntimeWarning, match="disabled"):
        tracer.emit("a", run_id="r", parent_id=None, depth=0)
    tracer.emit("b", run_id="r", parent_id=None, depth=0)
    assert calls == ["a"]
