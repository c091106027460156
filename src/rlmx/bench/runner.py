"""The benchmark runner: every method over every item, concurrently, resumable.

Results go to ``OUT/results.jsonl`` as they complete (one record per method x item: score,
answer, gold, tokens, cost, latency, iterations, sub-calls, trace path), so an interrupted
run loses nothing and a rerun with the same ``--out`` skips what is done. Items that ended
in an error are retried on a rerun. ``OUT/config.json`` pins what the folder holds: a
rerun with another task, seed or model is refused rather than mixed in.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlmx.bench.base import BenchItem, Task
from rlmx.bench.methods import MethodSetup, MethodSpec, run_method
from rlmx.exceptions import ConfigError, ModelAPIError, ModelRequestsDisabled, UserError
from rlmx.result import RLMResult

__all__ = ["RESULTS_FILE", "BenchConfig", "BenchProgress", "BenchRunner", "load_results"]

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"
# Errors after which every other item would fail the same way: stop the benchmark.
_FATAL_STATUSES = frozenset({401, 403, 404})
# Fields of config.json that must match for a rerun to add to the same folder.
_PINNED = ("task", "seed", "model", "sub_model", "task_options")


@dataclass(slots=True)
class BenchConfig:
    """What one benchmark run covers; written to ``OUT/config.json``."""

    task: str
    methods: list[MethodSpec]
    lengths: list[int]
    n: int
    seed: int
    out: Path
    model: str
    sub_model: str
    concurrency: int = 4
    task_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "methods": [m.label for m in self.methods],
            "lengths": self.lengths,
            "n": self.n,
            "seed": self.seed,
            "model": self.model,
            "sub_model": self.sub_model,
            "task_options": self.task_options,
        }


class BenchProgress:
    """Receives the runner's progress; the CLI's live console subclasses it."""

    def started(self, total: int, already_done: int) -> None:
        """``total`` method x item pairs, of which ``already_done`` come from a previous run."""

    def item_started(self, method: str, item: BenchItem) -> None:
        """One pair started."""

    def item_finished(self, record: dict[str, Any]) -> None:
        """One pair finished (its record, as written to ``results.jsonl``)."""


def load_results(out: Path) -> list[dict[str, Any]]:
    """The records of ``OUT/results.jsonl`` (a torn last line is ignored); the latest record
    of each method x item wins."""
    path = out / RESULTS_FILE
    if not path.exists():
        return []
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "method" in record and "item_id" in record:
                latest[(str(record["method"]), str(record["item_id"]))] = record
    return list(latest.values())


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


class BenchRunner:
    """Runs ``config.methods`` over the task's items with ``setup``'s models."""

    def __init__(
        self,
        task: Task,
        config: BenchConfig,
        setup: MethodSetup,
        progress: BenchProgress | None = None,
        item_source: Callable[[int], list[BenchItem]] | None = None,
    ) -> None:
        self.task = task
        self.config = config
        self.setup = setup
        self.progress = progress or BenchProgress()
        self.item_source = item_source or (lambda length: task.items(length, config.n, config.seed))
        self._write_lock = asyncio.Lock()

    def _check_config(self) -> None:
        """Refuse to mix results of another configuration into the folder."""
        path = self.config.out / CONFIG_FILE
        current = self.config.to_dict()
        if path.exists():
            try:
                previous = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                previous = {}
            for key in _PINNED:
                if key in previous and previous[key] != current[key]:
                    raise ConfigError(
                        f"{self.config.out} holds results for {key}={previous[key]!r}, not "
                        f"{current[key]!r}: pass another --out to start a new benchmark, or "
                        "the same settings to resume this one."
                    )
            methods = list(dict.fromkeys([*previous.get("methods", []), *current["methods"]]))
            lengths = sorted({*previous.get("lengths", []), *current["lengths"]})
            current = {**current, "methods": methods, "lengths": lengths}
        path.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")

    async def arun(self) -> list[dict[str, Any]]:
        """Run what is not done yet; returns every record of the folder (old and new)."""
        out = self.config.out
        out.mkdir(parents=True, exist_ok=True)
        self._check_config()
        done = {(r["method"], r["item_id"]) for r in load_results(out) if r.get("error") is None}
        pairs: list[tuple[MethodSpec, BenchItem]] = []
        total = 0
        for length in self.config.lengths:
            items = self.item_source(length)
            for spec in self.config.methods:
                for item in items:
                    total += 1
                    if (spec.label, item.item_id) not in done:
                        pairs.append((spec, item))
        self.progress.started(total, total - len(pairs))
        slots = asyncio.Semaphore(max(1, self.config.concurrency))

        async def one(spec: MethodSpec, item: BenchItem) -> None:
            async with slots:
                self.progress.item_started(spec.label, item)
                record = await self._run_pair(spec, item)
                async with self._write_lock:
                    with (out / RESULTS_FILE).open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                self.progress.item_finished(record)

        tasks = [asyncio.create_task(one(spec, item)) for spec, item in pairs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for pending in tasks:
                pending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return load_results(out)

    async def _run_pair(self, spec: MethodSpec, item: BenchItem) -> dict[str, Any]:
        trace_rel = Path("traces") / _safe_name(spec.label) / f"{_safe_name(item.item_id)}.jsonl"
        trace = self.config.out / trace_rel
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.unlink(missing_ok=True)  # a retried item starts a fresh trace
        record: dict[str, Any] = {
            "task": self.task.name,
            "method": spec.label,
            "item_id": item.item_id,
            "length": item.length,
            "seed": self.config.seed,
            "question": item.question,
            "gold": item.gold,
            "meta": item.meta,
            "model": self.config.model,
            "sub_model": self.config.sub_model,
            "trace": trace_rel.as_posix(),
        }
        started = time.monotonic()
        try:
            result = await run_method(spec, item, self.setup, trace)
        except (ConfigError, UserError, ModelRequestsDisabled):
            raise
        except ModelAPIError as exc:
            if exc.status in _FATAL_STATUSES:
                raise
            return self._failed(record, exc, started)
        except Exception as exc:  # one item's failure must not lose the others' results
            return self._failed(record, exc, started)
        answer = result.answer
        record.update(
            score=float(self.task.score(item, answer)),
            answer=answer,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=None if result.cost_usd is None else str(result.cost_usd),
            latency_s=round(result.elapsed_s, 4),
            iterations=result.iterations,
            sub_calls=result.sub_calls,
            cached_responses=result.usage.cached_responses,
            stopped_by=result.stopped_by,
            error=None,
        )
        return record

    @staticmethod
    def _failed(record: dict[str, Any], exc: Exception, started: float) -> dict[str, Any]:
        """The record of a pair that ended in an error: score 0, and what it spent so far."""
        partial = getattr(exc, "result", None)
        spent = partial if isinstance(partial, RLMResult) else None
        record.update(
            score=0.0,
            answer=spent.answer if spent else None,
            input_tokens=spent.usage.input_tokens if spent else 0,
            output_tokens=spent.usage.output_tokens if spent else 0,
            cost_usd=str(spent.cost_usd) if spent and spent.cost_usd is not None else None,
            latency_s=round(time.monotonic() - started, 4),
            iterations=spent.iterations if spent else 0,
            sub_calls=spent.sub_calls if spent else 0,
            cached_responses=0,
            stopped_by=spent.stopped_by if spent else None,
            error=f"{type(exc).__name__}: {exc}",
        )
        return record
