"""The progress display: counts from trace events, live on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from rlmx.cli._progress import ProgressSink
from rlmx.trace import TraceEvent


def event(type_: str, depth: int = 0, **data: object) -> TraceEvent:
    return TraceEvent(type_, "r1", None, depth, 0, 0.0, dict(data))


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(sink: ProgressSink) -> None:
    sink(event("model_request", iteration=1, call_id=None))
    sink(event("sub_call_started", call_id="a"))
    sink(event("sub_call_started", call_id="b"))
    sink(event("sub_call_finished", call_id="a"))
    usage = {"input_tokens": 100, "output_tokens": 20}
    sink(event("model_response", usage=usage, cost_usd="0.0010"))
    sink(event("model_response", usage=usage, cost_usd="0.0005"))


def test_counts_and_plain_lines() -> None:
    out = io.StringIO()
    sink = ProgressSink(30, stream=out)
    feed(sink)
    assert "iteration 1/30" in sink.status()
    assert "1 done, 1 in flight" in sink.status()
    assert "240 tokens" in sink.status()
    assert "$0.0015" in sink.status()
    sink(event("run_finished"))
    sink.close()
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("rlmx: ") for line in lines)


def test_unknown_cost_shows_a_question_mark() -> None:
    sink = ProgressSink(5, stream=io.StringIO())
    sink(event("model_response", usage={"input_tokens": 1, "output_tokens": 1}, cost_usd=None))
    assert "· ? ·" in sink.status()


def test_live_mode_on_a_terminal() -> None:
    tty = FakeTTY()
    sink = ProgressSink(30, stream=tty)
    assert sink.live_mode
    feed(sink)
    sink.close()
    sink.close()
    assert "iteration" in tty.getvalue()


def test_plain_mode_can_be_forced() -> None:
    sink = ProgressSink(30, stream=FakeTTY(), force_plain=True)
    assert not sink.live_mode
    sink.close()
