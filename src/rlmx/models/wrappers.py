"""Models that wrap other models: retry with backoff, fallback chains, and the base they share.

A wrapper is a :class:`Model` around another ``Model``; it keeps the wrapped model's name,
window, prices and tokenizer, so the engine cannot tell the difference except by the
behaviour. They compose: ``CachedModel(FallbackModel([RetryModel(RateLimitedModel(a)), ...]))``
is what :func:`rlmx.models.wrap_model` builds for a ``"provider:model"`` string.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from rlmx.exceptions import (
    ConfigError,
    ContextLengthError,
    ModelAPIError,
    ModelConnectionError,
    ModelError,
    ModelResponseError,
)
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings
from rlmx.usage import RequestUsage

__all__ = ["FallbackModel", "RetryModel", "RetryPolicy", "WrapperModel", "is_outage"]

logger = logging.getLogger("rlmx.models")

# 408 request timeout, 409 conflict (OpenAI's "try again"), 425 too early, 429 rate limited,
# 5xx server trouble, 529 Anthropic overloaded.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the provider is unavailable now (worth retrying or falling back),
    rather than that this request can never succeed (bad key, bad request, prompt too long)."""
    if isinstance(exc, ContextLengthError):
        return False
    if isinstance(exc, ModelAPIError):
        return exc.status in RETRYABLE_STATUSES
    return isinstance(exc, ModelConnectionError | ModelResponseError)


class WrapperModel(Model):
    """A model that forwards to ``wrapped``; subclasses change :meth:`request`."""

    def __init__(self, wrapped: Model) -> None:
        self.wrapped = wrapped
        self.name = wrapped.name
        self.model_name = wrapped.model_name

    # The wrapped model may learn these late (the embedded model reads its window on load).
    @property
    def context_window(self) -> int | None:
        return self.wrapped.context_window

    @context_window.setter
    def context_window(self, value: int | None) -> None:
        self.wrapped.context_window = value

    @property
    def default_settings(self) -> ModelSettings:
        return self.wrapped.default_settings

    @default_settings.setter
    def default_settings(self, value: ModelSettings) -> None:
        self.wrapped.default_settings = value

    @property
    def rate_limit_key(self) -> str:
        return self.wrapped.rate_limit_key

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self.wrapped.count_tokens(messages)

    def cost_of(self, usage: RequestUsage, response_model: str | None = None) -> Decimal | None:
        return self.wrapped.cost_of(usage, response_model)

    def answering_model(self, name: str | None) -> Model:
        return self.wrapped.answering_model(name)

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        return await self.wrapped.request(messages, settings)

    async def aclose(self) -> None:
        await self.wrapped.aclose()

    def unwrap(self) -> Model:
        """The innermost model (the provider adapter)."""
        inner = self.wrapped
        while isinstance(inner, WrapperModel):
            inner = inner.wrapped
        return inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.wrapped!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how long to retry a failed request.

    Exponential backoff (``initial_delay_s * multiplier**n``, capped at ``max_delay_s``) with
    full jitter, so hundreds of sub-calls hit by the same 503 do not come back in lockstep.
    A ``Retry-After`` from the provider is obeyed instead of the backoff. Retries stop after
    ``max_attempts`` requests or once ``max_elapsed_s`` would be passed.
    """

    max_attempts: int = 6
    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    max_elapsed_s: float | None = 300.0
    retry_if: Callable[[BaseException], bool] = field(default=is_outage, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be >= 1, not {self.max_attempts}.")
        numbers = (self.initial_delay_s, self.max_delay_s, self.multiplier)
        if any(n != n for n in numbers) or self.max_elapsed_s != self.max_elapsed_s:
            raise ConfigError("RetryPolicy values must be numbers, not NaN.")
        if self.max_elapsed_s is not None and self.max_elapsed_s < 0:
            raise ConfigError(f"RetryPolicy.max_elapsed_s must be >= 0, not {self.max_elapsed_s}.")
        if self.initial_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ConfigError(
                "RetryPolicy delays must be >= 0 and multiplier >= 1 "
                f"(got initial_delay_s={self.initial_delay_s}, max_delay_s={self.max_delay_s}, "
                f"multiplier={self.multiplier})."
            )

    def backoff_s(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``retry_number`` (1 = the first retry), without Retry-After."""
        ceiling = min(
            self.max_delay_s, self.initial_delay_s * self.multiplier ** (retry_number - 1)
        )
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)

    def delay_s(
        self, retry_number: int, exc: BaseException, rng: random.Random | None = None
    ) -> float:
        """The wait before retry ``retry_number`` after ``exc``: the provider's
        ``Retry-After`` when it gave one, else the backoff."""
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            # A little spread still helps when many calls got the same Retry-After.
            spread = (rng or random).uniform(0.0, 0.1 * retry_after + 0.05) if self.jitter else 0.0
            return float(retry_after) + spread
        return self.backoff_s(retry_number, rng)


class RetryModel(WrapperModel):
    """Retries transient failures (429, 5xx, timeouts, resets, unusable replies).

    Requests that cannot succeed (401, 400, prompt too long) fail at once. When the retries
    run out, the last error is raised with ``attempts`` set and the message saying how many
    attempts were made over how long.
    """

    def __init__(
        self,
        wrapped: Model,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = rng

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        policy = self.policy
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return await self.wrapped.request(messages, settings)
            except ModelError as exc:
                if not policy.retry_if(exc) or attempt >= policy.max_attempts:
                    raise _gave_up(exc, attempt, time.monotonic() - started) from None
                delay = policy.delay_s(attempt, exc, self._rng)
                elapsed = time.monotonic() - started
                if policy.max_elapsed_s is not None and elapsed + delay > policy.max_elapsed_s:
                    raise _gave_up(exc, attempt, elapsed, waiting=delay) from None
                logger.info(
                    "%s: attempt %d failed (%s); retrying in %.2f s", self.name, attempt, exc, delay
                )
                await self._wait(delay)
                attempt += 1

    async def _wait(self, delay: float) -> None:
        if self._sleep is not None:
            result = self._sleep(delay)
            if asyncio.iscoroutine(result):
                await result
            return
        await asyncio.sleep(delay)


def _gave_up(
    exc: ModelError, attempts: int, elapsed_s: float, *, waiting: float | None = None
) -> ModelError:
    exc.attempts = attempts
    if attempts > 1 or waiting is not None:
        note = (
            f"gave up after {attempts} attempt{'s' if attempts > 1 else ''} over {elapsed_s:.1f} s"
        )
        if waiting is not None:
            note += f"; the next wait ({waiting:.1f} s) would pass the retry time limit"
        exc.args = (f"{exc.args[0] if exc.args else exc} ({note})", *exc.args[1:])
    return exc


class FallbackModel(WrapperModel):
    """Tries ``models`` in order: when one is unavailable (an outage after its own retries),
    the next answers. Errors that another model would hit too (a bad request, a prompt too
    long) are raised at once; when no model answers, the last model's error is raised,
    naming the earlier failures.

    The response names the model that answered (``answered_by``), and its usage and cost
    are filed under that model.
    """

    def __init__(self, models: Iterable[Model]) -> None:
        self.models = list(models)
        if not self.models:
            raise ConfigError("FallbackModel needs at least one model.")
        super().__init__(self.models[0])

    def answering_model(self, name: str | None) -> Model:
        for model in self.models:  # members may be chains themselves
            found = model.answering_model(name)
            if found.name == name:
                return found
        return self.wrapped.answering_model(name)

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        failures: list[str] = []
        for index, model in enumerate(self.models):
            try:
                response = await model.request(messages, settings)
            except ModelError as exc:
                last = index == len(self.models) - 1
                if not is_outage(exc) or last:
                    if failures:
                        exc.args = (
                            f"{exc.args[0] if exc.args else exc} "
                            f"(after fallbacks failed: {'; '.join(failures)})",
                            *exc.args[1:],
                        )
                    raise
                failures.append(f"{model.name}: {exc}")
                logger.warning("%s is unavailable (%s); falling back", model.name, exc)
                continue
            if index > 0 and response.answered_by is None:
                response = replace(response, answered_by=model.name)
            return response
        raise AssertionError("unreachable: the last model either answers or raises")

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()

    def __repr__(self) -> str:
        return f"FallbackModel({self.models!r})"
