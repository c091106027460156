"""Google's Gemini Developer API, through the official ``google-genai`` SDK.

The SDK is an optional extra (``pip install "rlmx[gemini]"``); importing this module
without it raises :class:`~rlmx.exceptions.MissingExtraError`. Requests go through an
aiohttp session of this module's own (one per event loop), handed to the SDK. The SDK's
retries are off, the implicit one after a connection error included:
:class:`~rlmx.models.RetryModel` retries.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import aiohttp
import pydantic

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
    import google.genai as genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types
except ImportError:
    raise MissingExtraError("gemini", "gemini", "google-genai") from None

__all__ = ["DEFAULT_BASE_URL", "GeminiModel"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

# ``extra_body`` keys that name a GenerateContentConfig field are set on the config (and
# validated by the SDK); the rest go into the request's JSON as they are. These two
# would change how the SDK itself behaves, so they are not accepted as config fields.
_CONFIG_FIELDS = frozenset(genai_types.GenerateContentConfig.model_fields) - {
    "http_options",
    "should_return_http_response",
}

# google.rpc.RetryInfo's delay, a protobuf Duration in JSON: "37s", "0.5s".
_RETRY_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _ms(seconds: float) -> int:
    """The SDK's timeouts are whole milliseconds."""
    return max(1, math.ceil(seconds * 1000))


def _enum_value(value: enum.Enum | None) -> str | None:
    # The SDK turns even values it does not know into (pseudo-)members of its enums.
    return None if value is None else str(value.value)


class GeminiModel(Model):
    """A Gemini model behind the Gemini Developer API's ``generateContent``.

    System messages become the ``system_instruction`` (several are joined with blank
    lines); assistant messages are sent in the ``model`` role, and consecutive messages of
    the same role are merged into one turn of several parts. ``ModelSettings.extra_body``
    keys that name a ``GenerateContentConfig`` field (snake_case, e.g. ``thinking_config``,
    ``safety_settings``, ``top_k``) are set on the config; any other key is merged into the
    request's JSON body as it is (e.g. ``{"generationConfig": {...}}``). Explicit settings
    win over config fields of the same name. ``base_url`` (or ``GOOGLE_GEMINI_BASE_URL``)
    points the model at another server; with one, a missing key is allowed.
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
        max_tokens: int | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or None
        self.base_url = base_url.rstrip("/") if base_url else None
        """Where requests go; ``None`` means Google's public endpoint."""
        api_key = resolve_api_key(
            api_key,
            "gemini",
            ["GEMINI_API_KEY", "GOOGLE_API_KEY"],
            custom_endpoint=self.base_url is not None and self.base_url != DEFAULT_BASE_URL,
        )
        self.name = f"gemini:{model_name}"
        self.model_name = model_name
        self.default_settings = settings or ModelSettings()
        self.context_window = window_for(model_name, context_window)
        self.max_tokens = max_tokens
        """Default ``max_output_tokens``; ``None`` leaves the model's own limit."""
        self._api_key = api_key
        self._timeout_s = timeout_s
        # aiohttp sessions belong to one event loop: keep one client (and session) per loop.
        self._clients: PerLoop[tuple[genai.Client, aiohttp.ClientSession]] = PerLoop()
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

    def _client(self) -> genai.Client:
        return self._clients.current(self._new_client)[0]

    def _new_client(self) -> tuple[genai.Client, aiohttp.ClientSession]:
        # Our own aiohttp session, closed by aclose: the session the SDK would make is
        # a ClientSession subclass, which aiohttp deprecates with a warning.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=True)
        client = genai.Client(
            api_key=self._api_key,
            vertexai=False,
            http_options=genai_types.HttpOptions(
                base_url=self.base_url,
                timeout=_ms(self._timeout_s),
                # One attempt. Without retry options the SDK would still retry a
                # failed connection once, after sleeping 1-10 s.
                retry_options=genai_types.HttpRetryOptions(attempts=1),
                aiohttp_client=session,
            ),
        )
        return client, session

    async def aclose(self) -> None:
        entry = self._clients.pop_current()
        if entry is not None:
            client, session = entry
            await client.aio.aclose()
            client.close()  # the SDK also opens a synchronous HTTP client
            await session.close()

    def _contents(self, messages: Sequence[Message]) -> tuple[str, list[genai_types.Content]]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        contents: list[genai_types.Content] = []
        for message in messages:
            if message.role == "system":
                continue
            role = "model" if message.role == "assistant" else "user"
            part = genai_types.Part(text=message.content)
            last = contents[-1] if contents else None
            if last is not None and last.role == role and last.parts is not None:
                last.parts.append(part)
            else:
                contents.append(genai_types.Content(role=role, parts=[part]))
        if not contents:
            raise ConfigError(
                f"{self.name} needs at least one user or assistant message, not only system ones."
            )
        return system, contents

    def _config(self, system: str, settings: ModelSettings) -> genai_types.GenerateContentConfig:
        fields: dict[str, Any] = {}
        wire: dict[str, Any] = {}
        for key, value in settings.extra_body.items():
            (fields if key in _CONFIG_FIELDS else wire)[key] = value
        if system:
            fields["system_instruction"] = system
        if settings.temperature is not None:
            fields["temperature"] = settings.temperature
        max_tokens = self.max_tokens if settings.max_tokens is None else settings.max_tokens
        if max_tokens is not None:
            fields["max_output_tokens"] = max_tokens
        if settings.top_p is not None:
            fields["top_p"] = settings.top_p
        if settings.seed is not None:
            fields["seed"] = settings.seed
        if settings.stop:
            fields["stop_sequences"] = list(settings.stop)
        http: dict[str, Any] = {}
        if settings.timeout_s is not None:
            http["timeout"] = _ms(settings.timeout_s)
        if wire:
            http["extra_body"] = wire
        try:
            if http:
                fields["http_options"] = genai_types.HttpOptions(**http)
            return genai_types.GenerateContentConfig(**fields)
        except pydantic.ValidationError as exc:
            raise ConfigError(f"Invalid settings for {self.name}: {exc}") from None

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        check_requests_allowed(self.name, self.base_url, self._endpoint)
        merged = self.default_settings.merged(settings)
        system, contents = self._contents(messages)
        config = self._config(system, merged)
        try:
            response = await self._client().aio.models.generate_content(
                model=self.model_name, contents=contents, config=config
            )
        except genai_errors.APIError as exc:
            raise self._status_error(exc) from None
        except TimeoutError:  # aiohttp's total timeout (asyncio.TimeoutError is this class)
            timeout = merged.timeout_s if merged.timeout_s is not None else self._timeout_s
            raise ModelConnectionError(
                f"Could not reach {self.name} at {self._endpoint} (no reply within {timeout:g}s).",
                model=self.name,
            ) from None
        except aiohttp.ClientError as exc:
            # The SDK lets the transport's errors through (a refused connection, a dropped one).
            detail = str(exc) or type(exc).__name__
            raise ModelConnectionError(
                f"Could not reach {self.name} at {self._endpoint} ({detail.rstrip('.')}). "
                "Check the network, and the base URL if you set one.",
                model=self.name,
            ) from None
        except ValueError as exc:
            # Invalid JSON (json.JSONDecodeError), JSON of the wrong shape
            # (pydantic.ValidationError), the SDK's UnknownApiResponseError: all ValueErrors.
            raise ModelResponseError(
                f"{self.name} returned an unusable response: {exc}", model=self.name
            ) from None
        return self._to_response(response)

    def _status_error(self, exc: genai_errors.APIError) -> ModelAPIError:
        status: int | None = exc.code
        detail = str(exc.message or exc.status or exc)
        body = exc.details
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        if retry_after is None:
            retry_after = _retry_info_delay(body)
        if status in (400, 413) and looks_like_context_length(detail):
            return ContextLengthError(
                f"{self.name} refused the prompt as too long for its context window "
                f"(HTTP {status}: {detail}).",
                model=self.name,
                status=status,
                body=body,
                context_window=self.context_window,
            )
        hint = ""
        # An invalid key is a 400 INVALID_ARGUMENT ("API key not valid") on this API.
        key_rejected = status == 400 and ("api key" in detail.lower() or "API_KEY" in str(body))
        if status in (401, 403) or key_rejected:
            hint = " Check GEMINI_API_KEY (or GOOGLE_API_KEY)."
        elif status == 404:
            hint = f" Check the model name {self.model_name!r}."
        elif status == 429:
            hint = " The provider is rate limiting; slow down or raise your quota."
        return ModelAPIError(
            f"{self.name} failed with HTTP {status}: {detail.rstrip('.')}.{hint}",
            model=self.name,
            status=status,
            body=body,
            retry_after_s=retry_after,
        )

    def _to_response(self, response: genai_types.GenerateContentResponse) -> ModelResponse:
        candidates = response.candidates
        if not candidates:
            feedback = response.prompt_feedback
            reason = _enum_value(feedback.block_reason) if feedback is not None else None
            if feedback is None or reason is None:
                raise ModelResponseError(f"{self.name} returned no candidates", model=self.name)
            said = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise ModelResponseError(
                f"{self.name} blocked the prompt (block reason {reason}{said})", model=self.name
            )
        candidate = candidates[0]
        parts = candidate.content.parts if candidate.content is not None else None
        # response.text would warn about non-text parts; thought summaries are not the answer.
        text = "".join(p.text for p in parts or () if p.text and not p.thought)
        return ModelResponse(
            text=text,
            usage=self._usage(response.usage_metadata),
            model_name=response.model_version or self.model_name,
            finish_reason=_enum_value(candidate.finish_reason),
        )

    def _usage(
        self, usage: genai_types.GenerateContentResponseUsageMetadata | None
    ) -> RequestUsage:
        if usage is None:
            self._no_usage.warn()
            return RequestUsage()
        thoughts = usage.thoughts_token_count or 0
        # Tool-use prompt tokens are billed as input; they are zero without tools.
        prompt = (usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0)
        return RequestUsage(
            input_tokens=prompt,
            output_tokens=(usage.candidates_token_count or 0) + thoughts,
            cached_input_tokens=usage.cached_content_token_count or 0,
            reasoning_tokens=thoughts,
        )


def _retry_info_delay(body: object) -> float | None:
    """The wait a ``google.rpc.RetryInfo`` in the error's details asks for, if any.

    The Gemini API says how long to back off there rather than in ``Retry-After``.
    """
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _RETRY_DELAY.match(str(detail.get("retryDelay", "")))
            if match:
                # Through parse_retry_after, so the same cap applies.
                return parse_retry_after({"retry-after": match.group(1)})
    return None
