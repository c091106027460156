"""Public test doubles: models whose replies are scripted or computed by a function.

They make no network calls, report deterministic usage (about four characters a token)
and record every request, so tests and docs can run a whole RLM without a provider::

    from rlmx.models import ScriptedModel
    root = ScriptedModel(["```repl\\nprint(len(context))\\n```", "FINAL(11)"])
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from rlmx.exceptions import ScriptExhausted
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings, estimate_tokens
from rlmx.usage import RequestUsage

__all__ = ["FunctionModel", "ModelCall", "ScriptedModel"]

Reply = str | ModelResponse | BaseException
FunctionReply = str | ModelResponse
Prices = tuple[Decimal | str | float, Decimal | str | float]
"""USD per 1M input tokens and per 1M output tokens."""


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One request a test double received."""

    messages: tuple[Message, ...]
    settings: ModelSettings | None

    @property
    def last_user(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""


def _usage_for(messages: Sequence[Message], text: str) -> RequestUsage:
    prompt = sum(estimate_tokens(m.content) + 4 for m in messages)
    return RequestUsage(input_tokens=prompt, output_tokens=estimate_tokens(text))


class _RecordingModel(Model):
    def __init__(self, name: str, prices: Prices | None) -> None:
        self.name = name if ":" in name else f"test:{name}"
        self.model_name = self.name.split(":", 1)[1]
        self.calls: list[ModelCall] = []
        self._lock = threading.Lock()
        self._prices = (
            None if prices is None else (Decimal(str(prices[0])), Decimal(str(prices[1])))
        )

    def cost_of(self, usage: RequestUsage, response_model: str | None = None) -> Decimal | None:
        """Cost at ``prices`` (USD per 1M input, output tokens); ``None`` if unpriced."""
        if self._prices is None:
            return None
        per_input, per_output = self._prices
        return (usage.input_tokens * per_input + usage.output_tokens * per_output) / 1_000_000

    def _record(self, messages: Sequence[Message], settings: ModelSettings | None) -> None:
        with self._lock:
            self.calls.append(ModelCall(tuple(messages), settings))

    def _response(self, messages: Sequence[Message], reply: FunctionReply) -> ModelResponse:
        if isinstance(reply, ModelResponse):
            return reply
        return ModelResponse(
            text=reply, usage=_usage_for(messages, reply), model_name=self.model_name
        )


class ScriptedModel(_RecordingModel):
    """Answers with ``replies`` in order; an exception in the list is raised instead.

    Asking for more replies than scripted raises :class:`~rlmx.exceptions.ScriptExhausted`
    (a test that expects fewer calls fails loudly rather than hanging).
    """

    def __init__(
        self,
        replies: Iterable[Reply],
        *,
        name: str = "scripted",
        delay_s: float = 0.0,
        prices: Prices | None = (0, 0),
    ) -> None:
        super().__init__(name, prices)
        self._replies = list(replies)
        self._next = 0
        self.delay_s = delay_s

    @property
    def remaining(self) -> int:
        return len(self._replies) - self._next

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        self._record(messages, settings)
        with self._lock:
            if self._next >= len(self._replies):
                raise ScriptExhausted(
                    f"ScriptedModel {self.name!r} was asked for reply #{self._next + 1} "
                    f"but only {len(self._replies)} were scripted",
                    model=self.name,
                )
            reply = self._replies[self._next]
            self._next += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if isinstance(reply, BaseException):
            raise reply
        return self._response(messages, reply)


class FunctionModel(_RecordingModel):
    """Computes each reply with ``fn(messages, settings)``; ``fn`` may be sync or async."""

    def __init__(
        self,
        fn: Callable[
            [Sequence[Message], ModelSettings | None], FunctionReply | Awaitable[FunctionReply]
        ],
        *,
        name: str = "function",
        prices: Prices | None = (0, 0),
    ) -> None:
        super().__init__(name, prices)
        self._fn = fn

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        self._record(messages, settings)
        out = self._fn(messages, settings)
        if inspect.isawaitable(out):
            out = await out
        return self._response(messages, out)
