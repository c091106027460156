"""Behaviour of the loopback OpenAI server, driven through the real openai SDK and over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

import rlmx.testing
from rlmx.testing import MockOpenAIServer, MockReply, MockRequest, estimate_tokens


def make_client(srv: MockOpenAIServer, api_key: str = "x") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=srv.base_url,
        http_client=openai.DefaultAioHttpClient(),
        max_retries=0,
    )


@pytest.fixture
async def srv() -> AsyncIterator[MockOpenAIServer]:
    async with MockOpenAIServer() as server:
        yield server


async def ask(server: MockOpenAIServer, text: str = "hello", **kwargs: Any) -> Any:
    client = make_client(server)
    try:
        return await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": text}], **kwargs
        )
    finally:
        await client.close()


def test_estimate_tokens_is_deterministic() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 400) == 100
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcdefgh"}]
    assert estimate_tokens(messages) == (1 + 4) + (2 + 4)
    assert rlmx.testing.estimate_message_tokens(messages) == 11


async def test_basic_completion_default_echo(srv: MockOpenAIServer) -> None:
    assert srv.base_url.startswith("http://127.0.0.1:")
    assert srv.base_url.endswith("/v1")
    question = "What is in the context? " * 5
    resp = await ask(srv, question)
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-test"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == f"mock reply to: {question[:50]}"
    assert resp.choices[0].finish_reason == "stop"
    assert len(srv.requests) == 1
    recorded = srv.requests[0]
    assert recorded.model == "gpt-test"
    assert recorded.messages == [{"role": "user", "content": question}]
    assert recorded.body["model"] == "gpt-test"
    assert recorded.last_user_message == question


async def test_handler_text_and_estimated_usage() -> None:
    async with MockOpenAIServer(lambda req: "four") as srv:
        resp = await ask(srv, "x" * 40)
        again = await ask(srv, "x" * 40)
    assert resp.choices[0].message.content == "four"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 10 + 4
    assert resp.usage.completion_tokens == 1
    assert resp.usage.total_tokens == 15
    assert again.usage == resp.usage
    assert srv.usage_totals() == {
        "prompt_tokens": 28,
        "completion_tokens": 2,
        "cached_tokens": 0,
        "requests": 2,
    }


async def test_explicit_usage_and_cached_tokens_round_trip() -> None:
    reply = MockReply("done", prompt_tokens=1000, completion_tokens=7, cached_tokens=600)
    async with MockOpenAIServer(lambda req: reply) as srv:
        resp = await ask(srv)
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 1000
    assert resp.usage.completion_tokens == 7
    assert resp.usage.total_tokens == 1007
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 600
    assert srv.usage_totals()["cached_tokens"] == 600


async def test_finish_reason_is_configurable() -> None:
    async with MockOpenAIServer(lambda req: MockReply("cut", finish_reason="length")) as srv:
        resp = await ask(srv)
    assert resp.choices[0].finish_reason == "length"


async def test_rate_limit_error_with_retry_after() -> None:
    reply = MockReply("", status=429, error_message="slow down", headers={"Retry-After": "7"})
    async with MockOpenAIServer(lambda req: reply) as srv:
        with pytest.raises(openai.RateLimitError) as info:
            await ask(srv)
    assert "slow down" in str(info.value)
    assert info.value.response.headers["retry-after"] == "7"
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == "slow down"
    # Errors are not reported usage.
    assert srv.usage_totals()["requests"] == 0
    assert len(srv.requests) == 1


async def test_server_error_status() -> None:
    async with MockOpenAIServer(lambda req: MockReply("", status=500, error_message="boom")) as srv:
        with pytest.raises(openai.InternalServerError, match="boom"):
            await ask(srv)


async def test_api_key_required() -> None:
    async with MockOpenAIServer(api_key="secret") as srv:
        client = make_client(srv, api_key="wrong")
        try:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        finally:
            await client.close()
        good = make_client(srv, api_key="secret")
        try:
            resp = await good.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        finally:
            await good.close()
    assert resp.choices[0].message.content == "mock reply to: hi"


async def test_async_handler() -> None:
    async def handler(req: MockRequest) -> MockReply:
        await asyncio.sleep(0.01)
        return MockReply(f"async {len(req.messages)}")

    async with MockOpenAIServer(handler) as srv:
        resp = await ask(srv)
    assert resp.choices[0].message.content == "async 1"


async def test_handler_exception_is_500_and_server_survives() -> None:
    calls = 0

    def handler(req: MockRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("handler exploded")
        return "recovered"

    async with MockOpenAIServer(handler) as srv:
        with pytest.raises(openai.InternalServerError, match="handler exploded"):
            await ask(srv)
        resp = await ask(srv)
    assert resp.choices[0].message.content == "recovered"


async def test_streaming_with_usage() -> None:
    text = "The answer is forty two."
    async with MockOpenAIServer(lambda req: text) as srv:
        client = make_client(srv)
        try:
            stream = await client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "q"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            pieces: list[str] = []
            finish: list[str] = []
            usage = None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        pieces.append(choice.delta.content)
                    if choice.finish_reason:
                        finish.append(choice.finish_reason)
        finally:
            await client.close()
    assert "".join(pieces) == text
    assert len(pieces) > 1
    assert finish == ["stop"]
    assert usage is not None
    assert usage.prompt_tokens == estimate_tokens("q") + 4
    assert usage.completion_tokens == estimate_tokens(text)
    assert srv.requests[0].body["stream"] is True


async def test_streaming_without_usage() -> None:
    async with MockOpenAIServer(lambda req: "a b") as srv:
        client = make_client(srv)
        try:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "q"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
        finally:
            await client.close()
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b"


async def test_concurrent_requests_overlap() -> None:
    async with MockOpenAIServer(latency_s=0.2) as srv:
        client = make_client(srv)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": f"q{i}"}]
                    )
                    for i in range(50)
                )
            )
            elapsed = time.monotonic() - started
        finally:
            await client.close()
    assert [r.choices[0].message.content for r in results] == [
        f"mock reply to: q{i}" for i in range(50)
    ]
    assert elapsed < 3.0
    assert srv.max_in_flight > 1
    assert srv.in_flight == 0
    assert srv.usage_totals()["requests"] == 50


async def test_reply_delay_overrides_latency() -> None:
    async with MockOpenAIServer(lambda req: MockReply("late", delay_s=0.3), latency_s=5.0) as srv:
        started = time.monotonic()
        resp = await ask(srv)
        elapsed = time.monotonic() - started
    assert resp.choices[0].message.content == "late"
    assert 0.25 <= elapsed < 3.0


async def test_stop_is_prompt_with_a_reply_in_flight() -> None:
    srv = MockOpenAIServer(lambda req: MockReply("never", delay_s=60))
    await srv.start()
    client = make_client(srv)
    try:
        pending = asyncio.create_task(
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
        )
        while srv.in_flight == 0:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await srv.stop()
        assert time.monotonic() - started < 5.0
        # The SDK's aiohttp transport maps a dropped connection to a timeout error.
        with pytest.raises(openai.APIConnectionError):
            await pending
    finally:
        await client.close()


async def test_models_bad_json_and_unknown_path(srv: MockOpenAIServer) -> None:
    client = make_client(srv)
    try:
        models = await client.models.list()
    finally:
        await client.close()
    assert [m.id for m in models.data] == ["mock-model"]

    async with aiohttp.ClientSession() as session:
        url = f"{srv.base_url}/chat/completions"
        async with session.post(url, data=b"{not json", headers={"Content-Type": "x"}) as r:
            assert r.status == 400
            assert "error" in await r.json()
        async with session.post(url, json={"model": "m"}) as r:
            assert r.status == 400
            assert "messages" in (await r.json())["error"]["message"]
        async with session.get(f"{srv.base_url}/nowhere") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
    assert srv.requests == []


async def test_reset_clears_records(srv: MockOpenAIServer) -> None:
    await ask(srv)
    srv.reset()
    assert srv.requests == []
    assert srv.usage_totals() == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "requests": 0,
    }


def test_thread_mode_from_sync_code() -> None:
    with MockOpenAIServer(lambda req: "sync ok").running() as srv:
        with openai.OpenAI(api_key="x", base_url=srv.base_url, max_retries=0) as client:
            resp = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        request = urllib.request.Request(
            f"{srv.base_url}/chat/completions",
            data=json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "u"}]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as raw:
            body = json.load(raw)
        url = srv.base_url
    assert resp.choices[0].message.content == "sync ok"
    assert body["choices"][0]["message"]["content"] == "sync ok"
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert len(srv.requests) == 2
    # Stopped means the port no longer answers.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/models", timeout=2)


def test_thread_mode_reports_bind_failure() -> None:
    with MockOpenAIServer().running() as srv:
        taken = MockOpenAIServer(port=srv.port)
        with pytest.raises(OSError):
            taken.start_in_thread()


def test_command_line_serves_until_sigterm() -> None:
    # rlmx may be importable only through the test runner's path, not installed.
    src_dir = Path(rlmx.testing.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src_dir), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "rlmx.testing.mock_server", "--port", "0", "--latency", "0.05"]
    cmd += ["--reply", "from cli"]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "mock server printed no URL within 30 s"
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            request = urllib.request.Request(
                f"{url}/chat/completions",
                data=json.dumps(
                    {"model": "m", "messages": [{"role": "user", "content": "q"}]}
                ).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as raw:
                body = json.load(raw)
            assert body["choices"][0]["message"]["content"] == "from cli"
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0
    # Neither an access log nor warnings: the server must not add noise to a client's stderr.
    assert stderr == ""
