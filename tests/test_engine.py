"""The RLM loop end to end with test-double models and the local sandbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from rlmx import RLM, ConfigError, LimitExceeded, Limits, ModelAPIError, UserError
from rlmx.models import FunctionModel, Message, ModelSettings, ScriptedModel
from rlmx.trace import TraceEvent, read_events


def code(src: str) -> str:
    return f"```repl\n{src}\n```"


def make(root: ScriptedModel | FunctionModel, sub: Any = None, **kw: Any) -> RLM:
    return RLM(root, sub, sandbox="local", **kw)


def observations(model: ScriptedModel | FunctionModel) -> list[str]:
    """The user messages the root model saw, one per request."""
    return [call.last_user for call in model.calls]


def test_answer_from_code_and_text_final() -> None:
    root = ScriptedModel([code("x = context.count('a')\nx"), "FINAL(3)"])
    result = make(root).completion("banana", "How many a?")
    assert result.answer == "3"
    assert result.iterations == 2
    assert result.stopped_by is None and result.finished
    assert "[cell output]\n3" in observations(root)[1]


def test_final_inside_code_ends_the_run_and_later_blocks_do_not_run() -> None:
    root = ScriptedModel([code("FINAL(len(context))") + "\n" + code("print('never')")])
    result = make(root).completion("abcd", "len?")
    assert result.answer == "4"
    assert result.iterations == 1


def test_final_written_after_code_is_ignored_and_model_is_told() -> None:
    root = ScriptedModel([code("print(len(context))") + "\nFINAL(999)", "FINAL(4)"])
    result = make(root).completion("abcd", "len?")
    assert result.answer == "4"
    assert "was ignored" in observations(root)[1]


def test_final_var_in_text_reads_the_repl_variable() -> None:
    root = ScriptedModel([code("result = context.upper()"), "FINAL_VAR(result)"])
    assert make(root).completion("abc", "upper?").answer == "ABC"


def test_final_var_of_a_missing_variable_is_reported_to_the_model() -> None:
    root = ScriptedModel(["FINAL_VAR(nothing)", "FINAL(ok)"])
    result = make(root).completion("abc", "q")
    assert result.answer == "ok"
    assert "FINAL_VAR(nothing) failed" in observations(root)[1]


def test_reply_without_code_gets_the_expected_format() -> None:
    root = ScriptedModel(["I think the answer is 5.", "FINAL(5)"])
    result = make(root).completion("abc", "q")
    assert result.answer == "5"
    assert "```repl" in observations(root)[1]


def test_errors_in_cells_go_back_to_the_model_and_variables_survive() -> None:
    root = ScriptedModel([code("kept = 41\n1/0"), code("kept + 1"), "FINAL(42)"])
    result = make(root).completion("abc", "q")
    assert result.answer == "42"
    assert "ZeroDivisionError" in observations(root)[1]
    assert "42" in observations(root)[2]


def test_cell_output_is_truncated_with_a_note() -> None:
    root = ScriptedModel([code("print('y' * 50_000)"), "FINAL(done)"])
    make(root, limits=Limits(max_output_chars=1_000)).completion("abc", "q")
    seen = observations(root)[1]
    assert "output truncated" in seen
    assert len(seen) < 3_000


def test_system_prompt_describes_the_context_and_functions() -> None:
    root = ScriptedModel(["FINAL(x)"])
    make(root).completion(["aa", "bbbb"], "q")
    system = root.calls[0].messages[0]
    assert system.role == "system"
    assert "list of 2" in system.content
    assert "llm_query_batched" in system.content
    assert "FINAL(" in system.content
    assert "named `answer`" in system.content  # where partial answers are read from
    assert root.calls[0].messages[1].content.startswith("The query: q")


def test_depth_zero_exposes_no_sub_call_functions() -> None:
    root = ScriptedModel([code("llm_query('hi')"), "FINAL(no)"])
    result = make(root, max_depth=0).completion("abc", "q")
    assert "NameError" in observations(root)[1]
    assert "llm_query" not in root.calls[0].messages[0].content
    assert result.sub_calls == 0


def test_custom_system_prompt_string_and_callable() -> None:
    root = ScriptedModel(["FINAL(a)"])
    make(root, system_prompt="CUSTOM").completion("abc", "q")
    assert root.calls[0].messages[0].content == "CUSTOM"
    root2 = ScriptedModel(["FINAL(a)"])
    make(root2, system_prompt=lambda inputs: f"chars={inputs.context.total_chars}").completion(
        "abcd", "q"
    )
    assert root2.calls[0].messages[0].content == "chars=4"


def test_worked_example_is_optional() -> None:
    root = ScriptedModel(["FINAL(a)"])
    make(root, worked_example=True).completion("abc", "q")
    assert "Example of a good first turn" in root.calls[0].messages[0].content


# ---------------------------------------------------------------- sub-calls


def test_llm_query_batched_is_concurrent_ordered_and_isolates_failures() -> None:
    in_flight = 0
    peak = 0

    async def sub_fn(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        prompt = messages[-1].content
        if prompt == "p3":
            raise ModelAPIError("boom", status=500)
        return prompt.upper()

    root = ScriptedModel(
        [code("out = llm_query_batched([f'p{i}' for i in range(8)])\nprint(out)"), "FINAL(x)"]
    )
    result = make(root, FunctionModel(sub_fn), limits=Limits(max_concurrency=3)).completion(
        "ctx", "q"
    )
    seen = observations(root)[1]
    listed = eval(seen.split("\n")[1])
    assert listed[:3] == ["P0", "P1", "P2"] and listed[4:] == ["P4", "P5", "P6", "P7"]
    assert listed[3].startswith("Error:") and "boom" in listed[3]
    assert peak == 3
    assert result.sub_calls == 8
    assert result.depth_reached == 1


def test_fatal_provider_error_in_a_sub_call_stops_the_run() -> None:
    def sub_fn(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        raise ModelAPIError("bad key", status=401)

    root = ScriptedModel([code("llm_query('x')"), "FINAL(never)"])
    with pytest.raises(ModelAPIError) as info:
        make(root, FunctionModel(sub_fn)).completion("ctx", "q")
    assert info.value.status == 401
    assert info.value.result is not None
    assert info.value.result.sub_calls == 1


def test_unknown_model_name_in_llm_query_is_an_observation() -> None:
    root = ScriptedModel([code("print(llm_query('x', model='nope'))"), "FINAL(a)"])
    make(root, FunctionModel(lambda m, s: "ok")).completion("ctx", "q")
    assert "unknown model 'nope'" in observations(root)[1]


def test_named_extra_model_is_reachable_from_llm_query() -> None:
    big = FunctionModel(lambda m, s: "from-big", name="big")
    root = ScriptedModel([code("print(llm_query('x', model='big'))"), "FINAL(a)"])
    result = make(root, FunctionModel(lambda m, s: "from-sub"), models={"big": big}).completion(
        "ctx", "q"
    )
    assert "from-big" in observations(root)[1]
    assert "test:big" in result.usage.by_model


def test_depth_two_spawns_a_child_rlm_with_its_own_repl() -> None:
    def sub_fn(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        # The child's own loop: look at its context, then answer from it.
        if messages[0].role == "system":
            if len(messages) == 2:
                return code("secret = context.split(':')[1]\nsecret")
            return "FINAL_VAR(secret)"
        return "plain"

    root = ScriptedModel(
        [code("part = rlm_query('find the code', context='code:XYZ')\nprint(part)"), "FINAL(XYZ)"]
    )
    result = make(root, FunctionModel(sub_fn), max_depth=2).completion("big ctx", "q")
    assert "XYZ" in observations(root)[1]
    assert result.depth_reached == 1
    assert result.sub_calls == 1
    assert result.usage.by_depth[1].requests == 2


def test_rlm_query_at_the_depth_cap_is_a_plain_model_call() -> None:
    sub = FunctionModel(lambda m, s: f"plain:{len(m)}:{m[-1].content[:5]}")
    root = ScriptedModel([code("print(rlm_query('hello', context='ctx'))"), "FINAL(a)"])
    make(root, sub, max_depth=1).completion("c", "q")
    assert "plain:1:hello" in observations(root)[1]


def test_child_runs_of_a_batch_share_the_budget_and_roll_up_usage() -> None:
    def sub_fn(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        if messages[0].role == "system":
            return "FINAL(child-done)" if len(messages) == 2 else "FINAL(late)"
        return "plain"

    root = ScriptedModel(
        [code("print(rlm_query_batched(['a', 'b', 'c'], contexts=['1', '2', '3']))"), "FINAL(x)"]
    )
    sub = FunctionModel(sub_fn, prices=(1_000_000, 0))
    result = make(root, sub, max_depth=2).completion("c", "q")
    assert "['child-done', 'child-done', 'child-done']" in observations(root)[1]
    child_usage = result.usage.by_model["test:function"]
    assert child_usage.requests == 3
    # Price 1 USD per input token: the cost is exactly the children's input tokens.
    assert result.cost_usd == Decimal(child_usage.input_tokens)


# ---------------------------------------------------------------- limits


def test_max_iterations_asks_once_more_for_the_final_answer() -> None:
    root = ScriptedModel([code("1"), code("2"), "FINAL(last word)"])
    result = make(root, limits=Limits(max_iterations=2)).completion("c", "q")
    assert result.answer == "last word"
    assert result.stopped_by == "max_iterations"
    assert "Give your final answer now" in root.calls[2].last_user
    assert result.iterations == 2


def test_max_iterations_without_final_keeps_the_partial_answer_variable() -> None:
    root = ScriptedModel([code("answer = 'partial result'"), "still thinking"])
    result = make(root, limits=Limits(max_iterations=1)).completion("c", "q")
    assert result.answer == "partial result"
    assert result.stopped_by == "max_iterations"


def test_token_limit_stops_with_partial_answer_and_strict_raises() -> None:
    replies = [code("answer = 'so far'"), code("x = 1"), code("y = 2"), "FINAL(z)"]
    root = ScriptedModel(replies)
    result = make(root, limits=Limits(max_tokens=10)).completion("c" * 100, "q")
    assert result.stopped_by == "max_tokens"
    assert result.answer == "so far"
    assert "max_tokens=10 reached" in (result.stop_message or "")

    with pytest.raises(LimitExceeded) as info:
        make(ScriptedModel(replies), limits=Limits(max_tokens=10), strict=True).completion(
            "c" * 100, "q"
        )
    assert info.value.limit == "max_tokens"
    assert info.value.result is not None and info.value.result.answer == "so far"


def test_cost_limit_uses_the_shared_total_of_the_tree() -> None:
    sub = FunctionModel(lambda m, s: "ok", prices=(1_000_000, 0))  # $1 per input token
    root = ScriptedModel([code("llm_query_batched(['a'] * 5)"), code("x=1"), "FINAL(z)"])
    result = make(root, sub, limits=Limits(max_cost_usd=2)).completion("c", "q")
    assert result.stopped_by == "max_cost_usd"
    assert result.cost_usd is not None and result.cost_usd >= 2
    assert result.iterations == 1


def test_sub_calls_refused_past_max_sub_calls() -> None:
    root = ScriptedModel([code("print(llm_query_batched(['a', 'b', 'c']))"), "FINAL(z)"])
    result = make(
        root, FunctionModel(lambda m, s: "ok"), limits=Limits(max_sub_calls=2)
    ).completion("c", "q")
    seen = observations(root)[1]
    assert seen.count("'ok'") == 2 and "max_sub_calls=2 reached" in seen
    assert result.sub_calls == 2
    assert result.stopped_by is None


def test_timeout_returns_partial_answer_and_stopped_by() -> None:
    root = ScriptedModel(
        [code("answer = 'early'"), code("import time\ntime.sleep(0.2)"), "FINAL(late)"],
        delay_s=0.3,
    )
    result = make(root, limits=Limits(timeout_s=0.5)).completion("c", "q")
    assert result.stopped_by == "timeout_s"
    assert result.answer == "early"


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_iterations"):
        Limits(max_iterations=0)
    with pytest.raises(ConfigError, match="max_cost_usd"):
        Limits(max_cost_usd=-1)
    with pytest.raises(ConfigError, match="timeout_s"):
        Limits(timeout_s=0)
    with pytest.raises(ConfigError, match="max_depth"):
        RLM(ScriptedModel([]), sandbox="local", max_depth=-1)
    with pytest.raises(ConfigError, match="Unknown option"):
        make(ScriptedModel([])).completion("c", "q", max_iteration=3)


def test_per_call_overrides() -> None:
    root = ScriptedModel([code("1"), "FINAL(a)"])
    result = make(root).completion("c", "q", max_iterations=1)
    assert result.stopped_by == "max_iterations"


# ---------------------------------------------------------------- output types


class Answer(BaseModel):
    name: str
    count: int


def test_output_type_validates_and_retries_on_bad_form() -> None:
    root = ScriptedModel(["FINAL(not json)", code("FINAL({'name': 'a', 'count': 2})")])
    result = make(root, output_type=Answer).completion("c", "q")
    assert result.output == Answer(name="a", count=2)
    assert json.loads(result.answer) == {"name": "a", "count": 2}
    assert "required form" in observations(root)[1]
    assert "JSON schema" in root.calls[0].messages[0].content


def test_output_type_int() -> None:
    result = make(ScriptedModel(["FINAL(42)"]), output_type=int).completion("c", "q")
    assert result.output == 42


# ---------------------------------------------------------------- facade


async def test_sync_completion_inside_a_loop_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="acompletion"):
        make(ScriptedModel(["FINAL(a)"])).completion("c", "q")


def test_bad_context_type_is_a_user_error() -> None:
    with pytest.raises(UserError, match="context must be"):
        make(ScriptedModel(["FINAL(a)"])).completion(object(), "q")


def test_default_sandbox_runs_model_code_in_a_confined_process() -> None:
    import os

    root = ScriptedModel([code("import os\npid = os.getpid()\nprint(pid)"), "FINAL_VAR(pid)"])
    rlm = RLM(root, max_depth=0)
    assert rlm.sandbox == "isolated"
    result = rlm.completion("ctx", "q")
    assert result.answer.isdigit()
    # bwrap's pid namespace or a plain child: either way, not this process.
    assert int(result.answer) != os.getpid()
    isolation = result.metadata["isolation"]
    assert isolation["sandbox"] == "isolated"
    assert "rlimits" in isolation["layers"]


def test_require_isolation_needs_the_isolated_sandbox() -> None:
    with pytest.raises(ConfigError, match="needs sandbox='isolated'"):
        RLM(ScriptedModel([]), sandbox="local", require_isolation=True)
    with pytest.raises(ConfigError, match="not to a factory"):
        RLM(ScriptedModel([]), sandbox=lambda config: None, sandbox_options={"x": 1})  # type: ignore[arg-type,return-value]


def test_unknown_price_gives_none_cost_and_one_warning() -> None:
    sub = FunctionModel(lambda m, s: "ok", prices=None)
    root = ScriptedModel([code("llm_query_batched(['a', 'b'])"), "FINAL(z)"])
    with pytest.warns(RuntimeWarning, match="No price known") as record:
        result = make(root, sub).completion("c", "q")
    assert result.cost_usd is None
    assert len([w for w in record if "No price known" in str(w.message)]) == 1


# ---------------------------------------------------------------- trace


def test_trace_events_form_a_tree_and_grow_linearly(tmp_path: Path) -> None:
    def sub_fn(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        if messages[0].role == "system":
            return "FINAL(child)" if len(messages) == 2 else "FINAL(x)"
        return "plain"

    replies = [code(f"v{i} = llm_query('x{i}')") for i in range(6)]
    replies.insert(1, code("print(rlm_query('sub', context='ctx'))"))
    replies.append("FINAL(done)")
    events: list[TraceEvent] = []
    path = tmp_path / "t.jsonl"
    result = make(
        ScriptedModel(replies), FunctionModel(sub_fn), max_depth=2, trace=[path, events.append]
    ).completion("c" * 1000, "q")
    assert result.trace_path == str(path)
    on_disk = read_events(path)
    assert len(on_disk) == len(events)
    types = [e["type"] for e in on_disk]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    runs = {e["run_id"]: e for e in on_disk if e["type"] == "run_started"}
    assert len(runs) == 2
    root_id = result.run_id
    child = next(r for r in runs.values() if r["parent_id"] == root_id)
    assert child["depth"] == 1
    started = {e["call_id"] for e in on_disk if e["type"] == "sub_call_started"}
    finished = {e["call_id"] for e in on_disk if e["type"] == "sub_call_finished"}
    assert started == finished and len(started) == 7
    # Every model response's usage adds up to the result's totals.
    responses = [e for e in on_disk if e["type"] == "model_response"]
    assert sum(e["usage"]["input_tokens"] for e in responses) == result.usage.input_tokens
    assert len(responses) == result.usage.requests
    # Root requests carry only new messages: no request repeats the system prompt.
    root_requests = [
        e
        for e in on_disk
        if e["type"] == "model_request" and e["run_id"] == root_id and e["call_id"] is None
    ]
    assert sum(1 for e in root_requests for m in e["messages"] if m["role"] == "system") == 1
    assert all(len(e["messages"]) <= 2 for e in root_requests)
    seqs = [e["seq"] for e in on_disk]
    assert seqs == sorted(seqs)


def test_a_failing_sink_does_not_break_the_run() -> None:
    def bad_sink(event: TraceEvent) -> None:
        raise ValueError("sink down")

    with pytest.warns(RuntimeWarning, match="sink"):
        result = make(ScriptedModel(["FINAL(a)"]), trace=bad_sink).completion("c", "q")
    assert result.answer == "a"


def test_trace_to_a_directory_writes_one_file_per_run(tmp_path: Path) -> None:
    rlm = make(ScriptedModel(["FINAL(a)", "FINAL(b)"]), trace=tmp_path)
    first = rlm.completion("c", "q").trace_path
    second = rlm.completion("c", "q").trace_path
    assert first != second
    assert first is not None and Path(first).parent == tmp_path


# ---------------------------------------------------------------- concurrency


async def test_twenty_concurrent_runs_give_unmixed_answers() -> None:
    async def root_fn(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        turn = sum(1 for m in messages if m.role == "assistant")
        await asyncio.sleep(0.01)
        if turn == 0:
            return code(
                "import time\n"
                "for _ in range(20):\n    print(context[:6]); time.sleep(0.001)\n"
                "mine = context.split('=')[1]\n"
                "echo = llm_query('say ' + mine)"
            )
        if turn == 1:
            last = messages[-1].content
            tags = {line for line in last.splitlines() if line.startswith("run")}
            assert len(tags) == 1, f"output from other runs leaked in: {tags}"
            return code("FINAL(echo)")
        raise AssertionError("too many turns")

    async def sub_fn(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        await asyncio.sleep(0.01)
        return messages[-1].content.removeprefix("say ")

    rlm = RLM(FunctionModel(root_fn), FunctionModel(sub_fn), sandbox="local")
    contexts = [f"run{i:02d}=value-{i}" for i in range(20)]
    results = await asyncio.gather(*(rlm.acompletion(c, "which value?") for c in contexts))
    assert [r.answer for r in results] == [f"value-{i}" for i in range(20)]
    assert all(r.stopped_by is None and r.sub_calls == 1 for r in results)


# -- sub-calls too big for the sub-model's window ---------------------------------------------


def test_a_sub_call_larger_than_the_window_is_refused_before_sending(tmp_path: Path) -> None:
    sub = FunctionModel(lambda _m, _s: "never")
    sub.context_window = 100
    root = ScriptedModel([code("print(llm_query('x' * 2000))"), "FINAL(split)"])
    trace = tmp_path / "t.jsonl"
    result = make(root, sub, trace=trace).completion("ctx", "q")
    assert result.answer == "split"
    assert sub.calls == []
    seen = observations(root)[1]
    assert "context window of 100 tokens" in seen
    assert "it was not sent" in seen and "llm_query_batched" in seen
    assert result.sub_calls == 0  # a refused call spends no sub-call budget
    refused = [e for e in read_events(trace) if e["type"] == "sub_call_refused"]
    assert len(refused) == 1 and refused[0]["prompt_chars"] == 2000


def test_a_sub_call_that_fits_is_sent() -> None:
    sub = FunctionModel(lambda _m, _s: "fine")
    sub.context_window = 10_000
    root = ScriptedModel([code("print(llm_query('x' * 2000))"), "FINAL(ok)"])
    make(root, sub).completion("ctx", "q")
    assert len(sub.calls) == 1
    assert "fine" in observations(root)[1]


def test_a_context_length_error_from_the_provider_goes_back_to_the_model() -> None:
    from rlmx.exceptions import ContextLengthError

    def too_long(_m: Sequence[Message], _s: ModelSettings | None) -> str:
        raise ContextLengthError("sub:m refused the prompt as too long", model="sub:m")

    sub = FunctionModel(too_long)
    root = ScriptedModel([code("print(llm_query('big'))"), "FINAL(recovered)"])
    result = make(root, sub).completion("ctx", "q")
    assert result.answer == "recovered"  # not fatal, unlike other 400s
    seen = observations(root)[1]
    assert "refused the prompt as too long" in seen and "Split the input" in seen


class SlowStartSandbox:
    """A local sandbox whose start takes ``delay_s`` and may then fail, to watch the overlap."""

    def __init__(self, delay_s: float, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.loading = False
        self.closed = False

    def __call__(self, config: Any) -> Any:
        from rlmx.exceptions import SandboxError
        from rlmx.sandbox.local import LocalSandbox

        outer = self

        class Slow(LocalSandbox):
            async def load_context(self, value: Any) -> None:
                outer.loading = True
                await asyncio.sleep(outer.delay_s)
                outer.loading = False
                if outer.fail:
                    raise SandboxError("the worker could not start")
                await super().load_context(value)

            async def aclose(self) -> None:
                outer.closed = True
                await super().aclose()

        return Slow(config)


def test_the_first_model_request_overlaps_the_sandbox_start() -> None:
    sandbox = SlowStartSandbox(0.3)
    seen: list[bool] = []

    async def root(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        seen.append(sandbox.loading)
        await asyncio.sleep(0.05)
        return code("FINAL(str(len(context)))") if len(seen) == 1 else "FINAL(x)"

    result = RLM(FunctionModel(root), sandbox=sandbox).completion("abcd", "q")
    assert result.answer == "4" and seen == [True]  # asked while the sandbox was starting
    assert sandbox.closed


@pytest.mark.parametrize("first_reply", [code("print(1)"), "FINAL(done)"])
def test_a_sandbox_that_fails_to_start_still_fails_the_run(first_reply: str) -> None:
    from rlmx.exceptions import SandboxError

    sandbox = SlowStartSandbox(0.05, fail=True)
    finished: list[str] = []

    async def slow_root(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        await asyncio.sleep(2)  # longer than the start: the request is cancelled
        finished.append("root")
        return first_reply

    with pytest.raises(SandboxError, match="could not start"):
        RLM(FunctionModel(slow_root), sandbox=sandbox).completion("ctx", "q")
    assert finished == [] and sandbox.closed

    def quick_root(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        return first_reply  # answered before the start failed: the error is still raised

    sandbox = SlowStartSandbox(0.05, fail=True)
    with pytest.raises(SandboxError, match="could not start"):
        RLM(FunctionModel(quick_root), sandbox=sandbox).completion("ctx", "q")
