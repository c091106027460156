"""``RLMResult``: what one completion produced, spent and why it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rlmx.usage import RunUsage

__all__ = ["RLMResult"]


@dataclass(slots=True)
class RLMResult:
    answer: str
    """The final answer as text ("" when a limit stopped the run before any answer)."""
    output: Any
    """The answer validated as ``output_type`` when one was given, else the same as ``answer``."""
    usage: RunUsage
    """Tokens of every request in the recursion tree, with per-model and per-depth totals."""
    cost_usd: Decimal | None
    """Cost of the whole tree; ``None`` if any model's price is unknown."""
    iterations: int
    """Root-model turns of the root run."""
    sub_calls: int
    """``llm_query``/``rlm_query`` calls made anywhere in the tree."""
    depth_reached: int
    elapsed_s: float
    stopped_by: str | None = None
    """The limit that ended the run (``"max_iterations"``, ``"max_cost_usd"``...), if any."""
    trace_path: str | None = None
    run_id: str = ""
    stop_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True when the model gave its answer without a limit cutting it short."""
        return self.stopped_by is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``rlmx run --json``."""
        return {
            "answer": self.answer,
            "usage": self.usage.to_dict(),
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "iterations": self.iterations,
            "sub_calls": self.sub_calls,
            "depth_reached": self.depth_reached,
            "elapsed_s": round(self.elapsed_s, 4),
            "stopped_by": self.stopped_by,
            "stop_message": self.stop_message,
            "trace_path": self.trace_path,
            "run_id": self.run_id,
            "metadata": self.metadata,
        }
