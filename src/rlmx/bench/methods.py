"""The methods a benchmark compares: the RLM at depth 0, 1 and 2, and the paper's baselines.

Every method answers one :class:`~rlmx.bench.base.BenchItem` with the same models and
settings, and returns an :class:`~rlmx.result.RLMResult` (answer, usage, cost, iterations,
sub-calls, time). Baselines write the same trace events an RLM run writes (one "iteration"
per root-model call, one sub-call per map step), so ``rlmx view`` shows them too.

- ``rlm`` / ``rlm:0`` / ``rlm:1`` / ``rlm:2``: :class:`~rlmx.RLM` at that depth (``rlm`` is 1).
- ``direct``: the whole context in the prompt, cut to fit the model's window.
- ``rag``: BM25 over chunks of the context; the top-k chunks (in document order) in the prompt.
- ``mapreduce``: the sub-model reads every chunk for what bears on the question, concurrently;
  the model answers from those notes.
- ``summary``: an iterative compaction agent: read the context in window-sized parts, keeping
  running notes compacted to a fixed size, then answer from the notes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlmx.bench.base import BASELINES, BenchItem
from rlmx.bench.bm25 import BM25Index
from rlmx.bench.tokens import count_tokens
from rlmx.context import describe_context
from rlmx.engine import traced_request
from rlmx.exceptions import ConfigError
from rlmx.limits import Budget, Limits
from rlmx.models.base import Message, Model, ModelSettings
from rlmx.result import RLMResult
from rlmx.trace import JSONLTraceSink, Tracer

__all__ = [
    "BASELINES",
    "DEFAULT_WINDOW_TOKENS",
    "MethodSetup",
    "MethodSpec",
    "context_text",
    "parse_method",
    "run_method",
    "split_chunks",
]

DEFAULT_WINDOW_TOKENS = 128_000
"""The window assumed for a model whose window is unknown (a local server): ``--window``."""

_ANSWER_RESERVE_TOKENS = 2_048  # room for the question, the instructions and the reply
_NOTES_TOKENS = 2_000  # the compaction agent's running notes are kept under this


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A method as written on the command line: ``rlm``, ``rlm:2``, ``direct``..."""

    name: str
    depth: int | None = None

    @property
    def label(self) -> str:
        return f"rlm:{self.depth}" if self.name == "rlm" else self.name


def parse_method(text: str) -> MethodSpec:
    """``rlm`` (depth 1), ``rlm:0``, ``rlm:1``, ``rlm:2``, or a baseline's name."""
    name, _, depth = text.strip().lower().partition(":")
    if name == "rlm":
        if depth in ("", "0", "1", "2", "3"):
            return MethodSpec("rlm", int(depth) if depth else 1)
        raise ConfigError(f"Unknown RLM depth in {text!r}: use rlm:0, rlm:1, rlm:2 or rlm:3.")
    if name in BASELINES and not depth:
        return MethodSpec(name)
    known = ", ".join(("rlm", "rlm:0", "rlm:1", "rlm:2", *BASELINES))
    raise ConfigError(f"Unknown method {text!r}: choose from {known}.")


@dataclass(slots=True)
class MethodSetup:
    """What every method of one benchmark run shares (same models, same settings)."""

    model: Model
    sub_model: Model
    settings: ModelSettings | None = None
    sandbox: str = "isolated"
    limits: Limits | None = None
    """Limits of each RLM run (its iterations, cost, time); baselines honour its timeout."""
    window_tokens: int | None = None
    """The model's window for the baselines; default: the model's own, else 128K."""
    chunk_tokens: int = 1_000
    """Chunk size for ``rag``."""
    rag_top_k: int = 10
    map_chunk_tokens: int | None = None
    """Chunk size for ``mapreduce`` (default: what fits the sub-model's window, at most 32K)."""
    max_concurrency: int = 16

    def window(self, model: Model) -> int:
        return self.window_tokens or model.context_window or DEFAULT_WINDOW_TOKENS

    def prompt_budget(self, model: Model, question: str) -> int:
        """Tokens of context a single prompt to ``model`` may carry besides ``question``:
        the window less room for instructions and the reply (a quarter of a small window)."""
        window = self.window(model)
        return window - count_tokens(question) - min(_ANSWER_RESERVE_TOKENS, window // 4)


def context_text(context: str | dict[str, str]) -> str:
    """The context as one text: a folder-like dict becomes ``### path`` sections."""
    if isinstance(context, str):
        return context
    return "\n\n".join(f"### {path}\n{text}" for path, text in context.items())


def split_chunks(text: str, chunk_tokens: int) -> list[str]:
    """``text`` in pieces of about ``chunk_tokens`` tokens, cut at line ends where possible."""
    if not text:
        return []
    ratio = len(text[:200_000]) / max(count_tokens(text[:200_000]), 1)
    size = max(int(chunk_tokens * ratio), 1)
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            end = cut + 1 if cut != -1 else end
        chunks.append(text[start:end])
        start = end
    return chunks


def _fit(text: str, tokens: int) -> str:
    """The start of ``text`` that fits in ``tokens`` tokens (whole text when it fits)."""
    if tokens <= 0:
        return ""
    if count_tokens(text) <= tokens:
        return text
    low, high = 0, len(text)
    while high - low > 64:  # bisection on characters: a few dozen counts at most
        mid = (low + high) // 2
        if count_tokens(text[:mid]) <= tokens:
            low = mid
        else:
            high = mid
    return text[:low]


class _BaselineRun:
    """Budget and trace of one baseline answer: the events an RLM run writes, so the viewer
    and the trace reader see baselines the same way."""

    def __init__(
        self, setup: MethodSetup, item: BenchItem, method: str, trace: Path | None
    ) -> None:
        self.setup = setup
        self.budget = Budget(Limits(max_concurrency=setup.max_concurrency))
        self.sink = JSONLTraceSink(trace) if trace is not None else None
        self.tracer = Tracer([self.sink] if self.sink else [])
        self.run_id = uuid.uuid4().hex[:12]
        self.iterations = 0
        self.sub_calls = 0
        self._requests = 0
        description = describe_context(item.context)
        self._emit(
            "run_started",
            query=item.question,
            model=setup.model.name,
            sub_model=setup.sub_model.name,
            max_depth=0,
            method=method,
            context={
                "type": description.type_name,
                "total_chars": description.total_chars,
                "item_count": description.item_count,
            },
            limits=None,
        )

    def _emit(self, type_: str, **data: Any) -> None:
        self.tracer.emit(type_, run_id=self.run_id, parent_id=None, depth=0, **data)

    async def ask(self, prompt: str, *, call_id: str | None = None) -> str:
        """One request: the model's turn (an iteration) or, with ``call_id``, a sub-call."""
        model = self.setup.sub_model if call_id is not None else self.setup.model
        depth = 1 if call_id is not None else 0
        iteration = None
        if call_id is None:
            self.iterations += 1
            iteration = self.iterations
        self._requests += 1
        messages = [Message("user", prompt)]
        async with self.budget.request_slots:
            response = await traced_request(
                self._emit,
                self.budget,
                model,
                messages,
                self.setup.settings,
                request_id=f"{self.run_id}-r{self._requests}",
                depth=depth,
                trace_messages=[m.to_dict() for m in messages],
                iteration=iteration,
                call_id=call_id,
            )
        return response.text

    async def sub_call(self, prompt: str) -> str:
        self.sub_calls += 1
        call_id = f"{self.run_id}-c{self.sub_calls}"
        self._emit(
            "sub_call_started",
            call_id=call_id,
            kind="llm",
            model=self.setup.sub_model.name,
            prompt=prompt[:20_000],
            prompt_chars=len(prompt),
        )
        started = time.monotonic()
        error: str | None = None
        answer = ""
        try:
            answer = await self.ask(prompt, call_id=call_id)
        except Exception as exc:
            error = str(exc)
            raise
        finally:
            self._emit(
                "sub_call_finished",
                call_id=call_id,
                kind="llm",
                answer=answer[:20_000],
                error=error,
                duration_s=round(time.monotonic() - started, 6),
            )
        return answer

    def finish(self, answer: str, trace: Path | None) -> RLMResult:
        elapsed = self.budget.elapsed_s
        self._emit(
            "run_finished",
            answer=answer,
            finished=True,
            stopped_by=None,
            stop_message=None,
            iterations=self.iterations,
            sub_calls=self.sub_calls,
            elapsed_s=round(elapsed, 4),
            usage=self.budget.usage.to_dict(),
        )
        self.close()
        return RLMResult(
            answer=answer,
            output=answer,
            usage=self.budget.usage,
            cost_usd=self.budget.usage.cost_usd,
            iterations=self.iterations,
            sub_calls=self.sub_calls,
            depth_reached=1 if self.sub_calls else 0,
            elapsed_s=elapsed,
            trace_path=str(trace) if trace is not None else None,
            run_id=self.run_id,
        )

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def _answer_prompt(question: str, material: str, what: str) -> str:
    return (
        f"{what}\n\n<context>\n{material}\n</context>\n\n"
        f"Question: {question}\n\nAnswer the question using the context above."
    )


async def _direct(run: _BaselineRun, item: BenchItem) -> str:
    setup = run.setup
    budget = setup.prompt_budget(setup.model, item.question)
    text = context_text(item.context)
    material = _fit(text, budget)
    note = "The context" if len(material) == len(text) else "The beginning of the context"
    return await run.ask(_answer_prompt(item.question, material, f"{note} follows."))


async def _rag(run: _BaselineRun, item: BenchItem) -> str:
    setup = run.setup
    chunks = split_chunks(context_text(item.context), setup.chunk_tokens)
    index = BM25Index(chunks)
    top = index.top_k(item.question, setup.rag_top_k)
    budget = setup.prompt_budget(setup.model, item.question)
    chosen: list[int] = []
    used = 0
    for position, _score in top:
        cost = count_tokens(chunks[position])
        if used + cost > budget:
            break
        chosen.append(position)
        used += cost
    material = "\n...\n".join(chunks[i] for i in sorted(chosen))
    what = f"The {len(chosen)} passages of the context most relevant to the question follow."
    return await run.ask(_answer_prompt(item.question, material, what))


def _map_prompt(question: str, part: str, index: int, total: int) -> str:
    return (
        f"Below is part {index} of {total} of a long document.\n\n<part>\n{part}\n</part>\n\n"
        f"Question about the whole document: {question}\n\n"
        "From this part only, write down everything that helps answer the question: exact "
        "values, names, IDs, dates and counts, quoted as they appear. If nothing in this part "
        "is relevant, reply NONE."
    )


async def _mapreduce(run: _BaselineRun, item: BenchItem) -> str:
    setup = run.setup
    fits = setup.prompt_budget(setup.sub_model, item.question)
    size = setup.map_chunk_tokens or max(min(fits, 32_000), 256)
    chunks = split_chunks(context_text(item.context), size)
    notes = await asyncio.gather(
        *(
            run.sub_call(_map_prompt(item.question, chunk, i + 1, len(chunks)))
            for i, chunk in enumerate(chunks)
        )
    )
    joined = "\n\n".join(
        f"[part {i + 1}] {note.strip()}"
        for i, note in enumerate(notes)
        if note.strip().upper() != "NONE"
    )
    budget = setup.prompt_budget(setup.model, item.question)
    what = f"Notes taken from each of the {len(chunks)} parts of a long document follow."
    return await run.ask(_answer_prompt(item.question, _fit(joined, budget), what))


async def _summary(run: _BaselineRun, item: BenchItem) -> str:
    setup = run.setup
    notes_tokens = min(_NOTES_TOKENS, setup.window(setup.model) // 4)
    part_tokens = max(setup.prompt_budget(setup.model, item.question) - notes_tokens, 256)
    chunks = split_chunks(context_text(item.context), part_tokens)
    notes = ""
    for i, chunk in enumerate(chunks):
        notes = await run.ask(
            f"You are reading a long document part by part to answer: {item.question}\n\n"
            f"Your notes so far:\n<notes>\n{notes or '(none yet)'}\n</notes>\n\n"
            f"Part {i + 1} of {len(chunks)}:\n<part>\n{chunk}\n</part>\n\n"
            "Rewrite your notes to include what this part adds towards the answer (exact "
            "values, names, IDs, dates, running counts). Keep them under "
            f"{notes_tokens * 3 // 4} words. Reply with the notes only."
        )
        notes = _fit(notes, notes_tokens)
    what = f"Your notes from reading all {len(chunks)} parts of a long document follow."
    return await run.ask(_answer_prompt(item.question, notes, what))


_BASELINE_FUNCS = {"direct": _direct, "rag": _rag, "mapreduce": _mapreduce, "summary": _summary}


async def run_method(
    spec: MethodSpec, item: BenchItem, setup: MethodSetup, trace: Path | None = None
) -> RLMResult:
    """Answer ``item`` with ``spec``; the trace (if a path is given) is written as it goes."""
    if spec.name == "rlm":
        from rlmx.rlm import RLM

        rlm = RLM(
            setup.model,
            setup.sub_model,
            sandbox=setup.sandbox,
            max_depth=spec.depth if spec.depth is not None else 1,
            limits=setup.limits,
            trace=trace,
            settings=setup.settings,
            sub_settings=setup.settings,
        )
        return await rlm.acompletion(item.context, item.question)
    run = _BaselineRun(setup, item, spec.name, trace)
    limits = setup.limits
    try:
        answer = await asyncio.wait_for(
            _BASELINE_FUNCS[spec.name](run, item),
            timeout=None if limits is None or limits.timeout_s is None else float(limits.timeout_s),
        )
    except BaseException:
        run.close()
        raise
    return run.finish(answer, trace)
