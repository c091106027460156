"""What every provider adapter shares: finding the API key, the request guard, one client
per event loop, the missing-usage warning, ``Retry-After`` parsing, spotting context-length
errors in a provider's message, and naming a rate limiter without the key."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import ipaddress
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

from rlmx.exceptions import ConfigError, ModelRequestsDisabled

__all__ = [
    "OnceWarning",
    "PerLoop",
    "check_requests_allowed",
    "is_loopback",
    "key_digest",
    "looks_like_context_length",
    "parse_retry_after",
    "requests_allowed",
    "resolve_api_key",
    "window_for",
]

T = TypeVar("T")

# SDKs refuse to start without a key, even for a local server that ignores it.
PLACEHOLDER_KEY = "not-needed"

# Phrases providers use when a prompt does not fit: OpenAI ("maximum context length",
# code context_length_exceeded), Anthropic ("prompt is too long"), Gemini ("input token count
# ... exceeds the maximum"), vLLM ("maximum context length"), llama.cpp server
# ("exceeds the available context size", type exceed_context_size_error), Ollama/LM Studio.
_CONTEXT_LENGTH = re.compile(
    r"context[_ ]length[_ ]exceeded|maximum context length|context window|prompt is too long"
    r"|exceeds? (?:the )?(?:available |maximum )?context(?: size| length)?"
    r"|exceed_context_size|input token count.*exceeds|too many (?:input )?tokens"
    r"|requested \d+ tokens",
    re.IGNORECASE,
)

# Never wait longer than this on a provider's say-so; a longer Retry-After is an outage.
_MAX_RETRY_AFTER_S = 600.0


@functools.lru_cache(maxsize=256)  # asked once per request: parse each URL once
def is_loopback(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:  # an IP literal; a DNS name such as "127.example.com" is not loopback
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def requests_allowed(base_url: str | None) -> bool:
    """Whether a real request to ``base_url`` may be sent now.

    ``rlmx.models.ALLOW_MODEL_REQUESTS = False`` (or ``RLMX_ALLOW_MODEL_REQUESTS=0`` in the
    environment, which child processes inherit) blocks every request that could cost
    money. Loopback servers stay allowed: they are the test suite's own. ``None`` means
    the provider's public endpoint.
    """
    import rlmx.models as models_pkg

    env = os.environ.get("RLMX_ALLOW_MODEL_REQUESTS", "").strip().lower()
    allowed = models_pkg.ALLOW_MODEL_REQUESTS and env not in {"0", "false", "no"}
    return allowed or (base_url is not None and is_loopback(base_url))


def check_requests_allowed(name: str, base_url: str | None, shown_url: str) -> None:
    """Raise :class:`ModelRequestsDisabled` unless :func:`requests_allowed` says yes."""
    if not requests_allowed(base_url):
        raise ModelRequestsDisabled(
            f"Refusing to call {name} at {shown_url}: model requests are disabled "
            "(rlmx.models.ALLOW_MODEL_REQUESTS is False or RLMX_ALLOW_MODEL_REQUESTS=0).",
            model=name,
        )


def resolve_api_key(
    api_key: str | None,
    provider: str,
    key_vars: Sequence[str],
    *,
    required: bool = True,
    custom_endpoint: bool = False,
) -> str:
    """``api_key``, else the first of ``key_vars`` that is set; a placeholder where no key is
    needed (a local server, a custom endpoint); else a :class:`ConfigError` naming the
    variables to set."""
    if api_key is None:
        api_key = next((os.environ[v] for v in key_vars if os.environ.get(v)), None)
    if api_key is not None:
        return api_key
    if required and not custom_endpoint:
        raise ConfigError(
            f"No API key for {provider}: set {' or '.join(key_vars)} "
            "(or pass api_key=... / --base-url for a server that needs none)."
        )
    return PLACEHOLDER_KEY


def window_for(model_name: str, given: int | None) -> int | None:
    """``given``, else the model's context window from the price table (``None`` if unknown)."""
    if given is not None:
        return given
    from rlmx.pricing import context_window

    return context_window(model_name)


class PerLoop(dict[asyncio.AbstractEventLoop, T]):
    """One value (an SDK client, an aiohttp session) per event loop: those belong to the
    loop that made them. Entries of loops that have closed are dropped on the next miss."""

    def current(self, make: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        value = self.get(loop)
        if value is None:
            for stale in [lp for lp in self if lp.is_closed()]:
                del self[stale]
            value = self[loop] = make()
        return value

    def pop_current(self) -> T | None:
        """Remove and return the running loop's value (``None`` if it has none)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - called from async code, a loop runs
            return None
        return self.pop(loop, None)


class OnceWarning:
    """A ``RuntimeWarning`` given the first time only (e.g. "no token usage reported")."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.given = False

    def warn(self) -> None:
        if not self.given:
            self.given = True
            warnings.warn(self.message, RuntimeWarning, stacklevel=3)


def parse_retry_after(
    headers: Mapping[str, str] | Any, *, now: float | None = None
) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``.

    ``None`` when the headers say nothing usable. Capped at ten minutes.
    """
    if headers is None:
        return None
    get = getattr(headers, "get", None)
    if get is None:
        return None
    millis = get("retry-after-ms") or get("Retry-After-Ms")
    if millis:
        try:
            return _cap(float(millis) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after") or get("Retry-After")
    if not value:
        return None
    value = str(value).strip()
    try:
        return _cap(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return _cap(when.timestamp() - (time.time() if now is None else now))


def _cap(seconds: float) -> float | None:
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def looks_like_context_length(*texts: object) -> bool:
    """Whether a provider's error code or message says the prompt did not fit."""
    return any(_CONTEXT_LENGTH.search(str(text)) for text in texts if text)


def key_digest(api_key: str | None) -> str:
    """A short, irreversible name for an API key (limiter keys, cache keys, logs)."""
    if not api_key:
        return "nokey"
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]
