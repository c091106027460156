"""A loopback OpenAI Chat Completions server for tests, fault injection and benchmarks.

``MockOpenAIServer`` is a real HTTP server (aiohttp) bound to a local port, so the code under
test talks to it through its normal transport: the ``openai`` SDK, or rlmx's CLI running in
another process. A *handler* decides each reply; the server records every request, reports
deterministic token usage, and can add latency per request without serialising requests.

Run it inside an event loop (``async with MockOpenAIServer(...) as srv``), in a background
thread for synchronous tests (``with MockOpenAIServer(...).running() as srv``), or as its own
process::

    python -m rlmx.testing.mock_server --port 0 --latency 0.2 [--reply TEXT]

which prints the base URL on its first line of standard output and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import json
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

__all__ = [
    "FAULTS",
    "Fault",
    "Handler",
    "MockOpenAIServer",
    "MockReply",
    "MockRequest",
    "estimate_message_tokens",
    "estimate_tokens",
    "main",
]

# OpenAI's error "type" for each status, so SDK clients see bodies shaped like the real ones.
_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout", None),
    409: ("conflict", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
    504: ("server_error", None),
}

_STREAM_PIECE = re.compile(r"\S+\s*|\s+")


@dataclass
class MockRequest:
    """One chat-completion request as the server received it, kept for assertions."""

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    received_at: float  # time.monotonic()

    @property
    def last_user_message(self) -> str:
        """The text of the last ``user`` message, or ``""`` if there is none."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""


@dataclass
class MockReply:
    """What a handler may return instead of a plain string, to control every part of a reply."""

    content: str
    prompt_tokens: int | None = None  # None: estimated from the request's messages
    completion_tokens: int | None = None  # None: estimated from ``content``
    cached_tokens: int = 0
    status: int = 200  # non-200: an OpenAI-style error body carrying ``error_message``
    error_message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float | None = None  # overrides the server's latency for this reply
    finish_reason: str = "stop"
    fault: Fault | None = None
    """Break the reply on purpose (see :data:`FAULTS`)."""


Fault = Literal["reset", "malformed_json", "empty_choices", "no_usage", "truncated_stream"]
FAULTS: tuple[Fault, ...] = (
    "reset",  # headers and half the body, then the connection is aborted
    "malformed_json",  # a 200 whose body is not valid JSON
    "empty_choices",  # a well-formed completion with "choices": []
    "no_usage",  # a completion without a "usage" field
    "truncated_stream",  # SSE chunks that stop before the finish reason and [DONE]
)


Handler = Callable[[MockRequest], str | MockReply | Awaitable[str | MockReply]]


def _content_text(content: Any) -> str:
    # Content is a string, or a list of typed parts (multimodal); only text parts count.
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return str(content)


def estimate_message_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Deterministic prompt-size estimate: each content's estimate plus 4 per message."""
    return sum(estimate_tokens(_content_text(m.get("content"))) + 4 for m in messages)


def estimate_tokens(text: str | Sequence[Mapping[str, Any]]) -> int:
    """Deterministic token estimate: ``max(1, ceil(len(text) / 4))``.

    Given a list of chat messages instead of a string, returns
    :func:`estimate_message_tokens` (the sum over contents plus 4 per message).
    """
    if isinstance(text, str):
        return max(1, math.ceil(len(text) / 4))
    return estimate_message_tokens(text)


def _default_handler(request: MockRequest) -> str:
    return f"mock reply to: {request.last_user_message[:50]}"


def _error_body(status: int, message: str) -> dict[str, Any]:
    err_type, code = _ERROR_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def _error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(_error_body(status, message), status=status, headers=headers)


class MockOpenAIServer:
    """A loopback HTTP server speaking the OpenAI Chat Completions protocol.

    Endpoints: ``POST /v1/chat/completions`` (JSON, or SSE when ``"stream": true``) and
    ``GET /v1/models``. ``handler`` maps each :class:`MockRequest` to a string or a
    :class:`MockReply` (sync or async); sync handlers run directly on the server's event loop,
    which in thread mode is the server thread. ``latency_s`` may be changed while running.
    """

    # How long stop() lets in-flight replies finish before cancelling them: a test double must
    # stop promptly even when a fault-injection handler asked for a very long delay. aiohttp
    # waits this long twice (graceful, then after cancelling), so stop() takes at most ~2x.
    shutdown_timeout_s: float = 0.5
    # aiohttp's default listen backlog (128) drops SYNs in a burst of new connections, and
    # each dropped SYN costs the client a 1 s retransmit: benchmarks burst hundreds at once.
    backlog: int = 1024

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        model_name: str = "mock-model",
    ) -> None:
        self.handler: Handler = handler if handler is not None else _default_handler
        self.latency_s = latency_s
        self.host = host
        self.port = port
        self.api_key = api_key
        self.model_name = model_name
        self.requests: list[MockRequest] = []
        self.max_in_flight = 0
        self.in_flight = 0
        # Requests are recorded on the server's loop but read from the test's thread.
        self._lock = threading.Lock()
        self._totals = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
        self._ok_replies = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- public state -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>/v1``; valid once the server has started."""
        if self._runner is None:
            raise RuntimeError("MockOpenAIServer is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def usage_totals(self) -> dict[str, int]:
        """Sums of the usage the server reported, over its 200 replies, and their count."""
        with self._lock:
            return {**self._totals, "requests": self._ok_replies}

    def reset(self) -> None:
        """Forget recorded requests, usage totals and the in-flight peak."""
        with self._lock:
            self.requests.clear()
            self._totals = dict.fromkeys(self._totals, 0)
            self._ok_replies = 0
            self.max_in_flight = self.in_flight

    # -- running inside an event loop ---------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving on the running event loop."""
        if self._runner is not None:
            raise RuntimeError("MockOpenAIServer is already running")
        app = web.Application(middlewares=[self._json_http_errors])
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.shutdown_timeout_s, handle_signals=False
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=self.backlog)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving; in-flight replies get ``shutdown_timeout_s`` to finish, then are cut."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- running in a background thread ------------------------------------------------------

    def start_in_thread(self, timeout_s: float = 10.0) -> None:
        """Serve from a background thread with its own event loop; returns once bound."""
        if self._thread is not None:
            raise RuntimeError("MockOpenAIServer is already running in a thread")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.stop()

        thread = threading.Thread(
            target=asyncio.run, args=(serve(),), name="MockOpenAIServer", daemon=True
        )
        thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"MockOpenAIServer did not start within {timeout_s} s")
        if failure:
            thread.join(timeout_s)
            raise failure[0]
        self._thread = thread

    def stop_thread(self, timeout_s: float = 10.0) -> None:
        """Stop the server started by :meth:`start_in_thread` and join its thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._thread_loop, self._thread_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"MockOpenAIServer thread did not stop within {timeout_s} s")
        self._thread_loop = self._thread_stop = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """``with MockOpenAIServer(...).running() as srv:`` serves from a background thread."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_thread()

    # -- HTTP handlers -----------------------------------------------------------------------

    @web.middleware
    async def _json_http_errors(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        # aiohttp answers unknown routes with text/plain; SDKs expect OpenAI-style JSON.
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error_response(exc.status, f"{exc.reason}: {request.method} {request.path}")

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization", "") == f"Bearer {self.api_key}":
            return None
        return _error_response(401, "Incorrect API key provided.")

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "rlmx"}
        return web.json_response({"object": "list", "data": [model]})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error_response(400, f"Invalid JSON body: {exc}")
        if not isinstance(body, dict):
            return _error_response(400, "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error_response(400, "'messages' must be a list of message objects.")

        mock_request = MockRequest(
            model=str(body.get("model") or self.model_name),
            messages=messages,
            body=body,
            received_at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(mock_request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._reply(request, mock_request)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _reply(self, request: web.Request, mock_request: MockRequest) -> web.StreamResponse:
        try:
            result: object = self.handler(mock_request)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, str):
                result = MockReply(content=result)
            if not isinstance(result, MockReply):
                raise TypeError(f"handler returned {type(result).__name__}, not str or MockReply")
            reply = result
        except Exception as exc:
            # A broken handler is a test bug to surface to the client, not a reason to stop.
            await self._sleep(self.latency_s)
            return _error_response(500, f"mock handler failed: {type(exc).__name__}: {exc}")

        await self._sleep(reply.delay_s if reply.delay_s is not None else self.latency_s)
        if reply.status != 200:
            message = reply.error_message or reply.content or f"mock error {reply.status}"
            return _error_response(reply.status, message, reply.headers)

        if reply.fault in ("reset", "malformed_json"):
            return await self._broken_body(request, reply.fault)
        usage = self._usage(mock_request, reply)
        if reply.fault is None or reply.fault == "no_usage":
            with self._lock:
                for key in self._totals:
                    self._totals[key] += usage[key]
                self._ok_replies += 1

        completion_id = f"chatcmpl-mock-{next(self._ids)}"
        created = int(time.time())
        body = mock_request.body
        if body.get("stream") is True:
            stream_options = body.get("stream_options")
            include_usage = (
                isinstance(stream_options, dict) and stream_options.get("include_usage") is True
            )
            return await self._stream(
                request, mock_request, reply, completion_id, created, usage, include_usage
            )
        if reply.fault == "truncated_stream":
            return await self._broken_body(request, "reset")

        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": mock_request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": self._usage_payload(usage),
        }
        if reply.fault == "empty_choices":
            payload["choices"] = []
        elif reply.fault == "no_usage":
            del payload["usage"]
        return web.json_response(payload, headers=reply.headers)

    @staticmethod
    async def _broken_body(request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "malformed_json":
            return web.Response(
                text='{"id": "chatcmpl-broken", "choices": [{"message": {"content": "he',
                content_type="application/json",
            )
        # Promise a long body, send part of it, then drop the connection.
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": "4096"}
        )
        await response.prepare(request)
        await response.write(b'{"id": "chatcmpl-reset", "object": "chat.completion", "cho')
        transport = request.transport
        if transport is not None:
            transport.abort()
        return response

    async def _stream(
        self,
        request: web.Request,
        mock_request: MockRequest,
        reply: MockReply,
        completion_id: str,
        created: int,
        usage: dict[str, int],
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **reply.headers,
            }
        )
        await response.prepare(request)

        def chunk(choices: list[dict[str, Any]], usage_payload: Any = None) -> bytes:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": mock_request.model,
                "choices": choices,
            }
            if include_usage:
                # The real API sends usage: null on every chunk but the last when asked for it.
                data["usage"] = usage_payload
            return f"data: {json.dumps(data)}\n\n".encode()

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        await response.write(chunk([choice({"role": "assistant", "content": ""})]))
        pieces = _STREAM_PIECE.findall(reply.content)
        if reply.fault == "truncated_stream":
            # Half the reply, then the server closes the stream as if it had crashed.
            for piece in pieces[: max(1, len(pieces) // 2)]:
                await response.write(chunk([choice({"content": piece})]))
            await response.write_eof()
            return response
        for piece in pieces:
            await response.write(chunk([choice({"content": piece})]))
        await response.write(chunk([choice({}, reply.finish_reason)]))
        if include_usage:
            await response.write(chunk([], self._usage_payload(usage)))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    async def _sleep(delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    @staticmethod
    def _usage(mock_request: MockRequest, reply: MockReply) -> dict[str, int]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = estimate_message_tokens(mock_request.messages)
        completion = reply.completion_tokens
        if completion is None:
            completion = estimate_tokens(reply.content)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cached_tokens": reply.cached_tokens,
        }

    @staticmethod
    def _usage_payload(usage: Mapping[str, int]) -> dict[str, Any]:
        return {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]},
        }


# -- command line ------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rlmx.testing.mock_server",
        description="Serve a mock OpenAI Chat Completions API on a loopback port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--reply", default=None, help="fixed reply text (default: echo)")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--model", default="mock-model", help="model name to list")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    handler: Handler | None = None
    if args.reply is not None:
        text: str = args.reply

        def handler(_request: MockRequest) -> str:
            return text

    server = MockOpenAIServer(
        handler,
        latency_s=args.latency,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        model_name=args.model,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        # The parent process reads this line to learn the port; it must not sit in a buffer.
        print(server.base_url, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rlmx.testing.mock_server``."""
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
