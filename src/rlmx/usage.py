"""Token usage, recorded per request and rolled up per run, per model and per depth.

A :class:`RequestUsage` is what one model call cost. A :class:`RunUsage` is the sum of
many, with a breakdown by model and by recursion depth; the root run's ``RunUsage``
includes every child run's requests, because children record into the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["ModelUsage", "RequestUsage", "RunUsage"]


@dataclass(frozen=True, slots=True)
class RequestUsage:
    """Tokens of one model request, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    """Part of ``input_tokens`` served from the provider's prompt cache."""
    reasoning_tokens: int = 0
    """Part of ``output_tokens`` spent on hidden reasoning."""
    cache_write_tokens: int = 0
    """Part of ``input_tokens`` written to the provider's prompt cache (Anthropic charges
    these above the input price)."""
    cached_response: bool = False
    """True when the whole response came from a local response cache (no provider call)."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class ModelUsage:
    """Running totals for one model (or one depth)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cached_responses: int = 0
    """Requests answered from the local response cache (their tokens are counted as usual)."""
    cost_usd: Decimal | None = Decimal(0)
    """``None`` once any request had no known price."""

    def add(self, usage: RequestUsage, cost: Decimal | None) -> None:
        self.requests += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.reasoning_tokens += usage.reasoning_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.cached_responses += int(usage.cached_response)
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost

    def merge(self, other: ModelUsage) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cached_responses += other.cached_responses
        if self.cost_usd is None or other.cost_usd is None:
            self.cost_usd = None
        else:
            self.cost_usd += other.cost_usd

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cached_responses": self.cached_responses,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
        }


@dataclass(slots=True)
class RunUsage:
    """Usage of a whole run (the root includes its children), with breakdowns.

    Updated only from the event loop's thread, so concurrent sub-calls (which all
    complete on the loop) never lose an increment.
    """

    total: ModelUsage = field(default_factory=ModelUsage)
    by_model: dict[str, ModelUsage] = field(default_factory=dict)
    by_depth: dict[int, ModelUsage] = field(default_factory=dict)

    def incr(self, model: str, depth: int, usage: RequestUsage, cost: Decimal | None) -> None:
        """Record one request made by ``model`` at recursion ``depth``."""
        self.total.add(usage, cost)
        self.by_model.setdefault(model, ModelUsage()).add(usage, cost)
        self.by_depth.setdefault(depth, ModelUsage()).add(usage, cost)

    def __add__(self, other: RunUsage) -> RunUsage:
        out = RunUsage()
        for src in (self, other):
            out.total.merge(src.total)
            for name, mu in src.by_model.items():
                out.by_model.setdefault(name, ModelUsage()).merge(mu)
            for depth, mu in src.by_depth.items():
                out.by_depth.setdefault(depth, ModelUsage()).merge(mu)
        return out

    # Convenience mirrors of the totals, so ``result.usage.input_tokens`` reads naturally.
    @property
    def requests(self) -> int:
        return self.total.requests

    @property
    def input_tokens(self) -> int:
        return self.total.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.total.output_tokens

    @property
    def cached_input_tokens(self) -> int:
        return self.total.cached_input_tokens

    @property
    def reasoning_tokens(self) -> int:
        return self.total.reasoning_tokens

    @property
    def cached_responses(self) -> int:
        return self.total.cached_responses

    @property
    def total_tokens(self) -> int:
        return self.total.total_tokens

    @property
    def cost_usd(self) -> Decimal | None:
        return self.total.cost_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.total.to_dict(),
            "by_model": {name: mu.to_dict() for name, mu in sorted(self.by_model.items())},
            "by_depth": {str(d): mu.to_dict() for d, mu in sorted(self.by_depth.items())},
        }
