"""GeminiModel against a loopback server speaking the Gemini API, through the real SDK."""

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
from rlmx.models.gemini import GeminiModel
from rlmx.pricing import cost_of
from rlmx.usage import RequestUsage

HI = [Message("user", "hi")]
KEY = "gemini-test-key"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own Google settings must not leak into these tests."""
    for var in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_ENTERPRISE",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_GENAI_HTTP_CLIENT",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
    ):
        monkeypatch.delenv(var, raising=False)


def reply_json(
    *parts: dict[str, Any], model_version: str | None = "gemini-2.5-flash", **usage: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "candidates": [
            {
                "content": {"role": "model", "parts": list(parts) or [{"text": "hello"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 3,
            "totalTokenCount": 8,
            **usage,
        },
    }
    if model_version is not None:
        body["modelVersion"] = model_version
    return body


def error_json(code: int, message: str, status: str, *details: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """JSON to send, or a ``str`` sent as it is; ``None`` sends :func:`reply_json`."""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    hold: asyncio.Event | None = None
    """Wait for this before answering (a server too slow for the client's timeout)."""


@dataclass
class Seen:
    version: str
    model: str
    method: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeGemini:
    """A loopback ``POST /{version}/models/{model}:generateContent`` with queued replies."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[Seen] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["action"].partition(":")
        self.requests.append(
            Seen(
                request.match_info["version"],
                model,
                method,
                dict(request.headers),
                await request.json(),
            )
        )
        reply = self.replies.pop(0) if self.replies else Reply()
        if reply.hold is not None:
            await reply.hold.wait()
        if isinstance(reply.body, str):
            return web.Response(
                text=reply.body,
                status=reply.status,
                headers=reply.headers,
                content_type=reply.content_type,
            )
        body = reply_json() if reply.body is None else reply.body
        return web.json_response(body, status=reply.status, headers=reply.headers)

    async def __aenter__(self) -> FakeGemini:
        app = web.Application()
        app.router.add_post("/{version}/models/{action}", self._handle)
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
    *replies: Reply, model_name: str = "gemini-2.5-flash", **kwargs: Any
) -> AsyncIterator[tuple[FakeGemini, GeminiModel]]:
    async with FakeGemini(*replies) as server:
        kwargs.setdefault("api_key", KEY)
        model = GeminiModel(model_name, base_url=server.base_url, **kwargs)
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


async def test_the_request_separates_system_maps_roles_merges_turns_and_settings() -> None:
    conversation = [
        Message("system", "Be terse."),
        Message("user", "u1"),
        Message("user", "u2"),
        Message("system", "Answer in English."),
        Message("assistant", "a1"),
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
    )
    async with served() as (server, model):
        await model.request(conversation, settings)
    (seen,) = server.requests
    assert (seen.model, seen.method) == ("gemini-2.5-flash", "generateContent")
    assert seen.version.startswith("v1")  # the SDK's API version: v1 in google-genai 3.x
    assert seen.headers["x-goog-api-key"] == KEY
    assert seen.headers["X-Server-Timeout"] == "30"
    body = seen.body
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "u1"}, {"text": "u2"}]},
        {"role": "model", "parts": [{"text": "a1"}, {"text": "a2"}]},
        {"role": "user", "parts": [{"text": "u3"}]},
    ]
    assert body["systemInstruction"]["parts"] == [{"text": "Be terse.\n\nAnswer in English."}]
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 77,
        "topP": 0.9,
        "seed": 5,
        "stopSequences": ["END", "```"],
    }


async def test_unset_settings_are_left_out() -> None:
    async with served() as (server, model):
        await model.request(HI)
    body = server.requests[0].body
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert "systemInstruction" not in body
    assert not body.get("generationConfig")


async def test_default_settings_and_max_tokens_apply_and_request_settings_win() -> None:
    defaults = ModelSettings(temperature=0.5, stop=("X",))
    async with served(settings=defaults, max_tokens=100) as (server, model):
        await model.request(HI)
        await model.request(HI, ModelSettings(temperature=0.0, max_tokens=7))
    first, second = (seen.body["generationConfig"] for seen in server.requests)
    assert first == {"temperature": 0.5, "maxOutputTokens": 100, "stopSequences": ["X"]}
    assert second == {"temperature": 0.0, "maxOutputTokens": 7, "stopSequences": ["X"]}


async def test_extra_body_sets_config_fields_and_passes_other_keys_into_the_json() -> None:
    extra = {
        "top_k": 5,
        "thinking_config": {"thinking_budget": 0},
        "temperature": 0.9,  # an explicit setting of the same name wins
        "cachedContent": "cachedContents/abc",
    }
    async with served() as (server, model):
        await model.request(HI, ModelSettings(temperature=0.1, extra_body=extra))
    body = server.requests[0].body
    config = body["generationConfig"]
    assert (config["topK"], config["temperature"]) == (5, 0.1)
    # The SDK writes nested config fields in snake_case; the API reads either spelling.
    assert config["thinkingConfig"] in ({"thinkingBudget": 0}, {"thinking_budget": 0})
    assert body["cachedContent"] == "cachedContents/abc"


async def test_an_invalid_config_value_is_a_config_error() -> None:
    async with served() as (server, model):
        with pytest.raises(ConfigError, match=r"Invalid settings for gemini:gemini-2\.5-flash"):
            await model.request(HI, ModelSettings(extra_body={"top_k": "many"}))
    assert server.requests == []


async def test_only_system_messages_are_refused_before_sending() -> None:
    async with served() as (server, model):
        with pytest.raises(ConfigError, match="at least one user or assistant message"):
            await model.request([Message("system", "s")])
    assert server.requests == []


# -- the reply -----------------------------------------------------------------------------


async def test_text_parts_are_joined_and_thoughts_are_left_out() -> None:
    body = reply_json(
        {"text": "Let me think about it.", "thought": True},
        {"text": "Hello, "},
        {"text": "world."},
        model_version="gemini-2.5-flash-preview-09-2025",
    )
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert response.text == "Hello, world."
    assert response.finish_reason == "STOP"
    assert response.model_name == "gemini-2.5-flash-preview-09-2025"


async def test_usage_counts_cached_prompt_and_thought_tokens() -> None:
    body = reply_json(
        promptTokenCount=100,
        cachedContentTokenCount=40,
        candidatesTokenCount=20,
        thoughtsTokenCount=7,
        totalTokenCount=127,
    )
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert response.usage == RequestUsage(
        input_tokens=100, output_tokens=27, cached_input_tokens=40, reasoning_tokens=7
    )


async def test_cost_uses_the_price_table_with_the_cache_discount() -> None:
    body = reply_json(
        promptTokenCount=100,
        cachedContentTokenCount=40,
        candidatesTokenCount=20,
        thoughtsTokenCount=7,
    )
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    cost = model.cost_of(response.usage, response.model_name)
    # gemini-2.5-flash: $0.30 per 1M input, $0.03 cached, $2.50 output (thoughts included).
    assert cost == (60 * Decimal("0.30") + 40 * Decimal("0.03") + 27 * Decimal("2.50")) / 1_000_000
    assert cost == cost_of("gemini-2.5-flash", response.usage)


async def test_a_reply_without_usage_warns_once_and_counts_zero() -> None:
    body = reply_json(model_version=None)
    del body["usageMetadata"]
    async with served(Reply(body=body), Reply(body=body)) as (_, model):
        with pytest.warns(RuntimeWarning, match="reported no token usage"):
            first = await model.request(HI)
        second = await model.request(HI)  # no second warning: filterwarnings=error
    assert first.usage == second.usage == RequestUsage()
    assert first.model_name == "gemini-2.5-flash"  # no modelVersion: the asked model


async def test_a_candidate_without_content_is_an_empty_reply() -> None:
    body = {"candidates": [{"finishReason": "SAFETY"}], "usageMetadata": {"promptTokenCount": 4}}
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert (response.text, response.finish_reason) == ("", "SAFETY")
    assert response.usage == RequestUsage(input_tokens=4)


async def test_a_candidate_without_a_finish_reason() -> None:
    body = reply_json({"text": "partial"})
    del body["candidates"][0]["finishReason"]
    async with served(Reply(body=body)) as (_, model):
        response = await model.request(HI)
    assert (response.text, response.finish_reason) == ("partial", None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"usageMetadata": {"promptTokenCount": 4}}, "returned no candidates"),
        ({"candidates": [], "promptFeedback": {"safetyRatings": []}}, "returned no candidates"),
        (
            {"candidates": [], "promptFeedback": {"blockReason": "SAFETY"}},
            r"blocked the prompt \(block reason SAFETY\)",
        ),
        (
            {
                "promptFeedback": {
                    "blockReason": "PROHIBITED_CONTENT",
                    "blockReasonMessage": "not allowed",
                }
            },
            r"block reason PROHIBITED_CONTENT: not allowed",
        ),
        ('{"candidates": [', "unusable response"),  # not JSON
        ({"candidates": [{"content": 5}]}, "unusable response"),  # JSON of the wrong shape
    ],
)
async def test_an_unusable_reply_is_a_response_error(body: Any, expected: str) -> None:
    async with served(Reply(body=body)) as (_, model):
        with pytest.raises(ModelResponseError, match=expected) as info:
            await model.request(HI)
    assert info.value.model == "gemini:gemini-2.5-flash"


# -- errors ----------------------------------------------------------------------------------


async def test_429_carries_status_body_and_retry_after() -> None:
    body = error_json(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")
    async with served(Reply(status=429, body=body, headers={"Retry-After": "3"})) as (_, model):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    err = info.value
    assert type(err) is ModelAPIError
    assert (err.status, err.retry_after_s, err.body) == (429, 3.0, body)
    assert err.model == "gemini:gemini-2.5-flash"
    message = str(err)
    assert "gemini:gemini-2.5-flash" in message and "HTTP 429" in message
    assert "Resource has been exhausted" in message
    assert "rate limiting" in message


@pytest.mark.parametrize(("delay", "expected"), [("12s", 12.0), ("0.5s", 0.5), ("soon", None)])
async def test_429_retry_info_in_the_details_gives_the_wait(
    delay: str, expected: float | None
) -> None:
    body = error_json(
        429,
        "You exceeded your current quota.",
        "RESOURCE_EXHAUSTED",
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
    )
    async with served(Reply(status=429, body=body)) as (_, model):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    assert info.value.status == 429
    assert info.value.retry_after_s == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, error_json(500, "An internal error has occurred.", "INTERNAL"), "internal error"),
        (503, error_json(503, "The model is overloaded.", "UNAVAILABLE"), "overloaded"),
        (502, "<html>bad gateway</html>", "<html>bad gateway</html>"),
        (
            404,
            error_json(404, "models/gemini-nope is not found.", "NOT_FOUND"),
            "Check the model name",
        ),
    ],
)
async def test_other_statuses_are_api_errors(status: int, body: Any, expected: str) -> None:
    reply = Reply(status=status, body=body, content_type="text/html")
    async with served(reply) as (_, model):
        with pytest.raises(ModelAPIError, match=expected) as info:
            await model.request(HI)
    assert type(info.value) is ModelAPIError
    assert info.value.status == status
    assert info.value.retry_after_s is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            401,
            error_json(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"),
        ),
        (403, error_json(403, "Permission denied.", "PERMISSION_DENIED")),
        (
            400,
            error_json(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
            ),
        ),
    ],
)
async def test_auth_failures_point_at_the_key(status: int, body: Any) -> None:
    async with served(Reply(status=status, body=body)) as (_, model):
        with pytest.raises(ModelAPIError, match=r"Check GEMINI_API_KEY") as info:
            await model.request(HI)
    assert info.value.status == status


async def test_a_prompt_too_long_is_a_context_length_error() -> None:
    body = error_json(
        400,
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        "INVALID_ARGUMENT",
    )
    async with served(Reply(status=400, body=body)) as (_, model):
        with pytest.raises(ContextLengthError) as info:
            await model.request(HI)
    err = info.value
    assert (err.status, err.context_window, err.body) == (400, 1048576, body)
    assert "input token count" in str(err)


async def test_other_bad_requests_are_plain_api_errors() -> None:
    body = error_json(400, "Invalid value at 'generation_config.top_k'.", "INVALID_ARGUMENT")
    async with served(Reply(status=400, body=body)) as (_, model):
        with pytest.raises(ModelAPIError) as info:
            await model.request(HI)
    assert type(info.value) is ModelAPIError
    assert "Check GEMINI_API_KEY" not in str(info.value)


async def test_a_closed_port_is_a_connection_error() -> None:
    model = GeminiModel("gemini-2.5-flash", api_key=KEY, base_url=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ModelConnectionError, match=r"Could not reach gemini:gemini-2\.5-flash"):
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
    model = GeminiModel("gemini-2.5-flash", api_key=KEY)
    assert model.base_url is None
    with pytest.raises(ModelRequestsDisabled, match=r"generativelanguage\.googleapis\.com"):
        await model.request(HI)
    await model.aclose()  # nothing was opened; still safe


def test_without_a_key_the_public_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="No API key for gemini: set GEMINI_API_KEY"):
        GeminiModel("gemini-2.5-flash")


async def test_gemini_api_key_is_preferred_over_google_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    async with FakeGemini() as server:
        for gemini_key in ("gemini-key", None):
            if gemini_key:
                monkeypatch.setenv("GEMINI_API_KEY", gemini_key)
            else:
                monkeypatch.delenv("GEMINI_API_KEY")
            model = GeminiModel("gemini-2.5-flash", base_url=server.base_url)
            try:
                await model.request(HI)
            finally:
                await model.aclose()
    sent = [seen.headers["x-goog-api-key"] for seen in server.requests]
    assert sent == ["gemini-key", "google-key"]


async def test_a_custom_endpoint_needs_no_key_and_can_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeGemini() as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.base_url + "/")
        model = GeminiModel("gemini-2.5-flash")
        try:
            response = await model.request(HI)
        finally:
            await model.aclose()
    assert model.base_url == server.base_url
    assert response.text == "hello"
    assert server.requests[0].headers["x-goog-api-key"] == "not-needed"
    assert model.rate_limit_key == f"gemini|{server.base_url}|{key_digest('not-needed')}"


def test_name_window_and_rate_limit_key() -> None:
    model = GeminiModel("gemini-2.5-pro", api_key=KEY)
    assert (model.name, model.model_name, model.provider) == (
        "gemini:gemini-2.5-pro",
        "gemini-2.5-pro",
        "gemini",
    )
    assert model.context_window == 1048576
    assert model.rate_limit_key == f"gemini|default|{key_digest(KEY)}"
    assert KEY not in model.rate_limit_key
    assert GeminiModel("gemini-x", api_key=KEY, context_window=1234).context_window == 1234
    assert GeminiModel("gemini-unknown", api_key=KEY).context_window is None


async def test_get_model_resolves_the_provider() -> None:
    async with FakeGemini() as server:
        model = get_model("gemini:gemini-2.5-flash", base_url=server.base_url)
        try:
            assert isinstance(model, GeminiModel)
            assert (model.name, model.model_name) == ("gemini:gemini-2.5-flash", "gemini-2.5-flash")
            assert model.base_url == server.base_url
            assert (await model.request(HI)).text == "hello"
        finally:
            await model.aclose()


async def test_one_client_per_event_loop_and_aclose_releases_it() -> None:
    async with served() as (_, model):
        stale = asyncio.new_event_loop()
        stale.close()
        model._clients[stale] = None  # type: ignore[assignment]  # a loop that has ended
        await model.request(HI)
        client, session = model._clients[asyncio.get_running_loop()]
        await model.request(HI)
        assert model._clients[asyncio.get_running_loop()] == (client, session)
        assert stale not in model._clients
        await model.aclose()
        assert model._clients == {}
        assert session.closed
        await model.aclose()  # twice is fine
        await model.request(HI)  # a new client
        assert model._clients[asyncio.get_running_loop()][0] is not client


def test_without_the_sdk_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.genai", None)
    monkeypatch.delitem(sys.modules, "rlmx.models.gemini")
    with pytest.raises(MissingExtraError, match=r'pip install "rlmx\[gemini\]"') as info:
        importlib.import_module("rlmx.models.gemini")
    assert isinstance(info.value, ImportError)
    assert "'google-genai'" in str(info.value)
    with pytest.raises(MissingExtraError):
        get_model("gemini:gemini-2.5-flash", api_key=KEY)
