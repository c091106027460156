"""OpenAIChatModel against a real loopback server, and the settings it sends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import openai
import pytest
from aiohttp import web

from rlmx.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelError,
    ModelResponseError,
)
from rlmx.models import Message, ModelSettings, OpenAIChatModel
from rlmx.pricing import cost_of
from rlmx.testing import MockOpenAIServer, MockReply, MockRequest
from rlmx.usage import RequestUsage

HI = [Message("user", "hi")]


def make_model(base_url: str, model_name: str = "gpt-test", **kwargs: Any) -> OpenAIChatModel:
    kwargs.setdefault("max_retries", 0)
    return OpenAIChatModel(model_name, base_url=base_url, **kwargs)


@contextlib.asynccontextmanager
async def serving(
    model: OpenAIChatModel,
) -> AsyncIterator[OpenAIChatModel]:
    try:
        yield model
    finally:
        await model.aclose()


@contextlib.asynccontextmanager
async def raw_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A bare aiohttp server for replies MockOpenAIServer cannot produce; yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def completion_json(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": 0,
        "model": "raw-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        **extra,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- ModelSettings --------------------------------------------------------------------------


def test_merged_with_none_is_unchanged() -> None:
    base = ModelSettings(temperature=0.5)
    assert base.merged(None) is base


def test_merged_explicit_fields_win_and_unset_fields_keep_the_base() -> None:
    base = ModelSettings(temperature=0.5, max_tokens=100, top_p=0.9, seed=1, timeout_s=30)
    override = ModelSettings(temperature=0.0, seed=2, stop=("END",))
    merged = base.merged(override)
    assert merged == ModelSettings(
        temperature=0.0, max_tokens=100, top_p=0.9, seed=2, timeout_s=30, stop=("END",)
    )
    # Zero and an empty stop list are explicit values, not "unset".
    assert base.merged(ModelSettings(temperature=0.0)).temperature == 0.0
    assert ModelSettings(stop=("x",)).merged(ModelSettings(stop=())).stop == ()


def test_merged_extra_body_is_a_merge_not_a_replacement() -> None:
    base = ModelSettings(extra_body={"reasoning_effort": "low", "user": "a"})
    override = ModelSettings(extra_body={"user": "b", "logprobs": True})
    merged = base.merged(override)
    assert merged.extra_body == {"reasoning_effort": "low", "user": "b", "logprobs": True}
    assert base.extra_body == {"reasoning_effort": "low", "user": "a"}  # not mutated
    assert override.extra_body == {"user": "b", "logprobs": True}
    assert base.merged(ModelSettings()).extra_body == base.extra_body


async def test_the_request_body_carries_the_set_settings() -> None:
    async with MockOpenAIServer() as srv:
        async with serving(make_model(srv.base_url, model_name="gpt-body")) as model:
            settings = ModelSettings(
                temperature=0.3,
                max_tokens=64,
                top_p=0.5,
                seed=42,
                stop=("```", "END"),
                timeout_s=20,
                extra_body={"reasoning_effort": "low", "metadata": {"run": "r1"}},
            )
            await model.request([Message("system", "sys"), Message("user", "u")], settings)
        body = srv.requests[-1].body
    assert body["model"] == "gpt-body"
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "u"},
    ]
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 64
    assert body["top_p"] == 0.5
    assert body["seed"] == 42
    assert body["stop"] == ["```", "END"]
    assert body["reasoning_effort"] == "low"
    assert body["metadata"] == {"run": "r1"}
    assert "timeout" not in body and "timeout_s" not in body and "extra_body" not in body


async def test_unset_settings_are_left_out_of_the_request_body() -> None:
    async with MockOpenAIServer() as srv:
        async with serving(make_model(srv.base_url)) as model:
            await model.request(HI)
            await model.request(HI, ModelSettings(stop=()))
        for request in srv.requests:
            for key in ("temperature", "max_tokens", "top_p", "seed", "stop", "stream"):
                assert key not in request.body


async def test_default_settings_merge_with_per_request_settings() -> None:
    defaults = ModelSettings(temperature=0.7, seed=1, extra_body={"a": 1, "b": 1})
    async with MockOpenAIServer() as srv:
        async with serving(make_model(srv.base_url, settings=defaults)) as model:
            await model.request(HI)
            await model.request(HI, ModelSettings(temperature=0.1, extra_body={"b": 2}))
        first, second = (r.body for r in srv.requests)
    assert (first["temperature"], first["seed"], first["a"], first["b"]) == (0.7, 1, 1, 1)
    assert (second["temperature"], second["seed"], second["a"], second["b"]) == (0.1, 1, 1, 2)


# -- replies and usage ----------------------------------------------------------------------


async def test_reply_text_usage_model_name_and_finish_reason() -> None:
    def handler(request: MockRequest) -> MockReply:
        return MockReply(
            content=f"echo {request.last_user_message}",
            prompt_tokens=120,
            completion_tokens=30,
            cached_tokens=100,
            finish_reason="length",
        )

    async with MockOpenAIServer(handler) as srv:
        async with serving(make_model(srv.base_url, model_name="gpt-4o-mini")) as model:
            response = await model.request(HI)
        assert srv.usage_totals() == {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "cached_tokens": 100,
            "requests": 1,
        }
    assert response.text == "echo hi"
    assert response.usage == RequestUsage(
        input_tokens=120, output_tokens=30, cached_input_tokens=100
    )
    assert response.model_name == "gpt-4o-mini"
    assert response.finish_reason == "length"


async def test_model_name_comes_from_the_response() -> None:
    async def handler(request: web.Request) -> web.Response:
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        return web.json_response(
            completion_json(
                "dated", model="gpt-4o-mini-2024-07-18", usage=usage, system_fingerprint="fp"
            )
        )

    async with (
        raw_server(handler) as base_url,
        serving(make_model(base_url, model_name="gpt-4o-mini")) as model,
    ):
        response = await model.request(HI)
    assert response.model_name == "gpt-4o-mini-2024-07-18"
    assert response.usage == RequestUsage(input_tokens=5, output_tokens=2)
    assert response.finish_reason == "stop"


async def test_reasoning_tokens_are_mapped() -> None:
    async def handler(request: web.Request) -> web.Response:
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": 50,
            "total_tokens": 60,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 40},
        }
        return web.json_response(completion_json(usage=usage))

    async with raw_server(handler) as base_url, serving(make_model(base_url)) as model:
        response = await model.request(HI)
    assert response.usage == RequestUsage(
        input_tokens=10, output_tokens=50, cached_input_tokens=4, reasoning_tokens=40
    )


async def test_usage_matches_what_the_server_reported_over_many_requests() -> None:
    async with MockOpenAIServer(lambda request: "x" * 37) as srv:
        async with serving(make_model(srv.base_url)) as model:
            responses = await asyncio.gather(
                *(model.request([Message("user", "q" * n)]) for n in range(1, 21))
            )
        totals = srv.usage_totals()
    assert totals["requests"] == 20
    assert sum(r.usage.input_tokens for r in responses) == totals["prompt_tokens"]
    assert sum(r.usage.output_tokens for r in responses) == totals["completion_tokens"]


async def test_null_content_is_an_empty_string() -> None:
    async def handler(request: web.Request) -> web.Response:
        body = completion_json(usage={"prompt_tokens": 1, "completion_tokens": 0})
        body["choices"][0]["message"]["content"] = None
        return web.json_response(body)

    async with raw_server(handler) as base_url, serving(make_model(base_url)) as model:
        response = await model.request(HI)
    assert response.text == ""


async def test_missing_usage_warns_once_and_counts_zero_tokens() -> None:
    # MockOpenAIServer always reports usage, so a bare aiohttp handler leaves it out.
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(completion_json("no usage here"))

    async with (
        raw_server(handler) as base_url,
        serving(make_model(base_url, model_name="local-llm")) as model,
    ):
        with pytest.warns(RuntimeWarning, match="reported no token usage") as record:
            first = await model.request(HI)
            second = await model.request(HI)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    assert "openai:local-llm" in str(record[0].message)
    assert base_url in str(record[0].message)
    assert first.text == second.text == "no usage here"
    assert first.usage == second.usage == RequestUsage()


async def test_no_choices_is_a_response_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(completion_json(choices=[]))

    async with raw_server(handler) as base_url, serving(make_model(base_url)) as model:
        with pytest.raises(ModelResponseError, match="no choices") as info:
            await model.request(HI)
    assert info.value.model == "openai:gpt-test"


async def test_invalid_json_is_a_response_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>not json</html>", content_type="application/json")

    async with raw_server(handler) as base_url, serving(make_model(base_url)) as model:
        with pytest.raises(ModelResponseError) as info:
            await model.request(HI)
    assert info.value.model == "openai:gpt-test"
    assert not isinstance(info.value, openai.OpenAIError)


# -- errors ---------------------------------------------------------------------------------


def error_handler(status: int, message: str = "mock failure") -> Callable[[MockRequest], MockReply]:
    def handler(request: MockRequest) -> MockReply:
        return MockReply(content="", status=status, error_message=message)

    return handler


async def test_401_names_the_key_variable() -> None:
    async with (
        MockOpenAIServer(error_handler(401, "Incorrect API key provided.")) as srv,
        serving(make_model(srv.base_url)) as model,
    ):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    err = info.value
    assert err.status == 401
    assert err.model == "openai:gpt-test"
    assert "OPENAI_API_KEY" in str(err)
    assert "HTTP 401" in str(err)
    assert "Incorrect API key provided" in str(err)
    assert isinstance(err.body, dict)
    assert not isinstance(err, openai.OpenAIError)


async def test_401_from_a_server_that_checks_the_key() -> None:
    async with MockOpenAIServer(api_key="the-right-key") as srv:
        async with serving(make_model(srv.base_url, provider="openrouter")) as model:
            with pytest.raises(ModelAPIError, match="OPENROUTER_API_KEY") as info:
                await model.request(HI)
        assert info.value.status == 401
        async with serving(make_model(srv.base_url, api_key="the-right-key")) as model:
            assert (await model.request(HI)).text == "mock reply to: hi"


async def test_401_for_a_preset_without_a_key_variable() -> None:
    async with (
        MockOpenAIServer(error_handler(401)) as srv,
        serving(make_model(srv.base_url, provider="ollama")) as model,
    ):
        with pytest.raises(ModelAPIError, match="the API key") as info:
            await model.request(HI)
    assert info.value.model == "ollama:gpt-test"


async def test_404_mentions_the_model_name() -> None:
    async with MockOpenAIServer(error_handler(404, "The model does not exist.")) as srv:
        async with serving(make_model(srv.base_url, model_name="gpt-typo")) as model:
            with pytest.raises(ModelAPIError) as info:
                await model.request(HI)
        base_url = srv.base_url
    err = info.value
    assert err.status == 404
    assert "'gpt-typo'" in str(err)
    assert base_url in str(err)
    assert not isinstance(err, openai.OpenAIError)


@pytest.mark.parametrize(("status", "hint"), [(429, "rate limiting"), (500, None), (503, None)])
async def test_rate_limits_and_server_errors_carry_the_status(
    status: int, hint: str | None
) -> None:
    async with MockOpenAIServer(error_handler(status, "try later")) as srv:
        async with serving(make_model(srv.base_url)) as model:
            with pytest.raises(ModelAPIError) as info:
                await model.request(HI)
        assert len(srv.requests) == 1  # max_retries=0: no retry
    err = info.value
    assert isinstance(err, ModelError)
    assert not isinstance(err, openai.OpenAIError)
    assert err.status == status
    assert f"HTTP {status}" in str(err)
    assert "try later" in str(err)
    if hint:
        assert hint in str(err)
    assert err.__cause__ is None  # raised "from None": the vendor error does not leak


async def test_streamed_requests_can_use_the_sdk_s_own_retries() -> None:
    replies = iter([MockReply("", status=500), MockReply("recovered")])
    async with MockOpenAIServer(lambda request: next(replies)) as srv:
        async with serving(make_model(srv.base_url, max_retries=1, stream=True)) as model:
            response = await model.request(HI)
        assert len(srv.requests) == 2
    assert response.text == "recovered"


async def test_connection_refused_is_a_connection_error_naming_the_base_url() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    async with serving(make_model(base_url)) as model:
        with pytest.raises(ModelConnectionError) as info:
            await model.request(HI)
    err = info.value
    assert base_url in str(err)
    assert err.model == "openai:gpt-test"
    assert "timed out" not in str(err).lower()  # refused, not slow
    assert not isinstance(err, openai.OpenAIError)
    assert err.__cause__ is None


async def test_a_timeout_is_a_connection_error() -> None:
    async with (
        MockOpenAIServer(lambda request: MockReply("late", delay_s=0.6)) as srv,
        serving(make_model(srv.base_url)) as model,
    ):
        with pytest.raises(ModelConnectionError) as info:
            await model.request(HI, ModelSettings(timeout_s=0.1))
    message = str(info.value).lower()
    assert "openai:gpt-test" in message
    assert "timeout" in message or "timed out" in message
    assert not isinstance(info.value, openai.OpenAIError)


# -- clients and event loops ----------------------------------------------------------------


async def test_aclose_closes_the_client_and_a_later_request_opens_a_new_one() -> None:
    async with MockOpenAIServer() as srv:
        model = make_model(srv.base_url)
        await model.request(HI)
        (client,) = model._sessions.values()
        await model.aclose()
        assert model._sessions == {}
        assert client.closed
        await model.aclose()  # safe twice
        try:
            assert (await model.request(HI)).text == "mock reply to: hi"
            (new_client,) = model._sessions.values()
            assert new_client is not client
        finally:
            await model.aclose()
        assert len(srv.requests) == 2


async def test_concurrent_requests_share_one_client() -> None:
    async with MockOpenAIServer(latency_s=0.05) as srv:
        async with serving(make_model(srv.base_url)) as model:
            await asyncio.gather(*(model.request(HI) for _ in range(10)))
            assert len(model._sessions) == 1
        assert srv.max_in_flight > 1


def test_the_same_model_works_from_two_event_loops_in_turn() -> None:
    with MockOpenAIServer(lambda request: f"loop reply {len(srv.requests)}").running() as srv:
        model = make_model(srv.base_url)

        async def one_request() -> str:
            try:
                return (await model.request(HI)).text
            finally:
                await model.aclose()

        first = asyncio.run(one_request())
        second = asyncio.run(one_request())
    assert (first, second) == ("loop reply 1", "loop reply 2")
    assert model._sessions == {}


def test_a_client_left_open_on_a_closed_loop_is_replaced() -> None:
    with MockOpenAIServer().running() as srv:
        model = make_model(srv.base_url)

        async def first_run() -> None:
            await model.request(HI)
            client = next(iter(model._sessions.values()))
            await client.close()  # closed by hand, but left in the per-loop table

        async def second_run() -> str:
            try:
                return (await model.request(HI)).text
            finally:
                await model.aclose()

        asyncio.run(first_run())
        assert len(model._sessions) == 1
        assert asyncio.run(second_run()) == "mock reply to: hi"
    assert model._sessions == {}


# -- cost -----------------------------------------------------------------------------------


def test_cost_prefers_the_response_model_and_falls_back_to_the_configured_one() -> None:
    model = make_model("http://127.0.0.1:9/v1", model_name="gpt-4o-mini")
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert model.cost_of(usage) == Decimal("0.75")  # $0.15 + $0.60 per million
    assert model.cost_of(usage, "gpt-4o") == cost_of("gpt-4o", usage)
    assert model.cost_of(usage, "not-a-priced-model") == Decimal("0.75")
    unknown = make_model("http://127.0.0.1:9/v1", model_name="not-a-priced-model")
    assert unknown.cost_of(usage) is None


def test_repr_names_the_model() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = make_model("http://127.0.0.1:9/v1", model_name="gpt-x")
    assert repr(model) == "OpenAIChatModel('openai:gpt-x')"
