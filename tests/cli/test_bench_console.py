"""The benchmark's live console: counts and score means; plain lines off a terminal."""

from __future__ import annotations

import io

from rlmx.cli._bench_console import BenchConsole


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def finished(method: str, score: float, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {"method": method, "item_id": f"i-{score}", "score": score}
    base |= {"input_tokens": 100, "output_tokens": 20, "cost_usd": "0.01", "error": None}
    return base | kw


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    console = BenchConsole(stream=out)
    console.started(4, 1)
    console.item_started("rlm:1", object())
    assert "1/4 done, 1 running" in console.status()
    console.item_finished(finished("rlm:1", 1.0))
    console.item_started("rag", object())
    console.item_finished(finished("rag", 0.0, error="ModelAPIError: 503", cost_usd=None))
    console.close()
    text = out.getvalue()
    assert "1 of 4 items already done" in text
    assert "[2/4] rlm:1 i-1.0 score 100.0" in text
    assert "[3/4] rag i-0.0 error: ModelAPIError: 503" in text
    status = console.status()
    assert "3/4 done, 0 running · 1 failed · 240 tokens · cost unknown" in status
    assert "score rag 0.0 · rlm:1 100.0" in status


def test_live_bar_on_a_terminal() -> None:
    out = FakeTTY()
    console = BenchConsole(stream=out)
    console.started(2, 1)
    console.item_started("direct", object())
    console.item_finished(finished("direct", 0.5))
    console.close()
    assert console.done == 2 and "$0.0100" in console.status()
    assert "already done" in out.getvalue()
