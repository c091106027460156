"""Anthropic's Messages API (Claude), through the official ``anthropic`` SDK.

The SDK is an optional extra (``pip install "rlmx[anthropic]"``); importing this module
without it raises :class:`~rlmx.exceptions.MissingExtraError`. Requests go through the
SDK's aiohttp transport, as the OpenAI adapter's do, and the SDK's own retries are off:
:class:`~rlmx.models.RetryModel` retries, honouring ``Retry-After``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlmx.exceptions import (
    ConfigError,
    ContextLengthError,
    MissingExtraError,
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
    resolve_api_key,
    window_for,
)
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings
from rlmx.usage import RequestUsage

try:
    import anthropic
    from anthropic.types import TextBlock, Usage
except ImportError:
    raise MissingExtraError("anthropic", "anthropic", "anthropic") from None

if TYPE_CHECKING:
    from anthropic.types import MessageParam, TextBlockParam

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MAX_TOKENS", "AnthropicModel"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 8192
"""The Messages API refuses a request without ``max_tokens``; this fits every current model."""


class AnthropicModel(Model):
    """A Claude model behind Anthropic's ``/v1/messages`` endpoint.

    System messages go into the request's ``system`` field (several are joined with blank
    lines), and consecutive messages of the same role are merged into one message of
    several text blocks, because the API wants user and assistant turns to alternate.
    ``temperature`` and ``top_p`` are sent as JSON fields (recent SDKs no longer take them
    as arguments; some recent models reject them), ``ModelSettings.seed`` is ignored (the
    API has no seed), and ``extra_body`` is merged into the request's JSON as it is (e.g.
    ``{"top_k": 40}``), winning over the fields rlmx sets.
    ``base_url`` (or ``ANTHROPIC_BASE_URL``) points the model at another server, such as a
    proxy; with one, a missing key is allowed.
    """

    def __init__(
        self,
        model_name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        settings: ModelSettings | None = None,
        context_window: int | None = None,
        timeout_s: float = 600.0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self.base_url = base_url.rstrip("/") if base_url else None
        """Where requests go; ``None`` means Anthropic's public endpoint."""
        api_key = resolve_api_key(
            api_key,
            "anthropic",
            ["ANTHROPIC_API_KEY"],
            custom_endpoint=self.base_url is not None and self.base_url != DEFAULT_BASE_URL,
        )
        self.name = f"anthropic:{model_name}"
        self.model_name = model_name
        self.default_settings = settings or ModelSettings()
        self.context_window = window_for(model_name, context_window)
        self.max_tokens = max_tokens
        self._api_key = api_key
        self._timeout_s = timeout_s
        # aiohttp sessions belong to one event loop: keep one client per loop.
        self._clients: PerLoop[anthropic.AsyncAnthropic] = PerLoop()
        self._no_usage = OnceWarning(
            f"{self.name} at {self._endpoint} reported no token usage; "
            "its requests are counted with zero tokens."
        )

    @property
    def rate_limit_key(self) -> str:
        return f"{self.provider}|{self.base_url or 'default'}|{key_digest(self._api_key)}"

    @property
    def _endpoint(self) -> str:
        return self.base_url or DEFAULT_BASE_URL

    def _client(self) -> anthropic.AsyncAnthropic:
        return self._clients.current(self._new_client)

    def _new_client(self) -> anthropic.AsyncAnthropic:
        try:
            http_client = anthropic.DefaultAioHttpClient(timeout=self._timeout_s)
        except (AttributeError, RuntimeError):  # pragma: no cover - SDK without aiohttp
            http_client = None
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self._endpoint,
            timeout=self._timeout_s,
            max_retries=0,
            http_client=http_client,
        )

    async def aclose(self) -> None:
        client = self._clients.pop_current()
        if client is not None:
            await client.close()

    def _request_kwargs(
        self, messages: Sequence[Message], settings: ModelSettings
    ) -> dict[str, Any]:
        system, conversation = _conversation(messages)
        if not conversation:
            raise ConfigError(
                f"{self.name} needs at least one user or assistant message, not only system ones."
            )
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": conversation,
            "max_tokens": self.max_tokens if settings.max_tokens is None else settings.max_tokens,
        }
        if system:
            kwargs["system"] = system
        if settings.stop:
            kwargs["stop_sequences"] = list(settings.stop)
        if settings.timeout_s is not None:
            kwargs["timeout"] = settings.timeout_s
        # Recent SDKs dropped the temperature and top_p arguments, though the API still
        # takes them for the models that support them: send them as plain JSON fields.
        body: dict[str, Any] = {}
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        body.update(settings.extra_body)
        if body:
            kwargs["extra_body"] = body
        return kwargs

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        check_requests_allowed(self.name, self.base_url, self._endpoint)
        merged = self.default_settings.merged(settings)
        kwargs = self._request_kwargs(messages, merged)
        try:
            # Keyword arguments built at run time type as Any; the non-streaming call
            # returns a Message.
            reply: anthropic.types.Message = await self._client().messages.create(**kwargs)
        except anthropic.APIStatusError as exc:
            raise self._status_error(exc) from None
        except anthropic.APITimeoutError:
            timeout = merged.timeout_s if merged.timeout_s is not None else self._timeout_s
            raise ModelConnectionError(
                f"Could not reach {self.name} at {self._endpoint} (no reply within {timeout:g}s).",
                model=self.name,
            ) from None
        except anthropic.APIConnectionError as exc:
            # The SDK says only "Connection error."; the transport error it wraps says more.
            detail = str(exc.__cause__ or "") or exc.message
            raise ModelConnectionError(
                f"Could not reach {self.name} at {self._endpoint} ({detail.rstrip('.')}). "
                "Check the network, and the base URL if you set one.",
                model=self.name,
            ) from None
        except (anthropic.AnthropicError, json.JSONDecodeError) as exc:
            raise ModelResponseError(
                f"{self.name} returned an unusable response: {exc}", model=self.name
            ) from None
        return self._to_response(reply)

    def _status_error(self, exc: anthropic.APIStatusError) -> ModelAPIError:
        status = exc.status_code
        body = exc.body
        # The SDK's message repeats the whole body; the provider's own sentence reads better.
        error = body.get("error") if isinstance(body, dict) else None
        detail = exc.message
        kind = None
        if isinstance(error, dict):
            detail = str(error.get("message") or detail)
            kind = error.get("type")
        if status in (400, 413, 422) and looks_like_context_length(detail):
            return ContextLengthError(
                f"{self.name} refused the prompt as too long for its context window "
                f"(HTTP {status}: {detail}).",
                model=self.name,
                status=status,
                body=body,
                context_window=self.context_window,
            )
        hint = ""
        if status in (401, 403):
            hint = " Check ANTHROPIC_API_KEY."
        elif status == 404:
            hint = f" Check the model name {self.model_name!r}."
        elif status == 429:
            hint = " The provider is rate limiting; slow down or raise your quota."
        elif status == 529 or kind == "overloaded_error":
            hint = " Anthropic is overloaded; try again shortly."
        return ModelAPIError(
            f"{self.name} failed with HTTP {status}: {detail.rstrip('.')}.{hint}",
            model=self.name,
            status=status,
            body=body,
            retry_after_s=parse_retry_after(exc.response.headers),
        )

    def _to_response(self, reply: anthropic.types.Message) -> ModelResponse:
        # Without strict validation the SDK builds a Message from any JSON object, so the
        # declared types are not guaranteed: check what arrived.
        content: object = reply.content
        if not isinstance(content, list):
            raise ModelResponseError(
                f"{self.name} returned a reply without a content list", model=self.name
            )
        # Thinking blocks (and tool calls) are not part of the answer text.
        text = "".join(block.text for block in content if isinstance(block, TextBlock))
        return ModelResponse(
            text=text,
            usage=self._usage(reply.usage),
            model_name=reply.model or self.model_name,
            finish_reason=reply.stop_reason,
        )

    def _usage(self, usage: object) -> RequestUsage:
        if not isinstance(usage, Usage):
            self._no_usage.warn()
            return RequestUsage()
        # Anthropic counts the uncached, cache-written and cache-read parts of the prompt
        # separately; rlmx's input_tokens is the whole prompt.
        cache_read = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        prompt = (usage.input_tokens or 0) + cache_write + cache_read
        # Thinking tokens are inside output_tokens; SDKs before output_tokens_details lack it.
        details = getattr(usage, "output_tokens_details", None)
        thinking: int = getattr(details, "thinking_tokens", None) or 0
        return RequestUsage(
            input_tokens=prompt,
            output_tokens=usage.output_tokens or 0,
            cached_input_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=thinking,
        )


def _conversation(messages: Sequence[Message]) -> tuple[str, list[MessageParam]]:
    """The system prompt and the alternating user/assistant turns of ``messages``."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[tuple[bool, list[str]]] = []  # (is_assistant, texts)
    for message in messages:
        if message.role == "system":
            continue
        is_assistant = message.role == "assistant"
        if turns and turns[-1][0] == is_assistant:
            turns[-1][1].append(message.content)
        else:
            turns.append((is_assistant, [message.content]))
    conversation: list[MessageParam] = []
    for is_assistant, texts in turns:
        content: str | list[TextBlockParam] = texts[0]
        if len(texts) > 1:
            # Separate blocks keep the messages apart; the API rejects empty text blocks.
            content = [{"type": "text", "text": text} for text in texts if text] or ""
        if is_assistant:
            conversation.append({"role": "assistant", "content": content})
        else:
            conversation.append({"role": "user", "content": content})
    return system, conversation
