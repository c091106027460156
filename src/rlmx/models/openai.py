"""OpenAI Chat Completions, for OpenAI and every server that speaks its protocol.

One class serves OpenAI, OpenRouter, vLLM, Ollama, LM Studio, the llama.cpp server,
Groq and Together: a *preset* gives the base URL and the variable holding the key.

A plain request is one JSON POST over a shared aiohttp session, parsed with ``json``: the
SDK's request building and response models cost about 1.5 ms of CPU per call, which on
one event loop caps a fan-out of 1,000 sub-calls at 256 concurrent near 2.5x the ideal
wall time (benchmarks/fanout.py); the direct route costs about 0.25 ms. Streaming
requests go through the SDK (with its aiohttp transport), which parses server-sent events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    import openai

from rlmx.exceptions import (
    ContextLengthError,
    ModelAPIError,
    ModelConnectionError,
    ModelResponseError,
)
from rlmx.models._common import (
    OnceWarning,
    PerLoop,
    check_requests_allowed,
    key_digest,
    looks_like_context_length,
    parse_retry_after,
    requests_allowed,
    resolve_api_key,
    window_for,
)
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings, messages_to_dicts
from rlmx.usage import RequestUsage

__all__ = ["PRESETS", "OpenAIChatModel", "OpenAIPreset", "requests_allowed"]


@dataclass(frozen=True, slots=True)
class OpenAIPreset:
    """Where an OpenAI-compatible provider lives and how it is authenticated."""

    base_url: str
    key_env: str | None
    key_required: bool
    base_url_env: str | None = None
    self_hosted: bool = False
    """Runs on the user's own hardware: requests cost nothing per token."""


PRESETS: dict[str, OpenAIPreset] = {
    "openai": OpenAIPreset(
        "https://api.openai.com/v1", "OPENAI_API_KEY", True, base_url_env="OPENAI_BASE_URL"
    ),
    "openrouter": OpenAIPreset("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", True),
    "groq": OpenAIPreset("https://api.groq.com/openai/v1", "GROQ_API_KEY", True),
    "together": OpenAIPreset("https://api.together.xyz/v1", "TOGETHER_API_KEY", True),
    "vllm": OpenAIPreset(
        "http://localhost:8000/v1",
        "VLLM_API_KEY",
        False,
        base_url_env="VLLM_BASE_URL",
        self_hosted=True,
    ),
    "ollama": OpenAIPreset(
        "http://localhost:11434/v1", None, False, base_url_env="OLLAMA_BASE_URL", self_hosted=True
    ),
    "lmstudio": OpenAIPreset(
        "http://localhost:1234/v1", None, False, base_url_env="LMSTUDIO_BASE_URL", self_hosted=True
    ),
    "llamacpp-server": OpenAIPreset(
        "http://localhost:8080/v1",
        "LLAMACPP_API_KEY",
        False,
        base_url_env="LLAMACPP_BASE_URL",
        self_hosted=True,
    ),
}


class OpenAIChatModel(Model):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``stream=True`` receives the reply as server-sent events (with usage in the last
    event): a long generation then keeps the connection visibly alive, and a stream that
    stops before its end is reported as an unusable (retryable) response. The SDK's own
    retries (streamed requests only) are off by default (``max_retries=0``):
    :class:`~rlmx.models.RetryModel` retries, obeying ``Retry-After``.
    """

    def __init__(
        self,
        model_name: str,
        *,
        provider: str = "openai",
        base_url: str | None = None,
        api_key: str | None = None,
        settings: ModelSettings | None = None,
        context_window: int | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 0,
        stream: bool = False,
    ) -> None:
        preset = PRESETS.get(provider, PRESETS["openai"])
        env_base = os.environ.get(preset.base_url_env) if preset.base_url_env else None
        self.base_url = (base_url or env_base or preset.base_url).rstrip("/")
        api_key = resolve_api_key(
            api_key,
            provider,
            [preset.key_env] if preset.key_env else [],
            required=preset.key_required,
            custom_endpoint=self.base_url != preset.base_url.rstrip("/"),
        )
        self.name = f"{provider}:{model_name}"
        self.model_name = model_name
        self.default_settings = settings or ModelSettings()
        self.context_window = window_for(model_name, context_window)
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self.stream = stream
        self._self_hosted = preset.self_hosted and provider in PRESETS
        # One aiohttp session (and SDK client, for streaming) per event loop.
        self._clients: PerLoop[openai.AsyncOpenAI] = PerLoop()
        self._sessions: PerLoop[aiohttp.ClientSession] = PerLoop()
        self._url = f"{self.base_url}/chat/completions"
        self._no_usage = OnceWarning(
            f"{self.name} at {self.base_url} reported no token usage; "
            "its requests are counted with zero tokens."
        )

    @property
    def rate_limit_key(self) -> str:
        return f"{self.provider}|{self.base_url}|{key_digest(self._api_key)}"

    def cost_of(self, usage: RequestUsage, response_model: str | None = None) -> Decimal | None:
        if self._self_hosted:
            return Decimal(0)  # your own hardware: no per-token price
        return super().cost_of(usage, response_model)

    def _client(self) -> openai.AsyncOpenAI:
        import openai  # only streaming uses the SDK; importing it costs ~0.7 s

        return self._clients.current(
            lambda: openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self._timeout_s,
                max_retries=self._max_retries,
                http_client=openai.DefaultAioHttpClient(timeout=self._timeout_s),
            )
        )

    def _session(self) -> aiohttp.ClientSession:
        return self._sessions.current(self._new_session)

    def _new_session(self) -> aiohttp.ClientSession:
        from rlmx import __version__

        return aiohttp.ClientSession(
            # Concurrency is bounded by the run's max_concurrency, not by the pool.
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"rlmx/{__version__}",
            },
        )

    async def aclose(self) -> None:
        client = self._clients.pop_current()
        if client is not None:
            await client.close()
        session = self._sessions.pop_current()
        if session is not None:
            await session.close()

    def _request_kwargs(
        self, messages: Sequence[Message], settings: ModelSettings
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model_name, "messages": messages_to_dicts(messages)}
        if settings.temperature is not None:
            kwargs["temperature"] = settings.temperature
        if settings.max_tokens is not None:
            kwargs["max_tokens"] = settings.max_tokens
        if settings.top_p is not None:
            kwargs["top_p"] = settings.top_p
        if settings.seed is not None:
            kwargs["seed"] = settings.seed
        if settings.stop:
            kwargs["stop"] = list(settings.stop)
        if settings.timeout_s is not None:
            kwargs["timeout"] = settings.timeout_s
        if settings.extra_body:
            kwargs["extra_body"] = dict(settings.extra_body)
        return kwargs

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        check_requests_allowed(self.name, self.base_url, self.base_url)
        merged = self.default_settings.merged(settings)
        kwargs = self._request_kwargs(messages, merged)
        if not self.stream:
            return await self._post(kwargs)
        import openai

        try:
            return await self._streamed(kwargs)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APIConnectionError as exc:
            # The SDK's aiohttp transport reports a refused connection as "Request timed
            # out"; the transport error it wraps says what really happened.
            detail = str(exc.__cause__ or "") or str(exc.message or exc)
            raise ModelConnectionError(
                f"Could not reach {self.name} at {self.base_url} "
                f"({detail.rstrip('.')}). "
                "Check that the server is running and the base URL is right.",
                model=self.name,
            ) from None
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            raise ModelResponseError(
                f"{self.name} returned an unusable response: {exc}", model=self.name
            ) from None

    async def _post(self, kwargs: dict[str, Any]) -> ModelResponse:
        """One non-streaming request, straight over aiohttp (see the module docstring)."""
        body = {k: v for k, v in kwargs.items() if k not in ("timeout", "extra_body")}
        body.update(kwargs.get("extra_body") or {})
        timeout = kwargs.get("timeout")
        options: dict[str, Any] = {}
        if timeout is not None:  # else the session's timeout (None here would mean none)
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session().post(
                self._url, data=json.dumps(body).encode(), **options
            ) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError:
            limit = timeout if timeout is not None else self._timeout_s
            raise ModelConnectionError(
                f"{self.name} at {self.base_url} did not answer within {limit:g} s "
                "(request timed out).",
                model=self.name,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise ModelConnectionError(
                f"Could not reach {self.name} at {self.base_url} ({exc.os_error or exc}). "
                "Check that the server is running and the base URL is right.",
                model=self.name,
            ) from None
        except aiohttp.ClientError as exc:
            # Reset or closed mid-reply, a broken body: the server went away while answering.
            raise ModelConnectionError(
                f"The connection to {self.name} at {self.base_url} failed during the reply "
                f"({type(exc).__name__}: {exc or 'no detail'}).",
                model=self.name,
            ) from None
        if status >= 400:
            raise self._http_error(status, raw, headers)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelResponseError(
                f"{self.name} returned an unusable response: not JSON ({exc}): "
                f"{raw[:200].decode(errors='replace')!r}",
                model=self.name,
            ) from None
        return self._to_response(data)

    async def _streamed(self, kwargs: dict[str, Any]) -> ModelResponse:
        stream = await self._client().chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        pieces: list[str] = []
        finish_reason: str | None = None
        model_name: str | None = None
        usage: Any = None
        async for chunk in stream:
            model_name = chunk.model or model_name
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices or ():
                if choice.index != 0:
                    continue
                if choice.delta is not None and choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason is not None:
                    finish_reason = choice.finish_reason
        if finish_reason is None:
            raise ModelResponseError(
                f"{self.name}'s reply stream ended before the reply was finished "
                f"({len(pieces)} pieces received, no finish_reason).",
                model=self.name,
            )
        return ModelResponse(
            text="".join(pieces),
            usage=self._usage(usage),
            model_name=model_name or self.model_name,
            finish_reason=finish_reason,
        )

    def _http_error(self, status: int, raw: bytes, headers: Any) -> ModelAPIError:
        try:
            body: Any = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = raw.decode(errors="replace")
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            detail = str(error.get("message") or error)
            body = error
        elif isinstance(error, str):
            detail = error
        else:
            detail = str(body)[:500] or f"HTTP {status}"
        return self._api_error(status, detail, headers, body)

    def _status_error(self, exc: openai.APIStatusError) -> ModelAPIError:
        return self._api_error(exc.status_code, exc.message, exc.response.headers, exc.body)

    def _api_error(self, status: int, detail: str, headers: Any, body: Any) -> ModelAPIError:
        retry_after = parse_retry_after(headers)
        code = body.get("code") if isinstance(body, dict) else None
        if status in (400, 413, 422) and looks_like_context_length(code, detail):
            return ContextLengthError(
                f"{self.name} refused the prompt as too long for its context window "
                f"(HTTP {status}: {detail}).",
                model=self.name,
                status=status,
                body=body,
                context_window=self.context_window,
            )
        hint = ""
        if status == 401:
            preset = PRESETS.get(self.provider)
            var = preset.key_env if preset and preset.key_env else "the API key"
            hint = f" Check {var}."
        elif status == 404:
            hint = f" Check the model name {self.model_name!r} and the base URL {self.base_url}."
        elif status == 429:
            hint = " The provider is rate limiting; slow down or raise your quota."
        return ModelAPIError(
            f"{self.name} failed with HTTP {status}: {detail}.{hint}",
            model=self.name,
            status=status,
            body=body,
            retry_after_s=retry_after,
        )

    def _to_response(self, data: Any) -> ModelResponse:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices, list):
            raise ModelResponseError(f"{self.name} returned no choices", model=self.name)
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise ModelResponseError(
                f"{self.name} returned a choice with no message", model=self.name
            )
        content = message.get("content")
        model_name = data.get("model")
        return ModelResponse(
            text=content if isinstance(content, str) else "",
            usage=self._usage(data.get("usage")),
            model_name=model_name
            if isinstance(model_name, str) and model_name
            else self.model_name,
            finish_reason=choice.get("finish_reason"),
        )

    def _usage(self, usage: Any) -> RequestUsage:
        if usage is None:
            self._no_usage.warn()
            return RequestUsage()
        # A JSON object on the direct route, an SDK model when streaming.
        prompt_details = _field(usage, "prompt_tokens_details")
        completion_details = _field(usage, "completion_tokens_details")
        return RequestUsage(
            input_tokens=_count(_field(usage, "prompt_tokens")),
            output_tokens=_count(_field(usage, "completion_tokens")),
            cached_input_tokens=_count(_field(prompt_details, "cached_tokens")),
            reasoning_tokens=_count(_field(completion_details, "reasoning_tokens")),
        )


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
