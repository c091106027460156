"""AnthropicModel against a loopback server speaking the Messages API, through the real SDK."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

import rlmx.models
from rlmx.exceptions import (
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelAPIError,
    ModelConnectionError,
    ModelRequestsDisabled,
    ModelResponseError,
)
from rlmx.models import Message, ModelSettings, get_model
from rlmx.models._common import key_digest
from rlmx.models.anthropic import DEFAULT_MAX_TOKENS, AnthropicModel
from rlmx.pricing import cost_of
from rlmx.usage import RequestUsage

HI = [Message("user", "hi")]
KEY = "sk-ant-test-key"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own Anthropic settings must not leak into these tests."""
    for var in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_PROFILE",
    ):
        monkeypatch.delenv(var, raising=False)


def message_json(
    *content: dict[str, Any], model: str = "claude-haiku-4-5-20251001", **usage: Any
) -> dict[str, Any]:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content) or [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 3, **usage},
    }


def error_json(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """JSON to send, or a ``str`` sent as it is; ``None`` sends :func:`message_json`."""
    headers: dict[str, str] = field(default_factory=dict)
    hold: asyncio.Event | None = None
    """Wait for this before answering (a server too slow for the client's timeout)."""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeAnthropic:
    """A loopback ``POST /v1/messages`` that answers with queued replies and records requests."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[Seen] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.headers), await request.json()))
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.hold is not None:
            await reply.hold.wait()
        if isinstance(reply.body, str):
            return web.Response(
                text=reply.body,
                status=reply.status,
                headers=reply.headers,
                content_type="application/json",
            )
        body = message_json() if reply.body is None else reply.body
        return web.json_response(body, status=reply.status, headers=reply.headers)

    async def __aenter__(self) -> FakeAnthropic:
        app = web.Application()
        app.router.add_post("/v1/messages", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@contextlib.asynccontextmanager
async def served(
    *replies: Reply, model_name: str = "claude-haiku-4-5", **kwargs: Any
) -> AsyncIterator[tuple[FakeAnthropic, AnthropicModel]]:
    async with FakeAnthropic(*replies) as server:
        kwargs.setdefault("api_key", KEY)
        model = AnthropicModel(model_name, base_url=server.base_url, **kwargs)
        try:
            yield server, model
        finally:
            await model.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the request ---------------------------------------------------------------------------


async def test_the_request_separates_system_merges_turns_and_maps_settings() -> None:
    conversation = [
        Message("system", "Be terse."),
        Message("user", "u1"),
        Message("user", "u2"),
        Message("system", "Answer in English."),
        Message("assistant", "a1"),
        Message("assistant", ""),
        Message("assistant", "a2"),
        Message("user", "u3"),
    ]
    settings = ModelSettings(
        temperature=0.2,
        max_tokens=77,
        top_p=0.9,
        seed=5,
        stop=("END", "```"),
        timeout_s=30,
        extra_body={"metadata": {"user_id": "run-1"}},
    )
    async with served() as (server, model):
        await model.request(conversation, settings)
    (seen,) = server.requests
    assert seen.path == "/v1/messages"
    assert seen.headers.get("x-api-key") == KEY or seen.headers.get("Authorization") == (
        f"Bearer {KEY}"
    )
    assert "anthropic-version" in seen.headers
    assert seen.body == {
        "model": "claude-haiku-4-5",
        "system": "Be terse.\n\nAnswer in English.",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "u1"}, {"type": "text", "text": "u2"}],
            },
            # The empty message is left out: the API rejects empty text blocks.
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "a1"}, {"type": "text", "text": "a2"}],
            },
            {"role": "user", "content": "u3"},
        ],
        "max_tokens": 77,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END", "```"],
        "metadata": {"user_id": "run-1"},
    }


async def test_unset_settings_are_left_out_and_max_tokens_has_a_default() -> None:
    async with served() as (server, model):
        await model.request(HI)
    assert server.requests[0].body == {
        "model": "claude-haiku-4-5",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }


async def test_default_settings_and_max_tokens_apply_and_request_settings_win() -> None:
    defaults = ModelSettings(temperature=0.5, stop=("X",), extra_body={"top_k": 3})
    async with served(settings=defaults, max_tokens=100) as (server, model):
        await model.request(HI)
        await model.request(HI, ModelSettings(temperature=0.0, extra_body={"top_k": 9}))
    first, second = (seen.body for seen in server.requests)
    assert (first["max_tokens"], first["temperature"], first["stop_sequences"]) == (100, 0.5, ["X"])
    assert first["top_k"] == 3
    assert (second["temperature"], second["top_k"]) == (0.0, 9)


async def test_only_system_messages_are_refused_before_sending() -> None:
    async with served() as (server, model):
        with pytest.raises(ConfigError, match="at least one user or assistant message"):
            await model.request([Message("system", "s")])
    assert server.requests == []


# -- the reply -----------------------------------------------------------------------------


async def test_text_blocks_are_joined_and_thinking_is_left_out() -> None:
    body = message_json(
        {"type": "thinking", "thinking": "let me see", "signature": "sig"},
        {"type": "text", "text": "Hello, "},
        {"type": "text", "text": "world."},
    )
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert response.text == "Hello, world."
    assert response.finish_reason == "end_turn"
    assert response.model_name == "claude-haiku-4-5-20251001"


async def test_usage_counts_every_prompt_token_and_the_cached_part() -> None:
    body = message_json(
        input_tokens=10,
        cache_creation_input_tokens=20,
        cache_read_input_tokens=30,
        output_tokens=40,
        output_tokens_details={"thinking_tokens": 15},
    )
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert response.usage == RequestUsage(
        input_tokens=60,
        output_tokens=40,
        cached_input_tokens=30,
        cache_write_tokens=20,
        reasoning_tokens=15,
    )


async def test_usage_without_cache_fields_or_thinking_details() -> None:
    body = message_json(
        input_tokens=7, output_tokens=2, cache_read_input_tokens=None, cache_creation_input_tokens=0
    )
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert response.usage == RequestUsage(input_tokens=7, output_tokens=2)


async def test_cost_uses_the_price_table_with_the_cache_discount() -> None:
    body = message_json(input_tokens=30, cache_read_input_tokens=30, output_tokens=40)
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert response.model_name == "claude-haiku-4-5-20251001"
    cost = model.cost_of(response.usage, response.model_name)
    # claude-haiku-4-5: $1 per 1M input, $0.10 cached, $5 output.
    assert cost == (Decimal(30) * 1 + Decimal(30) * Decimal("0.10") + 40 * 5) / 1_000_000
    assert cost == cost_of("claude-haiku-4-5", response.usage)
    assert model.cost_of(response.usage, "a-model-nobody-prices") == cost


async def test_a_reply_without_usage_warns_once_and_counts_zero() -> None:
    body = message_json()
    del body["usage"]
    async with served(Reply(body=body), Reply(body=body)) as (_, model):
        with pytest.warns(RuntimeWarning, match="reported no token usage"):
            first = await model.request(HI)
        second = await model.request(HI)  # no second warning: filterwarnings=error
    assert first.usage == second.usage == RequestUsage()
    assert first.text == "hello"


async def test_a_reply_without_a_model_name_is_filed_under_the_asked_model() -> None:
    body = message_json()
    body["model"] = None
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert response.model_name == "claude-haiku-4-5"


# -- errors ----------------------------------------------------------------------------------


async def test_429_carries_status_body_and_retry_after() -> None:
    body = error_json("rate_limit_error", "Number of request tokens has exceeded your limit.")
    reply = Reply(status=429, body=body, headers={"Retry-After": "3"})
    async with served(reply) as (_, model):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    err = info.value
    assert type(err) is ModelAPIError
    assert (err.status, err.retry_after_s, err.body) == (429, 3.0, body)
    assert err.model == "anthropic:claude-haiku-4-5"
    message = str(err)
    assert "anthropic:claude-haiku-4-5" in message and "HTTP 429" in message
    assert "Number of request tokens has exceeded your limit" in message
    assert "rate limiting" in message


async def test_529_overloaded_stays_an_api_error_with_its_status() -> None:
    body = error_json("overloaded_error", "Overloaded")
    async with served(Reply(status=529, body=body, headers={"retry-after-ms": "1500"})) as (
        _,
        model,
    ):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    assert type(info.value) is ModelAPIError
    assert (info.value.status, info.value.retry_after_s) == (529, 1.5)
    assert "HTTP 529: Overloaded." in str(info.value)
    assert "overloaded" in str(info.value).lower()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, error_json("api_error", "Internal server error"), "Internal server error"),
        (502, "<html>bad gateway</html>", "<html>bad gateway</html>"),
        (404, error_json("not_found_error", "model: claude-nope"), "Check the model name"),
    ],
)
async def test_other_statuses_are_api_errors(status: int, body: Any, expected: str) -> None:
    async with served(Reply(status=status, body=body)) as (_, model):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    assert type(info.value) is ModelAPIError
    assert info.value.status == status
    assert info.value.retry_after_s is None
    assert expected in str(info.value)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_point_at_the_key(status: int) -> None:
    body = error_json("authentication_error", "invalid x-api-key")
    async with served(Reply(status=status, body=body)) as (_, model):
        with pytest.raises(ModelAPIError, match="Check ANTHROPIC_API_KEY") as info:
            await model.request(HI)
    assert info.value.status == status


async def test_a_prompt_too_long_is_a_context_length_error() -> None:
    body = error_json("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum")
    async with served(Reply(status=400, body=body)) as (_, model):
        with pytest.raises(ContextLengthError) as info:
            await model.request(HI)
    err = info.value
    assert (err.status, err.context_window, err.body) == (400, 200000, body)
    assert "prompt is too long" in str(err)


async def test_other_bad_requests_are_plain_api_errors() -> None:
    body = error_json("invalid_request_error", "max_tokens: must be positive")
    async with served(Reply(status=400, body=body)) as (_, model):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    assert type(info.value) is ModelAPIError
    assert info.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "msg", "content": [',  # not JSON
        {"id": "msg", "type": "message", "content": "not a list", "usage": None},
    ],
)
async def test_an_unusable_reply_is_a_response_error(body: Any) -> None:
    async with served(Reply(body=body)) as (_, model):
        with pytest.raises(ModelResponseError, match="anthropic:claude-haiku-4-5"):
            await model.request(HI)


async def test_a_closed_port_is_a_connection_error() -> None:
    model = AnthropicModel(
        "claude-haiku-4-5", api_key=KEY, base_url=f"http://127.0.0.1:{free_port()}"
    )
    try:
        with pytest.raises(
            ModelConnectionError, match="Could not reach anthropic:claude-haiku-4-5"
        ):
            await model.request(HI)
    finally:
        await model.aclose()


async def test_a_server_slower_than_the_timeout_is_a_connection_error() -> None:
    hold = asyncio.Event()
    async with served(Reply(hold=hold)) as (_, model):
        try:
            with pytest.raises(ModelConnectionError, match=r"no reply within 0\.2s"):
                await model.request(HI, ModelSettings(timeout_s=0.2))
        finally:
            hold.set()


# -- switches, keys, endpoints -----------------------------------------------------------------


async def test_the_public_endpoint_is_refused_while_requests_are_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rlmx.models, "ALLOW_MODEL_REQUESTS", False)
    model = AnthropicModel("claude-sonnet-4-5", api_key=KEY)
    assert model.base_url is None
    with pytest.raises(ModelRequestsDisabled, match=r"https://api\.anthropic\.com") as info:
        await model.request(HI)
    assert info.value.model == "anthropic:claude-sonnet-4-5"
    await model.aclose()  # nothing was opened; still safe


def test_without_a_key_the_public_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="No API key for anthropic: set ANTHROPIC_API_KEY"):
        AnthropicModel("claude-sonnet-4-5")
    with pytest.raises(ConfigError):
        AnthropicModel("claude-sonnet-4-5", base_url="https://api.anthropic.com/")


async def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")
    async with FakeAnthropic() as server:
        model = AnthropicModel("claude-haiku-4-5", base_url=server.base_url)
        try:
            await model.request(HI)
        finally:
            await model.aclose()
    headers = server.requests[0].headers
    assert "sk-from-env" in (headers.get("x-api-key", "") + headers.get("Authorization", ""))
    assert model.rate_limit_key == f"anthropic|{server.base_url}|{key_digest('sk-from-env')}"


async def test_a_custom_endpoint_needs_no_key_and_can_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeAnthropic() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url + "/")
        model = AnthropicModel("claude-haiku-4-5")
        try:
            response = await model.request(HI)
        finally:
            await model.aclose()
    assert model.base_url == server.base_url
    assert response.text == "hello"
    assert len(server.requests) == 1


def test_name_window_and_rate_limit_key() -> None:
    model = AnthropicModel("claude-opus-4-1", api_key=KEY)
    assert (model.name, model.model_name, model.provider) == (
        "anthropic:claude-opus-4-1",
        "claude-opus-4-1",
        "anthropic",
    )
    assert model.context_window == 200000
    assert model.rate_limit_key == f"anthropic|default|{key_digest(KEY)}"
    assert KEY not in model.rate_limit_key
    assert AnthropicModel("claude-x", api_key=KEY, context_window=1234).context_window == 1234
    assert AnthropicModel("claude-unknown", api_key=KEY).context_window is None
    assert repr(model) == "AnthropicModel('anthropic:claude-opus-4-1')"


async def test_get_model_resolves_the_provider() -> None:
    async with FakeAnthropic() as server:
        model = get_model("anthropic:claude-sonnet-4-5", base_url=server.base_url)
        assert isinstance(model, AnthropicModel)
        assert (model.name, model.model_name) == (
            "anthropic:claude-sonnet-4-5",
            "claude-sonnet-4-5",
        )
        assert model.base_url == server.base_url
        assert model.context_window == 200000
        model = get_model("anthropic:claude-haiku-4-5", base_url=server.base_url, api_key=KEY)
        try:
            assert (await model.request(HI)).text == "hello"
        finally:
            await model.aclose()


async def test_one_client_per_event_loop_and_aclose_releases_it() -> None:
    async with served() as (_, model):
        stale = asyncio.new_event_loop()
        stale.close()
        model._clients[stale] = None  # type: ignore[assignment]  # a loop that has ended
        await model.request(HI)
        client = model._clients[asyncio.get_running_loop()]
        await model.request(HI)
        assert model._clients[asyncio.get_running_loop()] is client
        assert stale not in model._clients
        await model.aclose()
        assert model._clients == {}
        await model.aclose()  # twice is fine
        await model.request(HI)  # a new client
        assert model._clients[asyncio.get_running_loop()] is not client


def test_without_the_sdk_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.delitem(sys.modules, "rlmx.models.anthropic")
    with pytest.raises(MissingExtraError, match=r'pip install "rlmx\[anthropic\]"') as info:
        importlib.import_module("rlmx.models.anthropic")
    assert isinstance(info.value, ImportError)
    assert info.value.provider == "anthropic"
    with pytest.raises(MissingExtraError):
        get_model("anthropic:claude-sonnet-4-5", api_key=KEY)
