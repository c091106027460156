"""Fault injection over real HTTP: the loopback mock server breaks replies on purpose, and
the OpenAI-compatible adapter with rlmx's default wrappers must ride out every transient
fault, fail fast on permanent ones, and never hang."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from rlmx import RLM, Limits
from rlmx.exceptions import (
    ContextLengthError,
    ModelAPIError,
    ModelConnectionError,
    ModelResponseError,
)
from rlmx.models import (
    Message,
    Model,
    OpenAIChatModel,
    RetryModel,
    RetryPolicy,
    ScriptedModel,
    wrap_model,
)
from rlmx.testing import MockOpenAIServer, MockReply, MockRequest

pytestmark = pytest.mark.timeout(60)

HI = [Message("user", "hi")]
FAST = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.05, max_elapsed_s=20.0)


def resilient(server: MockOpenAIServer, policy: RetryPolicy = FAST, **kwargs: Any) -> Model:
    return wrap_model(
        OpenAIChatModel("gpt-4.1-mini", base_url=server.base_url, **kwargs), retry=policy
    )


def failing_first(*replies: MockReply) -> Callable[[MockRequest], str | MockReply]:
    """A handler that gives ``replies`` in turn, then answers "ok" for good."""
    queue = list(replies)

    def handler(_request: MockRequest) -> str | MockReply:
        return queue.pop(0) if queue else "ok"

    return handler


async def ask(model: Model) -> str:
    try:
        return (await model.request(HI)).text
    finally:
        await model.aclose()


# -- each transient fault is retried and the run goes on -------------------------------------


@pytest.mark.parametrize(
    ("fault", "label"),
    [
        (MockReply("", status=429), "429 without Retry-After"),
        (MockReply("", status=500), "500"),
        (MockReply("", status=502), "502"),
        (MockReply("", status=503), "503"),
        (MockReply("", status=529), "529 overloaded"),
        (MockReply("x", fault="reset"), "connection reset mid-body"),
        (MockReply("x", fault="malformed_json"), "malformed JSON"),
        (MockReply("x", fault="empty_choices"), "empty choices"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_a_transient_fault_is_retried(fault: MockReply, label: str) -> None:
    async with MockOpenAIServer(failing_first(fault, fault)) as server:
        assert await ask(resilient(server)) == "ok", label
        assert len(server.requests) == 3


async def test_retry_after_is_obeyed() -> None:
    limited = MockReply("", status=429, headers={"Retry-After": "1"})
    async with MockOpenAIServer(failing_first(limited)) as server:
        assert await ask(resilient(server)) == "ok"
        first, second = server.requests
        # The backoff alone would have waited at most 0.01 s.
        assert second.received_at - first.received_at >= 0.95


async def test_retry_after_ms_is_obeyed() -> None:
    limited = MockReply("", status=429, headers={"retry-after-ms": "400"})
    async with MockOpenAIServer(failing_first(limited)) as server:
        assert await ask(resilient(server)) == "ok"
        first, second = server.requests
        assert second.received_at - first.received_at >= 0.38


async def test_a_read_timeout_is_retried() -> None:
    async with MockOpenAIServer(failing_first(MockReply("late", delay_s=30))) as server:
        started = time.monotonic()
        assert await ask(resilient(server, timeout_s=0.5)) == "ok"
        assert len(server.requests) == 2
        assert time.monotonic() - started < 10


async def test_a_stream_cut_short_is_retried() -> None:
    cut = MockReply("one two three four five six", fault="truncated_stream")
    async with MockOpenAIServer(failing_first(cut)) as server:
        model = resilient(server, stream=True)
        response = await model.request(HI)
        await model.aclose()
        assert response.text == "ok"
        assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
        assert [r.body.get("stream") for r in server.requests] == [True, True]


async def test_a_cut_stream_alone_is_an_unusable_response() -> None:
    cut = MockReply("one two three four five six", fault="truncated_stream")
    async with MockOpenAIServer(lambda _r: cut) as server:
        model = OpenAIChatModel("gpt-4.1-mini", base_url=server.base_url, stream=True)
        with pytest.raises(ModelResponseError, match="stream ended before the reply"):
            await ask(model)


async def test_missing_usage_is_counted_as_zero_with_a_warning() -> None:
    async with MockOpenAIServer(lambda _r: MockReply("fine", fault="no_usage")) as server:
        model = resilient(server)
        with pytest.warns(RuntimeWarning, match="reported no token usage"):
            response = await model.request(HI)
        await model.aclose()
        assert response.text == "fine"
        assert response.usage.input_tokens == 0
        assert len(server.requests) == 1


# -- permanent failures fail fast, typed, and bounded ---------------------------------------


async def test_unauthorized_is_not_retried() -> None:
    async with MockOpenAIServer(lambda _r: MockReply("", status=401)) as server:
        with pytest.raises(ModelAPIError) as info:
            await ask(resilient(server))
        assert info.value.status == 401
        assert len(server.requests) == 1


async def test_a_context_length_error_is_typed_and_not_retried() -> None:
    too_long = MockReply(
        "",
        status=400,
        error_message="This model's maximum context length is 128000 tokens. However, "
        "your messages resulted in 200000 tokens.",
    )
    async with MockOpenAIServer(lambda _r: too_long) as server:
        with pytest.raises(ContextLengthError) as info:
            await ask(resilient(server))
        assert info.value.status == 400
        assert len(server.requests) == 1


async def test_a_permanent_outage_ends_with_a_typed_error_naming_it() -> None:
    down = MockReply("", status=503, error_message="the upstream is down for maintenance")
    policy = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.02)
    async with MockOpenAIServer(lambda _r: down) as server:
        with pytest.raises(ModelAPIError) as info:
            await ask(resilient(server, policy))
    error = info.value
    assert error.status == 503
    assert error.provider == "openai"
    assert error.attempts == 4
    message = str(error)
    assert "openai:gpt-4.1-mini" in message
    assert "HTTP 503" in message
    assert "the upstream is down for maintenance" in message
    assert "gave up after 4 attempts" in message
    assert len(server.requests) == 4


async def test_an_unreachable_server_gives_up_within_the_time_limit() -> None:
    policy = RetryPolicy(initial_delay_s=0.2, max_delay_s=1.0, max_elapsed_s=1.5)
    model = wrap_model(OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1"), retry=policy)
    started = time.monotonic()
    with pytest.raises(ModelConnectionError, match="Could not reach"):
        await ask(model)
    assert time.monotonic() - started < 5


async def test_a_fallback_answers_when_the_primary_is_down() -> None:
    async with (
        MockOpenAIServer(lambda _r: MockReply("", status=503)) as down,
        MockOpenAIServer(lambda _r: "from the fallback") as up,
    ):
        model = wrap_model(
            OpenAIChatModel("gpt-4.1-mini", base_url=down.base_url),
            retry=RetryPolicy(max_attempts=2, initial_delay_s=0.01),
            fallbacks=[OpenAIChatModel("gpt-4.1-nano", base_url=up.base_url)],
        )
        response = await model.request(HI)
        await model.aclose()
        assert response.text == "from the fallback"
        assert response.answered_by == "openai:gpt-4.1-nano"
        assert len(down.requests) == 2 and len(up.requests) == 1


# -- a whole run under a 20% failure rate ----------------------------------------------------

_FAULTS = [
    MockReply("", status=429),
    MockReply("", status=429, headers={"Retry-After": "0.05"}),
    MockReply("", status=500),
    MockReply("", status=502),
    MockReply("", status=503),
    MockReply("x", fault="reset"),
    MockReply("x", fault="malformed_json"),
    MockReply("x", fault="empty_choices"),
]


def flaky_answers(rate: float, seed: int = 7) -> Callable[[MockRequest], str | MockReply]:
    """Answers ``echo:N`` prompts with ``N*N``; a seeded ``rate`` of prompts fail their first
    attempt (and a quarter of those their second too) with one of ``_FAULTS``."""
    attempts: Counter[str] = Counter()

    def handler(request: MockRequest) -> str | MockReply:
        prompt = request.last_user_message
        attempts[prompt] += 1
        digest = int.from_bytes(hashlib.sha256(f"{seed}:{prompt}".encode()).digest()[:8], "big")
        roll = (digest % 10_000) / 10_000
        failures = 0 if roll >= rate else (2 if roll < rate / 4 else 1)
        if attempts[prompt] <= failures:
            return _FAULTS[digest % len(_FAULTS)]
        return str(int(prompt.removeprefix("echo:")) ** 2)

    return handler


def test_a_run_of_200_sub_calls_with_20_percent_failures_gets_the_right_answer() -> None:
    handler = flaky_answers(0.20)
    code = (
        "```repl\n"
        "answers = llm_query_batched([f'echo:{i}' for i in range(200)])\n"
        "bad = [a for a in answers if not a.isdigit()]\n"
        "print(len(bad), sum(int(a) for a in answers if a.isdigit()))\n"
        "```"
    )
    root = ScriptedModel([code, "FINAL_VAR(answers)"])
    with MockOpenAIServer(handler).running() as server:
        rlm = RLM(
            root,
            "openai:gpt-4.1-nano",
            sub_base_url=server.base_url,
            sandbox="local",
            retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.1),
            limits=Limits(max_iterations=3, max_concurrency=32),
        )
        result = rlm.completion("unused", "sum of squares")
        requests = len(server.requests)
    assert isinstance(rlm.sub_model, RetryModel)
    observation = root.calls[1].messages[-1].content
    assert f"0 {sum(i * i for i in range(200))}" in observation
    assert result.sub_calls == 200
    # Every failed attempt was retried: more requests than sub-calls, one per failure.
    assert requests > 200
    assert result.usage.by_model["openai:gpt-4.1-nano"].requests == 200


def test_a_permanent_sub_model_outage_comes_back_to_the_model_as_an_error() -> None:
    down = MockReply("", status=503, error_message="region unavailable")
    root = ScriptedModel(["```repl\nprint(llm_query('hello'))\n```", "FINAL(done)"])
    with MockOpenAIServer(lambda _r: down).running() as server:
        rlm = RLM(
            root,
            "openai:gpt-4.1-nano",
            sub_base_url=server.base_url,
            sandbox="local",
            retry=RetryPolicy(max_attempts=3, initial_delay_s=0.01),
            limits=Limits(max_iterations=3),
        )
        result = rlm.completion("ctx", "q")
    assert result.answer == "done"
    observation = root.calls[1].messages[-1].content
    assert "HTTP 503" in observation and "region unavailable" in observation
    assert "gave up after 3 attempts" in observation


def test_a_permanent_root_outage_fails_the_run_with_partial_result_kept() -> None:
    down = MockReply("", status=502, error_message="bad gateway")
    with MockOpenAIServer(lambda _r: down).running() as server:
        rlm = RLM(
            "openai:gpt-4.1-mini",
            base_url=server.base_url,
            sandbox="local",
            retry=RetryPolicy(max_attempts=2, initial_delay_s=0.01),
        )
        with pytest.raises(ModelAPIError) as info:
            rlm.completion("ctx", "q")
    assert info.value.status == 502
    assert info.value.result is not None
    assert "openai:gpt-4.1-mini" in str(info.value) and "bad gateway" in str(info.value)


def test_the_cli_reports_a_permanent_outage_without_a_traceback(tmp_path: Any) -> None:
    context = tmp_path / "ctx.txt"
    context.write_text("some text")
    down = MockReply("", status=503, error_message="maintenance window")
    with MockOpenAIServer(lambda _r: down).running() as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "rlmx",
                "run",
                "--model",
                "openai:gpt-4.1-mini",
                "--base-url",
                server.base_url,
                "--context",
                str(context),
                "--sandbox",
                "local",
                "--retries",
                "2",
                "--quiet",
                "--json",
                "q",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        requests = len(server.requests)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "HTTP 503" in proc.stderr and "maintenance window" in proc.stderr
    assert "gave up after 3 attempts" in proc.stderr
    assert requests == 3
    payload = json.loads(proc.stdout)
    assert "maintenance window" in payload["error"]


# -- fan-out through the shared limiter keeps going under concurrency ------------------------


async def test_concurrent_requests_all_succeed_through_faults() -> None:
    counter = itertools.count()

    def handler(request: MockRequest) -> str | MockReply:
        n = next(counter)
        if n % 5 == 0:
            return _FAULTS[n % len(_FAULTS)]
        return request.last_user_message.upper()

    async with MockOpenAIServer(handler) as server:
        model = resilient(server)
        replies = await asyncio.gather(
            *(model.request([Message("user", f"p{i}")]) for i in range(50))
        )
        await model.aclose()
    assert [r.text for r in replies] == [f"P{i}" for i in range(50)]


def test_errors_are_exported_types() -> None:
    assert issubclass(ContextLengthError, ModelAPIError)
