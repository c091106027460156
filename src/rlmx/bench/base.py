"""What every benchmark task provides (seeded items and a scorer), and the methods' names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["BASELINES", "BenchItem", "Task"]

BASELINES = ("direct", "rag", "mapreduce", "summary")
"""The baseline methods besides the RLM itself (``rlm``, ``rlm:0`` ... ``rlm:3``)."""


@dataclass(frozen=True, slots=True)
class BenchItem:
    """One question over one context, with its gold answer.

    ``item_id`` is stable across runs for the same task, settings and seed (the runner's resume
    key). ``gold`` is JSON-serialisable and never shown to the method; ``meta`` holds what a
    report may group by (variant, question family, needle depth, ...).
    """

    task: str
    item_id: str
    context: str | dict[str, str]
    question: str
    gold: Any
    length: int
    """The nominal context length in tokens this item was built for."""
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """A benchmark: builds items deterministically and scores answers."""

    name: str

    def items(self, length: int, n: int, seed: int) -> list[BenchItem]:
        """``n`` items at nominal ``length`` tokens; the same arguments give the same items."""
        ...

    def score(self, item: BenchItem, answer: str) -> float:
        """The answer's score in ``[0, 1]``, computed exactly as the original benchmark does."""
        ...
