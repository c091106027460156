"""``rlmx.trace.load_trace``: real traces of depth-2 runs read back into the run tree, and
truncated, killed and malformed files read as far as they go."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from rlmx import RLM, Limits
from rlmx.models import FunctionModel, Message, ModelSettings, ScriptedModel
from rlmx.result import RLMResult
from rlmx.trace import Run, load_trace


def code(src: str) -> str:
    return f"```repl\n{src}\n```"


def sub_policy(messages: Sequence[Message], _settings: ModelSettings | None) -> str:
    if messages[0].role == "system":  # a child run's root turn: its context is the prompt
        return code("FINAL('child answer ' + context[-1])")
    return "plain answer"


def depth_two_run(trace: Path) -> RLMResult:
    root = ScriptedModel(
        [
            code(
                "kids = rlm_query_batched(['topic-a', 'topic-b'])\n"
                "plain = llm_query('a plain question')\n"
                "print(kids, plain)"
            ),
            code("1 / 0"),
            "FINAL(done)",
        ],
        prices=(1, 2),
    )
    sub = FunctionModel(sub_policy, prices=(1, 2))
    rlm = RLM(root, sub, sandbox="local", max_depth=2, trace=trace, limits=Limits(max_iterations=5))
    return rlm.completion("some context", "the question")


@pytest.fixture
def trace_file(tmp_path: Path) -> tuple[Path, RLMResult]:
    path = tmp_path / "run.jsonl"
    return path, depth_two_run(path)


def test_a_complete_depth_two_trace_becomes_the_run_tree(
    trace_file: tuple[Path, RLMResult],
) -> None:
    path, result = trace_file
    trace = load_trace(path)
    assert trace.finished and not trace.truncated and trace.problems == []
    root = trace.root
    assert isinstance(root, Run)
    assert root.finished and root.answered and root.answer == "done" == result.answer
    assert root.query == "the question" and root.depth == 0
    assert [it.number for it in root.iterations] == [1, 2, 3]
    first, second, third = root.iterations
    assert first.model_call is not None and first.model_call.reply is not None
    assert "rlm_query_batched" in first.model_call.reply
    (cell,) = first.cells
    assert "kids = rlm_query_batched" in cell.code
    assert "child answer a" in cell.stdout and "plain answer" in cell.stdout
    assert [s.kind for s in cell.sub_calls] == ["rlm", "rlm", "llm"]
    kids = [s.child for s in cell.sub_calls[:2]]
    assert all(isinstance(k, Run) for k in kids)
    assert sorted(k.answer or "" for k in kids if k) == ["child answer a", "child answer b"]
    assert {k.parent_id for k in kids if k} == {root.run_id}
    assert sorted(c.run_id for c in root.children) == sorted(k.run_id for k in kids if k)
    plain = cell.sub_calls[2]
    assert plain.answer == "plain answer" and plain.model_call is not None
    assert plain.model_call.depth == 1 and plain.model_call.reply == "plain answer"
    # The second turn's cell raised; the error is kept and listed.
    assert second.cells[0].error is not None and "ZeroDivisionError" in second.cells[0].error
    assert any("ZeroDivisionError" in e for e in root.errors)
    assert third.cells == [] and third.model_call is not None
    # Totals rebuilt from the calls match what the run reported.
    assert root.input_tokens == result.usage.input_tokens
    assert root.output_tokens == result.usage.output_tokens
    assert root.cost_usd == result.cost_usd and root.cost_usd is not None and root.cost_usd > 0
    assert root.usage is not None and root.usage["requests"] == result.usage.requests
    assert len(trace.runs) == 3
    assert sum(len(r.model_calls) for r in trace.runs.values()) == result.usage.requests


def test_a_trace_cut_mid_line_is_read_up_to_the_cut(
    trace_file: tuple[Path, RLMResult], tmp_path: Path
) -> None:
    path, _ = trace_file
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    trace = load_trace(cut)
    assert trace.truncated and not trace.finished
    assert trace.events == 6 and trace.problems == []
    assert trace.root is not None and not trace.root.finished


def test_a_killed_run_without_its_end_is_readable_and_unfinished(
    trace_file: tuple[Path, RLMResult], tmp_path: Path
) -> None:
    path, _ = trace_file
    kept = [
        line for line in path.read_text().splitlines() if json.loads(line)["type"] != "run_finished"
    ]
    killed = tmp_path / "killed.jsonl"
    killed.write_text("\n".join(kept) + "\n")
    trace = load_trace(killed)
    assert not trace.truncated and not trace.finished
    root = trace.root
    assert root is not None and not root.finished and root.answer is None
    assert len(root.iterations) == 3 and len(root.children) == 2


def test_malformed_lines_are_listed_not_raised(
    trace_file: tuple[Path, RLMResult], tmp_path: Path
) -> None:
    path, _ = trace_file
    lines = path.read_text().splitlines()
    bad = [
        "this is not json",
        json.dumps(["a", "list"]),
        json.dumps({"type": "model_request"}),  # no run_id, no depth
        json.dumps({"type": "mystery", "run_id": "x", "depth": 0}),
        json.dumps({"type": "model_response", "run_id": "x", "depth": 0, "request_id": "nope"}),
        json.dumps({"type": "sub_call_finished", "run_id": "x", "depth": 0, "call_id": "nope"}),
    ]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(lines[:3] + bad + lines[3:]) + "\n")
    trace = load_trace(mixed)
    assert len(trace.problems) == 6
    assert "line 4: not JSON" in trace.problems[0]
    assert "not a trace event" in trace.problems[1] and "not a trace event" in trace.problems[2]
    assert "unknown event type 'mystery'" in trace.problems[3]
    root = next(r for r in trace.roots if r.run_id != "x")
    assert root.finished and root.answer == "done"  # everything else still read


def test_an_empty_trace_has_no_runs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    trace = load_trace(empty)
    assert trace.root is None and not trace.finished and trace.events == 0


def test_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "nope.jsonl")


def test_a_refused_sub_call_is_a_sub_call_with_its_reason(tmp_path: Path) -> None:
    sub = FunctionModel(lambda _m, _s: "never")
    sub.context_window = 50
    root = ScriptedModel([code("print(llm_query('x' * 1000))"), "FINAL(ok)"])
    path = tmp_path / "t.jsonl"
    RLM(root, sub, sandbox="local", trace=path).completion("ctx", "q")
    trace = load_trace(path)
    assert trace.root is not None
    (cell,) = trace.root.cells
    (refused,) = cell.sub_calls
    assert refused.refused is not None and "context window of 50 tokens" in refused.refused
    assert refused.done and refused.model_call is None and refused.prompt_chars == 1000


def test_unpriced_calls_make_the_cost_unknown(tmp_path: Path) -> None:
    root = ScriptedModel(["FINAL(ok)"], prices=None)
    path = tmp_path / "t.jsonl"
    with pytest.warns(RuntimeWarning, match="No price known"):
        RLM(root, sandbox="local", trace=path).completion("ctx", "q")
    trace = load_trace(path)
    assert trace.root is not None
    assert trace.root.cost_usd is None and trace.root.own_cost_usd is None
    assert trace.model_calls()[0].cost_usd is None
    assert trace.sub_calls() == [] and trace.cells() == []


def test_costs_add_up_exactly(trace_file: tuple[Path, RLMResult]) -> None:
    path, _ = trace_file
    trace = load_trace(path)
    calls = trace.model_calls()
    assert all(isinstance(c.cost_usd, Decimal) for c in calls)
    assert trace.root is not None
    assert trace.root.cost_usd == sum((c.cost_usd or Decimal(0) for c in calls), Decimal(0))
    own = trace.root.own_cost_usd
    assert own is not None and own < (trace.root.cost_usd or 0)
