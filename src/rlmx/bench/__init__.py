"""Benchmarks: seeded task generators faithful to the published constructions, their scorers,
the baseline methods and the runner behind ``rlmx bench``.

A task turns ``(length, n, seed)`` into :class:`BenchItem` instances (same seed, same bytes)
and scores an answer against an item's gold in ``[0, 1]``; reports show the mean x100.
"""

from __future__ import annotations

from rlmx.bench.base import BenchItem, Task

__all__ = ["BenchItem", "Task"]
