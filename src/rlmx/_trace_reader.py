"""Reading a JSONL trace back into typed objects: the run tree, its iterations, model calls,
cells and sub-calls. Public as ``rlmx.trace.load_trace`` (and the types beside it).

A trace is a flat stream of events from every run of a recursion tree. The reader rebuilds
the tree from ``run_id`` / ``parent_id``, pairs requests with responses (``request_id``),
sub-call starts with their ends (``call_id``), and attaches each sub-call to the cell that
made it (a sub-call starts while its cell runs, so it is logged before that cell's
``cell_executed`` event). Traces of crashed or killed runs are read up to their last
complete line; the result says the run did not finish, and lines that are not events are
listed in ``problems`` rather than raised.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = ["Cell", "ModelCall", "Run", "RunIteration", "SubCall", "Trace", "load_trace"]

_REQUIRED = ("type", "run_id", "depth")


@dataclass(slots=True)
class ModelCall:
    """One model request and its response (or error)."""

    request_id: str
    run_id: str
    model: str
    started_at: float
    depth: int
    """The depth the request is charged to (a run's own turn, or its sub-call's depth)."""
    iteration: int | None = None
    """The run's turn this request asked for; ``None`` for a sub-call's request."""
    call_id: str | None = None
    """The sub-call this request served, if any."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Only the messages added since the run's previous request."""
    total_messages: int = 0
    reply: str | None = None
    error: str | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = None
    response_model: str | None = None
    answered_by: str | None = None
    finish_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.finished_at is not None


@dataclass(slots=True)
class SubCall:
    """One ``llm_query``/``rlm_query`` prompt made by a cell."""

    call_id: str
    run_id: str
    kind: str
    """``"llm"`` (a plain model call) or ``"rlm"`` (a child run, or a plain call at the cap)."""
    model: str
    prompt: str
    prompt_chars: int
    started_at: float
    child_run_id: str | None = None
    answer: str | None = None
    error: str | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    refused: str | None = None
    """Why the call was refused before sending (too large for the model's window)."""
    model_call: ModelCall | None = None
    child: Run | None = None

    @property
    def done(self) -> bool:
        return self.finished_at is not None or self.refused is not None


@dataclass(slots=True)
class Cell:
    """One executed code block and what it printed."""

    run_id: str
    iteration: int
    index: int
    code: str
    at: float
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    final: str | None = None
    timed_out: bool = False
    restarted: bool = False
    duration_s: float = 0.0
    sub_calls: list[SubCall] = field(default_factory=list)


@dataclass(slots=True)
class RunIteration:
    """One turn of a run: the model's reply and the cells it ran."""

    number: int
    model_call: ModelCall | None = None
    cells: list[Cell] = field(default_factory=list)
    sub_calls: list[SubCall] = field(default_factory=list)
    """Every sub-call of the turn (those of its cells, and any left unattached)."""


@dataclass(slots=True)
class Run:
    """One run of the tree: the root, or a child started by ``rlm_query``."""

    run_id: str
    parent_id: str | None
    depth: int
    started_at: float | None = None
    query: str | None = None
    model: str | None = None
    sub_model: str | None = None
    context: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    iterations: list[RunIteration] = field(default_factory=list)
    model_calls: list[ModelCall] = field(default_factory=list)
    """Every request made in this run, its turns and its sub-calls' plain requests."""
    sub_calls: list[SubCall] = field(default_factory=list)
    children: list[Run] = field(default_factory=list)
    finished: bool = False
    """Whether the run logged its end (``run_finished``); a crashed run did not."""
    answered: bool = False
    answer: str | None = None
    stopped_by: str | None = None
    stop_message: str | None = None
    elapsed_s: float | None = None
    usage: dict[str, Any] | None = None
    """The whole tree's usage, as reported by the root at its end."""
    ended_at: float | None = None

    @property
    def cells(self) -> list[Cell]:
        return [cell for it in self.iterations for cell in it.cells]

    @property
    def errors(self) -> list[str]:
        """Failed model calls, failed sub-calls and cells that raised, in order."""
        out = [f"model call {c.request_id}: {c.error}" for c in self.model_calls if c.error]
        out += [f"cell {c.iteration}.{c.index}: {c.error}" for c in self.cells if c.error]
        out += [f"sub-call {s.call_id}: {s.error}" for s in self.sub_calls if s.error]
        return out

    def walk(self) -> Iterator[Run]:
        """This run and every run below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def own_cost_usd(self) -> Decimal | None:
        """What this run's own requests cost (children excluded); ``None`` if any is unpriced."""
        return _sum_costs(self.model_calls)

    @property
    def cost_usd(self) -> Decimal | None:
        """This run's cost including its children's."""
        return _sum_costs([c for run in self.walk() for c in run.model_calls])

    @property
    def input_tokens(self) -> int:
        return sum(c.input_tokens for run in self.walk() for c in run.model_calls)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for run in self.walk() for c in run.model_calls)


@dataclass(slots=True)
class Trace:
    """A loaded trace: its runs, the root, and anything that could not be read."""

    path: Path | None
    runs: dict[str, Run]
    roots: list[Run]
    """Runs without a parent, in order (one per ``completion`` written to the file)."""
    events: int
    problems: list[str] = field(default_factory=list)
    truncated: bool = False
    """The file ended in the middle of a line (the writer was killed)."""

    @property
    def root(self) -> Run | None:
        return self.roots[0] if self.roots else None

    @property
    def finished(self) -> bool:
        """Every root logged its end and nothing was cut off."""
        return bool(self.roots) and all(r.finished for r in self.roots) and not self.truncated

    def model_calls(self) -> list[ModelCall]:
        return [c for run in self.runs.values() for c in run.model_calls]

    def cells(self) -> list[Cell]:
        return [cell for run in self.runs.values() for cell in run.cells]

    def sub_calls(self) -> list[SubCall]:
        return [s for run in self.runs.values() for s in run.sub_calls]


def _sum_costs(calls: list[ModelCall]) -> Decimal | None:
    total = Decimal(0)
    for call in calls:
        if not call.done or call.error:
            continue
        if call.cost_usd is None:
            return None
        total += call.cost_usd
    return total


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class _Builder:
    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.roots: list[Run] = []
        self.requests: dict[str, ModelCall] = {}
        self.sub_calls: dict[str, SubCall] = {}
        self.pending: dict[str, list[SubCall]] = {}  # sub-calls awaiting their cell, per run
        self.problems: list[str] = []

    def run(self, event: dict[str, Any]) -> Run:
        run_id = str(event["run_id"])
        run = self.runs.get(run_id)
        if run is None:
            parent = event.get("parent_id")
            run = Run(run_id, parent if isinstance(parent, str) else None, _int(event["depth"]))
            self.runs[run_id] = run
            if run.parent_id is None:
                self.roots.append(run)
        return run

    def iteration(self, run: Run, number: int) -> RunIteration:
        while len(run.iterations) < number:
            run.iterations.append(RunIteration(len(run.iterations) + 1))
        return run.iterations[number - 1]

    def add(self, event: dict[str, Any], line: int) -> None:
        kind = event["type"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            self.problems.append(f"line {line}: unknown event type {kind!r}")
            return
        handler(self.run(event), event)

    def _on_run_started(self, run: Run, e: dict[str, Any]) -> None:
        run.started_at = e.get("ts")
        run.query = _str(e.get("query"))
        run.model = _str(e.get("model"))
        run.sub_model = _str(e.get("sub_model"))
        run.context = e.get("context") if isinstance(e.get("context"), dict) else None
        run.limits = e.get("limits") if isinstance(e.get("limits"), dict) else None

    def _on_model_request(self, run: Run, e: dict[str, Any]) -> None:
        iteration = e.get("iteration")
        call = ModelCall(
            request_id=str(e.get("request_id")),
            run_id=run.run_id,
            model=str(e.get("model")),
            started_at=float(e.get("ts") or 0.0),
            depth=_int(e.get("request_depth", run.depth)),
            iteration=iteration if isinstance(iteration, int) else None,
            call_id=_str(e.get("call_id")),
            messages=list(e.get("messages") or []),
            total_messages=_int(e.get("total_messages")),
        )
        self.requests[call.request_id] = call
        run.model_calls.append(call)
        if call.call_id is not None and call.call_id in self.sub_calls:
            self.sub_calls[call.call_id].model_call = call
        elif call.iteration is not None:
            self.iteration(run, call.iteration).model_call = call

    def _on_model_response(self, run: Run, e: dict[str, Any]) -> None:
        call = self.requests.get(str(e.get("request_id")))
        if call is None:
            self.problems.append(f"model_response {e.get('request_id')!r} has no request")
            return
        call.finished_at = e.get("ts")
        call.duration_s = e.get("duration_s")
        call.error = _str(e.get("error"))
        call.reply = _str(e.get("text"))
        call.response_model = _str(e.get("response_model"))
        call.answered_by = _str(e.get("answered_by"))
        call.finish_reason = _str(e.get("finish_reason"))
        call.cost_usd = _decimal(e.get("cost_usd"))
        raw_usage = e.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        call.input_tokens = _int(usage.get("input_tokens"))
        call.output_tokens = _int(usage.get("output_tokens"))
        call.cached_input_tokens = _int(usage.get("cached_input_tokens"))
        call.reasoning_tokens = _int(usage.get("reasoning_tokens"))

    def _on_cell_executed(self, run: Run, e: dict[str, Any]) -> None:
        number = _int(e.get("iteration")) or max(len(run.iterations), 1)
        cell = Cell(
            run_id=run.run_id,
            iteration=number,
            index=_int(e.get("index")),
            code=str(e.get("code") or ""),
            at=float(e.get("ts") or 0.0),
            stdout=str(e.get("stdout") or ""),
            stderr=str(e.get("stderr") or ""),
            error=_str(e.get("error")),
            final=_str(e.get("final")),
            timed_out=bool(e.get("timed_out")),
            restarted=bool(e.get("restarted")),
            duration_s=float(e.get("duration_s") or 0.0),
            sub_calls=self.pending.pop(run.run_id, []),
        )
        self.iteration(run, number).cells.append(cell)

    def _start_sub_call(self, run: Run, e: dict[str, Any], refused: str | None) -> SubCall:
        sub = SubCall(
            call_id=str(e.get("call_id") or f"refused-{len(run.sub_calls)}"),
            run_id=run.run_id,
            kind=str(e.get("kind") or "llm"),
            model=str(e.get("model")),
            prompt=str(e.get("prompt") or ""),
            prompt_chars=_int(e.get("prompt_chars")),
            started_at=float(e.get("ts") or 0.0),
            child_run_id=_str(e.get("child_run_id")),
            refused=refused,
        )
        self.sub_calls[sub.call_id] = sub
        run.sub_calls.append(sub)
        self.pending.setdefault(run.run_id, []).append(sub)
        if run.iterations:
            run.iterations[-1].sub_calls.append(sub)
        return sub

    def _on_sub_call_started(self, run: Run, e: dict[str, Any]) -> None:
        self._start_sub_call(run, e, None)

    def _on_sub_call_refused(self, run: Run, e: dict[str, Any]) -> None:
        self._start_sub_call(run, e, str(e.get("reason") or "refused"))

    def _on_sub_call_finished(self, run: Run, e: dict[str, Any]) -> None:
        sub = self.sub_calls.get(str(e.get("call_id")))
        if sub is None:
            self.problems.append(f"sub_call_finished {e.get('call_id')!r} has no start")
            return
        sub.finished_at = e.get("ts")
        sub.answer = _str(e.get("answer"))
        sub.error = _str(e.get("error"))
        sub.duration_s = e.get("duration_s")

    def _on_run_finished(self, run: Run, e: dict[str, Any]) -> None:
        run.finished = True
        run.ended_at = e.get("ts")
        run.answer = _str(e.get("answer"))
        run.answered = bool(e.get("finished"))
        run.stopped_by = _str(e.get("stopped_by"))
        run.stop_message = _str(e.get("stop_message"))
        run.elapsed_s = e.get("elapsed_s")
        run.usage = e.get("usage") if isinstance(e.get("usage"), dict) else None

    def finish(self) -> None:
        for run in self.runs.values():
            if run.parent_id is not None and run.parent_id in self.runs:
                self.runs[run.parent_id].children.append(run)
            elif run.parent_id is not None:
                self.problems.append(f"run {run.run_id} names an unknown parent {run.parent_id}")
                self.roots.append(run)
        for sub in self.sub_calls.values():
            if sub.child_run_id is not None:
                sub.child = self.runs.get(sub.child_run_id)


def load_trace(path: str | Path) -> Trace:
    """Read a JSONL trace written by ``trace=`` / ``--trace`` into a :class:`Trace`.

    Never raises for the content: a torn last line sets ``truncated``; lines that are not
    JSON objects with ``type``, ``run_id`` and ``depth`` are skipped and listed in
    ``problems``. A missing file raises ``FileNotFoundError``.
    """
    file = Path(path)
    builder = _Builder()
    events = 0
    truncated = False
    with file.open("rb") as fh:
        lines = fh.read().split(b"\n")
    last = len(lines)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if number == last:
                truncated = True  # the writer died mid-line; everything before is whole
            else:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.reason
                builder.problems.append(f"line {number}: not JSON ({reason})")
            continue
        if not isinstance(event, dict) or any(key not in event for key in _REQUIRED):
            builder.problems.append(f"line {number}: not a trace event")
            continue
        events += 1
        try:
            builder.add(event, number)
        except (TypeError, ValueError, AttributeError) as exc:
            builder.problems.append(f"line {number}: unreadable {event.get('type')!r} ({exc})")
    builder.finish()
    return Trace(
        path=file,
        runs=builder.runs,
        roots=builder.roots,
        events=events,
        problems=builder.problems,
        truncated=truncated,
    )
