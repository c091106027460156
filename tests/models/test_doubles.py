"""The public test doubles: ScriptedModel and FunctionModel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal

import pytest

from rlmx.exceptions import ModelAPIError, ModelError, ScriptExhausted
from rlmx.models import (
    FunctionModel,
    Message,
    ModelCall,
    ModelResponse,
    ModelSettings,
    ScriptedModel,
    estimate_tokens,
)
from rlmx.usage import RequestUsage

SYSTEM = Message("system", "You are terse.")  # 14 characters: 4 tokens
USER = Message("user", "hello")  # 5 characters: 2 tokens


def test_estimate_tokens_is_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 400) == 100


def test_message_to_dict() -> None:
    assert USER.to_dict() == {"role": "user", "content": "hello"}


# -- ScriptedModel --------------------------------------------------------------------------


async def test_scripted_model_replies_in_order() -> None:
    model = ScriptedModel(["one", "two", "three"])
    assert model.remaining == 3
    replies = [(await model.request([USER])).text for _ in range(3)]
    assert replies == ["one", "two", "three"]
    assert model.remaining == 0


async def test_scripted_model_raises_a_scripted_exception_and_then_continues() -> None:
    boom = ModelAPIError("rate limited", status=429)
    model = ScriptedModel(["first", boom, "after"])
    assert (await model.request([USER])).text == "first"
    with pytest.raises(ModelAPIError) as info:
        await model.request([USER])
    assert info.value is boom
    assert (await model.request([USER])).text == "after"


async def test_scripted_model_can_raise_any_exception() -> None:
    model = ScriptedModel([ValueError("not a model error")])
    with pytest.raises(ValueError, match="not a model error"):
        await model.request([USER])


async def test_scripted_model_raises_script_exhausted_after_the_script() -> None:
    model = ScriptedModel(["a", "b"], name="root")
    await model.request([USER])
    await model.request([USER])
    with pytest.raises(ScriptExhausted) as info:
        await model.request([USER])
    err = info.value
    assert isinstance(err, ModelError)
    assert err.model == "test:root"
    assert "reply #3" in str(err)
    assert "only 2 were scripted" in str(err)
    # It stays exhausted.
    with pytest.raises(ScriptExhausted, match="reply #3"):
        await model.request([USER])


async def test_an_empty_script_is_exhausted_at_once() -> None:
    with pytest.raises(ScriptExhausted, match="only 0 were scripted"):
        await ScriptedModel([]).request([USER])


async def test_scripted_model_records_every_call() -> None:
    model = ScriptedModel(["a", "b"])
    settings = ModelSettings(temperature=0.0)
    await model.request([SYSTEM, USER])
    await model.request(
        [SYSTEM, USER, Message("assistant", "a"), Message("user", "again")], settings
    )
    assert len(model.calls) == 2
    first, second = model.calls
    assert isinstance(first, ModelCall)
    assert first.messages == (SYSTEM, USER)
    assert first.settings is None
    assert first.last_user == "hello"
    assert second.messages[-1] == Message("user", "again")
    assert second.settings == settings
    assert second.last_user == "again"


async def test_calls_are_recorded_even_when_the_script_is_exhausted() -> None:
    model = ScriptedModel([])
    with pytest.raises(ScriptExhausted):
        await model.request([USER])
    assert len(model.calls) == 1


def test_last_user_is_empty_without_a_user_message() -> None:
    assert ModelCall((SYSTEM,), None).last_user == ""


async def test_scripted_model_keeps_a_copy_of_the_messages() -> None:
    model = ScriptedModel(["a"])
    messages = [USER]
    await model.request(messages)
    messages.append(Message("user", "later"))
    assert model.calls[0].messages == (USER,)


async def test_scripted_model_delay() -> None:
    model = ScriptedModel(["a"], delay_s=0.05)
    assert model.delay_s == 0.05
    start = time.monotonic()
    await model.request([USER])
    assert time.monotonic() - start >= 0.045


async def test_concurrent_requests_get_distinct_replies_and_delay_in_parallel() -> None:
    model = ScriptedModel(["a", "b", "c"], delay_s=0.2)
    start = time.monotonic()
    replies = await asyncio.gather(*(model.request([USER]) for _ in range(3)))
    elapsed = time.monotonic() - start
    assert [r.text for r in replies] == ["a", "b", "c"]
    assert elapsed < 0.5  # three delays overlapped rather than adding up to 0.6 s


async def test_a_scripted_model_response_is_returned_as_it_is() -> None:
    scripted = ModelResponse(
        text="exact",
        usage=RequestUsage(input_tokens=123, output_tokens=45, cached_input_tokens=6),
        model_name="gpt-4o-mini-2024-07-18",
        finish_reason="length",
    )
    model = ScriptedModel([scripted])
    assert await model.request([USER]) is scripted


async def test_usage_estimates_are_deterministic() -> None:
    model = ScriptedModel(["FINAL(42)", "FINAL(42)", ""])
    first = await model.request([SYSTEM, USER])
    second = await model.request([SYSTEM, USER])
    empty = await model.request([USER])
    # (4 + 4) + (2 + 4) input tokens; "FINAL(42)" is 9 characters, 3 tokens.
    assert first.usage == RequestUsage(input_tokens=14, output_tokens=3)
    assert second.usage == first.usage
    assert empty.usage == RequestUsage(input_tokens=6, output_tokens=1)
    assert first.usage.total_tokens == 17
    assert first.model_name == "scripted"
    assert first.finish_reason is None


def test_replies_may_be_any_iterable() -> None:
    model = ScriptedModel(iter(["a", "b"]))
    assert model.remaining == 2


# -- FunctionModel --------------------------------------------------------------------------


async def test_function_model_with_a_sync_function() -> None:
    def reply(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        return f"{len(messages)} messages, last: {messages[-1].content}"

    model = FunctionModel(reply)
    response = await model.request([SYSTEM, USER])
    assert response.text == "2 messages, last: hello"
    assert response.usage == RequestUsage(
        input_tokens=14, output_tokens=estimate_tokens(response.text)
    )
    assert response.model_name == "function"


async def test_function_model_with_an_async_function() -> None:
    async def reply(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        await asyncio.sleep(0)
        return messages[-1].content.upper()

    model = FunctionModel(reply)
    assert (await model.request([USER])).text == "HELLO"


async def test_function_model_passes_the_settings() -> None:
    seen: list[ModelSettings | None] = []

    def reply(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        seen.append(settings)
        return "ok"

    model = FunctionModel(reply)
    settings = ModelSettings(seed=7)
    await model.request([USER], settings)
    await model.request([USER])
    assert seen == [settings, None]
    assert [call.settings for call in model.calls] == [settings, None]
    assert model.calls[0].last_user == "hello"


@pytest.mark.parametrize("is_async", [False, True])
async def test_function_model_returning_a_model_response(is_async: bool) -> None:
    response = ModelResponse(text="t", usage=RequestUsage(input_tokens=9), model_name="m")

    def sync_reply(messages: Sequence[Message], settings: ModelSettings | None) -> ModelResponse:
        return response

    async def async_reply(
        messages: Sequence[Message], settings: ModelSettings | None
    ) -> ModelResponse:
        return response

    model = FunctionModel(async_reply if is_async else sync_reply)
    assert await model.request([USER]) is response


async def test_function_model_exceptions_propagate() -> None:
    def reply(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        raise ModelAPIError("down", status=503)

    model = FunctionModel(reply)
    with pytest.raises(ModelAPIError, match="down"):
        await model.request([USER])
    assert len(model.calls) == 1


# -- prices and names -----------------------------------------------------------------------

USAGE = RequestUsage(input_tokens=1_000, output_tokens=500)


@pytest.mark.parametrize(
    "model",
    [ScriptedModel([]), FunctionModel(lambda messages, settings: "")],
    ids=["scripted", "function"],
)
def test_default_prices_cost_nothing(model: ScriptedModel | FunctionModel) -> None:
    cost = model.cost_of(USAGE)
    assert isinstance(cost, Decimal)
    assert cost == Decimal(0)


def test_prices_give_an_exact_cost() -> None:
    model = ScriptedModel([], prices=(1, 2))
    # 1,000 input tokens at $1/M plus 500 output tokens at $2/M.
    assert model.cost_of(USAGE) == Decimal("0.002")
    assert model.cost_of(USAGE, "gpt-4o") == Decimal("0.002")  # response model is ignored


def test_string_and_float_prices_are_exact() -> None:
    usage = RequestUsage(input_tokens=3, output_tokens=7)
    by_string = FunctionModel(lambda m, s: "", prices=("0.1", "0.3"))
    by_float = FunctionModel(lambda m, s: "", prices=(0.1, 0.3))
    expected = (3 * Decimal("0.1") + 7 * Decimal("0.3")) / 1_000_000
    assert by_string.cost_of(usage) == expected
    assert by_float.cost_of(usage) == expected


def test_no_prices_mean_an_unknown_cost() -> None:
    assert ScriptedModel([], prices=None).cost_of(USAGE) is None
    assert FunctionModel(lambda m, s: "", prices=None).cost_of(USAGE) is None


@pytest.mark.parametrize(
    ("name", "full", "model_name"),
    [
        ("root", "test:root", "root"),
        ("openai:gpt-4o", "openai:gpt-4o", "gpt-4o"),
        ("test:sub", "test:sub", "sub"),
        ("ollama:qwen:7b", "ollama:qwen:7b", "qwen:7b"),
    ],
)
def test_names_are_prefixed_with_test_unless_they_have_a_provider(
    name: str, full: str, model_name: str
) -> None:
    for model in (ScriptedModel([], name=name), FunctionModel(lambda m, s: "", name=name)):
        assert model.name == full
        assert model.model_name == model_name


def test_default_names_and_repr() -> None:
    scripted = ScriptedModel([])
    function = FunctionModel(lambda m, s: "")
    assert (scripted.name, scripted.model_name) == ("test:scripted", "scripted")
    assert (function.name, function.model_name) == ("test:function", "function")
    assert repr(scripted) == "ScriptedModel('test:scripted')"
    assert scripted.context_window is None


async def test_doubles_hold_nothing_to_close() -> None:
    model = ScriptedModel(["a"])
    await model.aclose()
    await model.aclose()
    assert (await model.request([USER])).text == "a"
