"""Budgets: ``Limits`` (what the caller allows) and ``Budget`` (what is left, tree-wide).

One ``Budget`` is shared by the whole recursion tree: a child run spends from the same
object as its parent, so children get what is left and every token rolls up to the
root. Each check names the limit and the value reached, with a hint.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rlmx.exceptions import ConfigError
from rlmx.usage import RunUsage

if TYPE_CHECKING:
    from rlmx.models.base import Model, ModelResponse

__all__ = ["Budget", "Limits", "StopReason"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Budgets for one call of ``RLM.completion``, shared by its whole recursion tree.

    ``None`` means unlimited. ``max_iterations`` applies to each run (root or child);
    every other limit applies to the tree's total.
    """

    max_iterations: int = 30
    max_depth: int | None = None
    """Overrides ``RLM(max_depth=...)`` when set."""
    max_sub_calls: int | None = None
    max_tokens: int | None = None
    """Input plus output tokens, all models, all depths."""
    max_cost_usd: float | Decimal | None = None
    timeout_s: float | None = None
    """Wall time of the whole call."""
    cell_timeout_s: float | None = 120.0
    """Wall time of one code cell."""
    max_output_chars: int = 20_000
    """Characters of a cell's output shown to the model; the rest is cut with a note."""
    max_concurrency: int = 16
    """Sub-call model requests in flight at once, across the tree."""

    def __post_init__(self) -> None:
        positive_ints = ("max_iterations", "max_output_chars", "max_concurrency")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Limits.{name} must be an integer >= 1, got {value!r}.")
        for name in ("max_depth", "max_sub_calls", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ConfigError(f"Limits.{name} must be an integer >= 0 or None, got {value!r}.")
        for name in ("max_cost_usd", "timeout_s", "cell_timeout_s"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                raise ConfigError(f"Limits.{name} must be a number or None, got {value!r}.")
            if value < 0 or (name != "max_cost_usd" and value == 0):
                raise ConfigError(f"Limits.{name} must be positive, got {value!r}.")

    def replace(self, **changes: Any) -> Limits:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"Unknown limit(s): {', '.join(sorted(unknown))}.")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Limits(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Decimal) else value
        return out


def as_seconds(value: float | Decimal | None) -> float | None:
    """A time limit as the float ``asyncio`` wants (``None`` stays unlimited)."""
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class StopReason:
    """Which limit ended (or would end) the run, the value reached, and what to do."""

    limit: str
    value: Any
    message: str


class Budget:
    """What the recursion tree has spent so far, checked against ``Limits``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.usage = RunUsage()
        self.started = time.monotonic()
        self.sub_calls = 0
        self.depth_reached = 0
        self._unpriced: set[str] = set()
        self.request_slots = asyncio.Semaphore(limits.max_concurrency)
        self.stop: StopReason | None = None
        """Set once a tree-wide limit is hit; every run in the tree then winds down."""

    # --------------------------------------------------------------- spending
    def record(self, model: Model, response: ModelResponse, depth: int) -> Decimal | None:
        """Add one request's usage; returns its cost (``None`` if the price is unknown).

        The usage is filed under the model that answered (``response.answered_by``, set by
        a fallback chain), else under ``model``.
        """
        usage, response_model = response.usage, response.model_name
        answering = model.answering_model(response.answered_by)
        name = answering.name
        # A reply replayed from the response cache cost nothing, whatever the model's prices.
        cost = Decimal(0) if usage.cached_response else answering.cost_of(usage, response_model)
        if cost is None and name not in self._unpriced:
            self._unpriced.add(name)
            warnings.warn(
                f"No price known for model {response_model!r} ({name}); cost_usd will "
                "be None. Add it to the price table or give the Model a price.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.usage.incr(name, depth, usage, cost)
        self.depth_reached = max(self.depth_reached, depth)
        return cost

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def remaining_time(self) -> float | None:
        if self.limits.timeout_s is None:
            return None
        return max(0.0, float(self.limits.timeout_s) - self.elapsed_s)

    # --------------------------------------------------------------- checks
    def check(self) -> StopReason | None:
        """The first tree-wide limit that has been reached, remembered once found."""
        if self.stop is None:
            self.stop = self._check_cost() or self._check_tokens() or self._check_time()
        return self.stop

    def _check_cost(self) -> StopReason | None:
        cap = self.limits.max_cost_usd
        if cap is None:
            return None
        spent = self.usage.cost_usd
        if spent is None or spent < Decimal(str(cap)):
            return None
        return StopReason(
            "max_cost_usd",
            spent,
            f"max_cost_usd={cap} reached (${spent:.4f} spent); raise it or narrow the query.",
        )

    def _check_tokens(self) -> StopReason | None:
        cap = self.limits.max_tokens
        used = self.usage.total_tokens
        if cap is None or used < cap:
            return None
        return StopReason(
            "max_tokens",
            used,
            f"max_tokens={cap:,} reached ({used:,} tokens used); raise it or narrow the query.",
        )

    def _check_time(self) -> StopReason | None:
        cap = self.limits.timeout_s
        elapsed = self.elapsed_s
        if cap is None or elapsed < cap:
            return None
        return StopReason(
            "timeout_s",
            round(elapsed, 3),
            f"timeout_s={cap} reached ({elapsed:.1f}s elapsed); raise it or narrow the query.",
        )

    def take_sub_call(self) -> StopReason | None:
        """Count one sub-call, or say why it may not be made."""
        cap = self.limits.max_sub_calls
        if cap is not None and self.sub_calls >= cap:
            return StopReason(
                "max_sub_calls",
                self.sub_calls,
                f"max_sub_calls={cap} reached; answer with what you have.",
            )
        self.sub_calls += 1
        return None

    def mark_timeout(self) -> StopReason:
        self.stop = self._check_time() or StopReason(
            "timeout_s",
            round(self.elapsed_s, 3),
            f"timeout_s={self.limits.timeout_s} reached; raise it or narrow the query.",
        )
        return self.stop
