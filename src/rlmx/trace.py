"""Trace events of a run and the sinks that receive them.

Every step of every run in the recursion tree emits a :class:`TraceEvent` carrying
``run_id``, ``parent_id`` and ``depth``, so the tree can be rebuilt from a flat stream.
Sinks are plain callables; :class:`JSONLTraceSink` writes one line per event and flushes
it, so a crashed run leaves a file that is valid up to its last complete line.
Model requests record only the messages added since the run's previous request, so a
trace grows linearly with the run.

:func:`load_trace` reads a trace back into typed objects (the run tree, iterations, model
calls, cells, sub-calls) for analysis in a notebook or a viewer.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlmx.models.base import ModelResponse

__all__ = [
    "EVENT_TYPES",
    "Cell",
    "JSONLTraceSink",
    "ModelCall",
    "Run",
    "RunIteration",
    "SubCall",
    "Trace",
    "TraceEvent",
    "TraceSink",
    "Tracer",
    "load_trace",
    "read_events",
    "response_fields",
]

EVENT_TYPES = (
    "run_started",
    "model_request",
    "model_response",
    "cell_executed",
    "sub_call_started",
    "sub_call_finished",
    "sub_call_refused",
    "run_finished",
)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    type: str
    run_id: str
    parent_id: str | None
    depth: int
    seq: int
    ts: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "run_id": self.run_id,
            "parent_id": self.parent_id,
            "depth": self.depth,
            "seq": self.seq,
            "ts": self.ts,
            **self.data,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=_json_default)


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


TraceSink = Callable[[TraceEvent], None]


def response_fields(response: ModelResponse, cost: Decimal | None) -> dict[str, Any]:
    """A ``model_response`` event's description of a reply: text, usage, cost, who answered."""
    usage = response.usage
    return {
        "answered_by": response.answered_by,
        "response_model": response.model_name,
        "text": response.text,
        "finish_reason": response.finish_reason,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "cost_usd": None if cost is None else str(cost),
    }


class JSONLTraceSink:
    """Appends each event as one JSON line; flushed per line. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: TraceEvent) -> None:
        line = event.to_json()
        with self._lock:
            if self._file is None:
                return
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Tracer:
    """Fans events out to sinks. A failing sink is reported once and then skipped."""

    def __init__(self, sinks: Iterable[TraceSink] = ()) -> None:
        self.sinks: list[TraceSink] = list(sinks)
        self._seq = itertools.count()
        self._broken: set[int] = set()

    def emit(
        self, type_: str, *, run_id: str, parent_id: str | None, depth: int, **data: Any
    ) -> None:
        if not self.sinks:
            return
        event = TraceEvent(type_, run_id, parent_id, depth, next(self._seq), time.time(), data)
        for i, sink in enumerate(self.sinks):
            if i in self._broken:
                continue
            try:
                sink(event)
            except Exception as exc:
                self._broken.add(i)
                warnings.warn(
                    f"Trace sink {sink!r} failed and was disabled: {exc!r}",
                    RuntimeWarning,
                    stacklevel=2,
                )


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Events of a JSONL trace; a torn last line (crashed run) is skipped."""
    events: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return events


# The reader lives in its own module; it is part of this module's public API.
from rlmx._trace_reader import (  # noqa: E402
    Cell,
    ModelCall,
    Run,
    RunIteration,
    SubCall,
    Trace,
    load_trace,
)
