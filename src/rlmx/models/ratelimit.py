"""Client-side rate limiting, shared per provider account across the whole process.

Providers limit requests per minute and tokens per minute per API key. One RLM run fans out
hundreds of sub-calls, several runs may go on at once (threads, each with its own event
loop), and a recursion tree has many models: all of them draw from the one
:class:`RateLimiter` of their provider + endpoint + key (``Model.rate_limit_key``).

The limiter is a pair of token buckets that hand out *reservations*: a caller takes its
share now and is told how long to wait, so no lock is held while waiting and waiters in
different event loops need nothing from each other. When a provider answers 429 with a
``Retry-After``, the limiter pauses every caller of that key until then, so the whole tree
backs off together instead of each call learning it alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlmx.exceptions import ConfigError, ModelAPIError
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings
from rlmx.models.wrappers import WrapperModel

__all__ = ["RateLimit", "RateLimitedModel", "RateLimiter", "shared_limiter"]

# A 429 without Retry-After still pauses the key briefly; the retry wrapper backs off more.
_DEFAULT_429_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """Requests and tokens per minute for one provider account; ``None`` = no limit."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # also refuses NaN
                raise ConfigError(
                    f"RateLimit.{name} must be > 0 (or None for no limit), not {value}."
                )


class _Bucket:
    """Token bucket that may go into debt: a reservation larger than what is left is granted
    with a wait long enough to refill the difference (later callers queue behind it)."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.per_minute = per_minute
        self.capacity = per_minute
        self.level = per_minute
        self.updated = now

    def _refill(self, now: float) -> None:
        rate = self.per_minute / 60.0
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def taken(self, amount: float) -> float:
        """How much a reservation of ``amount`` really takes: a request bigger than a
        minute's allowance takes the whole allowance (and so waits at most a minute)."""
        return min(amount, self.capacity)

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount``; returns the seconds to wait before using it."""
        self._refill(now)
        self.level -= self.taken(amount)
        if self.level >= 0:
            return 0.0
        return -self.level / (self.per_minute / 60.0)

    def give_back(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests/min and tokens/min for one key; safe across threads and event loops."""

    def __init__(
        self, limit: RateLimit | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self._paused_until = 0.0
        self.limit = RateLimit()
        self.configure(limit or RateLimit())

    def configure(self, limit: RateLimit) -> None:
        """Change the limits (the latest configuration of a shared key wins)."""
        now = self._clock()
        with self._lock:
            self.limit = limit
            self._requests = _new_bucket(self._requests, limit.requests_per_minute, now)
            self._tokens = _new_bucket(self._tokens, limit.tokens_per_minute, now)

    def reserve(self, tokens: int) -> float:
        """Take one request and ``tokens`` tokens; returns the seconds to wait first."""
        now = self._clock()
        with self._lock:
            wait = max(0.0, self._paused_until - now)
            if self._requests is not None:
                wait = max(wait, self._requests.reserve(1, now))
            if self._tokens is not None:
                wait = max(wait, self._tokens.reserve(tokens, now))
            return wait

    def cancel(self, tokens: int) -> None:
        """Return a reservation that was not used (its caller was cancelled)."""
        now = self._clock()
        with self._lock:
            if self._requests is not None:
                self._requests.give_back(1, now)
            if self._tokens is not None:
                self._tokens.give_back(self._tokens.taken(tokens), now)

    def settle(self, reserved_tokens: int, actual_tokens: int) -> None:
        """Correct a reservation made from an estimate once the real count is known."""
        if self._tokens is None or actual_tokens == reserved_tokens:
            return
        now = self._clock()
        with self._lock:
            if self._tokens is not None:
                # Negative when more was used than taken: the difference is charged.
                taken = self._tokens.taken(reserved_tokens)
                self._tokens.give_back(taken - actual_tokens, now)

    def pause(self, seconds: float) -> None:
        """Hold every caller of this key for ``seconds`` (the provider said 429)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of ``tokens`` tokens may be sent."""
        wait = self.reserve(tokens)
        if wait <= 0:
            return
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self.cancel(tokens)
            raise


def _new_bucket(old: _Bucket | None, per_minute: float | None, now: float) -> _Bucket | None:
    if per_minute is None:
        return None
    if old is not None:
        old._refill(now)
        old.per_minute = old.capacity = per_minute
        old.level = min(old.level, per_minute)
        return old
    return _Bucket(per_minute, now)


_LIMITERS: dict[str, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(key: str, limit: RateLimit | None = None) -> RateLimiter:
    """The process-wide limiter of ``key``; ``limit``, when given, (re)configures it."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = RateLimiter(limit)
            return limiter
    if limit is not None and limit != limiter.limit:
        limiter.configure(limit)
    return limiter


class RateLimitedModel(WrapperModel):
    """Sends each request only when its key's limiter allows it.

    Token reservations use the prompt's token count (``Model.count_tokens``) and are
    corrected with the usage the provider reports. With no limits set, the model still
    shares its key's 429 pauses.
    """

    def __init__(
        self,
        wrapped: Model,
        limit: RateLimit | None = None,
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.limiter = (
            limiter if limiter is not None else shared_limiter(wrapped.rate_limit_key, limit)
        )

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        limiter = self.limiter
        estimate = self.wrapped.count_tokens(messages) if limiter.limit.tokens_per_minute else 0
        await limiter.acquire(estimate)
        try:
            response = await self.wrapped.request(messages, settings)
        except ModelAPIError as exc:
            if exc.status == 429:
                limiter.pause(
                    exc.retry_after_s if exc.retry_after_s is not None else _DEFAULT_429_PAUSE_S
                )
            raise
        if estimate:
            limiter.settle(estimate, response.usage.total_tokens)
        return response
