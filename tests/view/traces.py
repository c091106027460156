"""Real traces for the viewer's tests, written by real runs (local sandbox, test doubles)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlmx import RLM, Limits
from rlmx.models import FunctionModel, Message, ModelSettings, ScriptedModel
from rlmx.result import RLMResult

NEEDLE_ANSWER = "The needle is 42"
CELL_OUTPUT = "fan-out of 12 done: plain answer to summarise part 0"


def code(src: str) -> str:
    return f"```repl\n{src}\n```"


def _sub_policy(messages: Sequence[Message], _settings: ModelSettings | None) -> str:
    if messages[0].role == "system":  # a child run's root turn: answer from its context
        return code("FINAL('child answer ' + context[-1])")
    return "plain answer to " + messages[-1].content[:40]


def depth_two_run(trace: Path) -> RLMResult:
    """Root -> a fan-out of 12 ``llm_query`` -> two child runs -> a failing cell -> FINAL."""
    root = ScriptedModel(
        [
            code(
                "parts = llm_query_batched([f'summarise part {i}' for i in range(12)])\n"
                "print(f'fan-out of {len(parts)} done: ' + parts[0])"
            ),
            code("kids = rlm_query_batched(['topic-a', 'topic-b'])\nprint(kids)"),
            code("1 / 0"),
            f"FINAL({NEEDLE_ANSWER})",
        ],
        prices=(1, 2),
    )
    sub = FunctionModel(_sub_policy, prices=(1, 2))
    rlm = RLM(root, sub, sandbox="local", max_depth=2, trace=trace, limits=Limits(max_iterations=6))
    return rlm.completion("some context " * 50, "What is the needle?")


def large_run(trace: Path, fan_out: int = 600, rounds: int = 2) -> RLMResult:
    """A run of about ``4 * fan_out * rounds`` events: wide fan-outs of plain sub-calls."""
    cell = "r = llm_query_batched([f'item {{i}} of round {n}' for i in range({fan_out})])\nlen(r)"
    replies = [code(cell.format(n=n, fan_out=fan_out)) for n in range(rounds)]
    root = ScriptedModel([*replies, "FINAL(done)"], prices=(1, 2))
    sub = FunctionModel(lambda messages, settings: "ok " + messages[-1].content, prices=(1, 2))
    limits = Limits(max_iterations=rounds + 2, max_concurrency=64)
    rlm = RLM(root, sub, sandbox="local", max_depth=1, trace=trace, limits=limits)
    return rlm.completion("context", "count")


def bench_record(name: str, method: str, score: float) -> dict[str, Any]:
    """A benchmark result line naming the trace ``traces/{name}.jsonl``."""
    return {
        "item_id": f"item-{name}",
        "task": "sniah",
        "method": method,
        "score": score,
        "trace": f"traces/{name}.jsonl",
    }
