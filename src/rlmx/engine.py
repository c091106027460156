"""The RLM loop: ask the model, run its code, show the output, until an answer or a limit.

One run is a :class:`RunState` advanced by explicit steps (:meth:`Engine._step`). Code
runs in a sandbox; the sandbox's sub-calls come back here (:class:`_SubCallRouter`),
which routes them by depth: a child run with its own sandbox while ``depth <
max_depth - 1``, a plain model call otherwise. Every run of the tree spends from one
shared :class:`~rlmx.limits.Budget` and reports to one :class:`~rlmx.trace.Tracer`.
The engine never prints: everything observable is a trace event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlmx.context import describe_context
from rlmx.exceptions import (
    ContextLengthError,
    ModelAPIError,
    ModelError,
    ModelRequestsDisabled,
    RLMError,
)
from rlmx.limits import Budget, Limits, StopReason, as_seconds
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings
from rlmx.parsing import FinalMarker, format_help, parse_reply
from rlmx.prompts import (
    PromptInputs,
    build_system_prompt,
    final_answer_now,
    first_user_message,
    format_cell_observation,
    next_step_message,
)
from rlmx.sandbox.base import ExecResult, Sandbox, SandboxConfig
from rlmx.trace import Tracer, response_fields

__all__ = ["Engine", "EngineConfig", "RunOutcome", "RunState"]

SystemPrompt = str | Callable[[PromptInputs], str]

# Variables the model is told to keep its answer-in-progress in; read when a limit cuts
# the run short, so the caller still gets the best partial answer.
PARTIAL_ANSWER_VARIABLES = ("answer", "final_answer")
_TRACE_PROMPT_CHARS = 20_000
# HTTP statuses after which retrying or continuing cannot help: stop the whole run.
_FATAL_STATUSES = frozenset({400, 401, 403, 404})


@dataclass(slots=True)
class EngineConfig:
    """Everything fixed for one ``completion`` call."""

    model: Model
    sub_model: Model
    max_depth: int
    limits: Limits
    sandbox_factory: Callable[[SandboxConfig], Sandbox]
    system_prompt: SystemPrompt | None = None
    worked_example: bool = False
    settings: ModelSettings | None = None
    sub_settings: ModelSettings | None = None
    models: dict[str, Model] = field(default_factory=dict)
    """Extra models reachable as ``llm_query(prompt, model="name")``."""
    output_check: Callable[[str], tuple[Any, str | None]] | None = None
    """Validates the root's final answer: returns (value, error message or None)."""
    output_hint: str | None = None


@dataclass(slots=True)
class RunState:
    """The explicit state of one run (the root, or a child in the tree)."""

    run_id: str
    parent_id: str | None
    depth: int
    query: str | None
    model: Model
    settings: ModelSettings | None
    messages: list[Message] = field(default_factory=list)
    sent: int = 0
    """How many of ``messages`` earlier requests already sent (the trace logs the rest)."""
    iteration: int = 0
    final: str | None = None
    output: Any = None
    partial: str | None = None
    last_reply: str = ""
    stop: StopReason | None = None
    fatal: BaseException | None = None
    sub_calls: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RunOutcome:
    answer: str
    output: Any
    stop: StopReason | None
    iterations: int
    run_id: str


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


class Engine:
    """Runs the RLM loop for a tree of runs sharing one budget and one tracer."""

    def __init__(self, config: EngineConfig, budget: Budget, tracer: Tracer) -> None:
        self.config = config
        self.budget = budget
        self.tracer = tracer
        self._request_ids = itertools.count(1)
        self.root: RunState | None = None
        self.sandbox_report: dict[str, Any] = {}

    # ------------------------------------------------------------------ runs
    def new_state(
        self,
        *,
        query: str | None,
        depth: int = 0,
        parent_id: str | None = None,
        run_id: str | None = None,
    ) -> RunState:
        is_root = depth == 0
        state = RunState(
            run_id=run_id or _new_id(),
            parent_id=parent_id,
            depth=depth,
            query=query,
            model=self.config.model if is_root else self.config.sub_model,
            settings=self.config.settings if is_root else self.config.sub_settings,
        )
        if is_root:
            self.root = state
        return state

    async def run(self, state: RunState, context: Any) -> RunOutcome:
        """Drive ``state`` to an answer or a limit. Raises only for fatal errors."""
        started = time.monotonic()
        cfg = self.config
        limits = cfg.limits
        description = describe_context(context)
        self._emit(
            state,
            "run_started",
            query=state.query,
            model=state.model.name,
            sub_model=cfg.sub_model.name,
            max_depth=cfg.max_depth,
            context=_description_dict(description),
            limits=limits.to_dict() if state.depth == 0 else None,
        )
        has_sub_calls = state.depth < cfg.max_depth
        router = _SubCallRouter(self, state) if has_sub_calls else None
        sandbox = cfg.sandbox_factory(
            SandboxConfig(
                handler=router,
                cell_timeout_s=as_seconds(limits.cell_timeout_s),
                max_output_chars=limits.max_output_chars,
            )
        )
        start = _SandboxStart(sandbox, context)
        try:
            try:
                inputs = PromptInputs(
                    context=description,
                    depth=state.depth,
                    max_depth=cfg.max_depth,
                    max_iterations=limits.max_iterations,
                    sub_model=cfg.sub_model.name,
                    sub_model_window=cfg.sub_model.context_window,
                    can_recurse=state.depth < cfg.max_depth - 1,
                    budget_note=_budget_note(limits),
                    worked_example=cfg.worked_example,
                )
                state.messages = [
                    Message("system", self._system_prompt(inputs, state)),
                    Message("user", first_user_message(state.query)),
                ]
                while state.final is None and state.stop is None:
                    await self._step(state, start)
            finally:
                if start.ready and state.depth == 0:
                    self.sandbox_report = sandbox.describe()
                await start.close()
        finally:
            state.elapsed_s = time.monotonic() - started
            if state.fatal is None:
                self._emit_finished(state)
        answer = state.final if state.final is not None else (state.partial or "")
        return RunOutcome(
            answer=answer,
            output=state.output if state.final is not None else answer,
            stop=state.stop,
            iterations=state.iteration,
            run_id=state.run_id,
        )

    def _emit_finished(self, state: RunState) -> None:
        self._emit(
            state,
            "run_finished",
            answer=state.final if state.final is not None else state.partial,
            finished=state.final is not None,
            stopped_by=state.stop.limit if state.stop else None,
            stop_message=state.stop.message if state.stop else None,
            iterations=state.iteration,
            sub_calls=state.sub_calls,
            elapsed_s=round(state.elapsed_s, 4),
            usage=self.budget.usage.to_dict() if state.depth == 0 else None,
        )

    def _system_prompt(self, inputs: PromptInputs, state: RunState) -> str:
        custom = self.config.system_prompt
        if custom is None:
            text = build_system_prompt(inputs)
        elif isinstance(custom, str):
            text = custom
        else:
            text = custom(inputs)
        if state.depth == 0 and self.config.output_hint:
            text += "\n" + self.config.output_hint
        return text

    # ------------------------------------------------------------------ steps
    async def _step(self, state: RunState, start: _SandboxStart) -> None:
        """One turn: check budgets, ask the model, run its code, record what happened."""
        stop = self.budget.check()
        if stop is not None:
            state.stop = stop
            return
        if state.iteration >= self.config.limits.max_iterations:
            await self._last_call(state, start)
            return
        reply = await start.alongside(self._ask(state))
        sandbox = start.sandbox
        state.iteration += 1
        state.last_reply = reply.text
        state.messages.append(Message("assistant", reply.text))
        parsed = parse_reply(reply.text)

        if parsed.final is not None and not parsed.code_blocks:
            error = await self._accept_final(state, sandbox, parsed.final)
            if error is None:
                return
            state.messages.append(Message("user", error))
            return

        if not parsed.code_blocks:
            note = format_help()
            if parsed.unclosed_fence:
                note = "Your code block was not closed with ```; nothing ran.\n" + note
            state.messages.append(Message("user", note))
            return

        observations: list[str] = []
        total = len(parsed.code_blocks)
        for index, code in enumerate(parsed.code_blocks):
            result = await self._execute(state, sandbox, code, index)
            if state.fatal is not None:
                raise state.fatal
            observations.append(
                format_cell_observation(
                    index,
                    total,
                    result.stdout,
                    result.stderr,
                    result.error,
                    result.truncated_chars,
                    self.config.limits.max_output_chars,
                    result.timed_out,
                    result.restarted,
                    result.lost_variables,
                )
            )
            if result.final is not None:
                error = self._check_output(state, result.final)
                if error is None:
                    return
                observations.append(error)
                break
            if self.budget.check() is not None:
                break
        if parsed.ignored_final:
            observations.append(
                "[note: the FINAL you wrote after your code was ignored — it was written "
                "before the output above existed. Answer again if the output confirms it.]"
            )
        await self._refresh_partial(state, sandbox)
        observations.append(
            next_step_message(state.query, state.iteration, self.config.limits.max_iterations)
        )
        state.messages.append(Message("user", "\n\n".join(observations)))

    async def _last_call(self, state: RunState, start: _SandboxStart) -> None:
        """Out of turns: one last request for the answer, without running code."""
        limit = self.config.limits.max_iterations
        state.stop = StopReason(
            "max_iterations",
            state.iteration,
            f"max_iterations={limit} reached; raise it or simplify the query.",
        )
        state.messages.append(
            Message("user", final_answer_now(f"You have used all {limit} turns."))
        )
        try:
            reply = await start.alongside(self._ask(state))
        except ModelError as exc:
            if _is_fatal(exc):
                raise
            return
        sandbox = start.sandbox
        state.last_reply = reply.text
        state.messages.append(Message("assistant", reply.text))
        parsed = parse_reply(reply.text)
        if parsed.final is not None:
            await self._accept_final(state, sandbox, parsed.final)
        if state.final is None:
            await self._refresh_partial(state, sandbox)
            if state.partial is None and reply.text.strip():
                state.partial = reply.text.strip()

    async def _accept_final(
        self, state: RunState, sandbox: Sandbox, marker: FinalMarker
    ) -> str | None:
        """Take a FINAL written as text; returns a message for the model if it cannot."""
        if marker.kind == "value":
            return self._check_output(state, marker.payload)
        try:
            value = await sandbox.variable(marker.payload)
        except NotImplementedError:  # pragma: no cover - every sandbox implements it
            value = None
        if value is None:
            result = await sandbox.execute(f"FINAL_VAR({marker.payload!r})")
            if result.final is not None:
                return self._check_output(state, result.final)
            return (
                f"FINAL_VAR({marker.payload}) failed: {result.error or 'no such variable'}. "
                "Assign the variable in code first, or answer with FINAL(value)."
            )
        return self._check_output(state, value)

    def _check_output(self, state: RunState, answer: str) -> str | None:
        check = self.config.output_check
        if check is None or state.depth > 0:
            state.final = answer
            state.output = answer
            return None
        value, error = check(answer)
        if error is not None:
            return (
                f"Your final answer does not have the required form: {error}\n"
                "Give the answer again with FINAL(...) in the required form."
            )
        state.final = answer
        state.output = value
        return None

    async def _refresh_partial(self, state: RunState, sandbox: Sandbox) -> None:
        for name in PARTIAL_ANSWER_VARIABLES:
            try:
                value = await sandbox.variable(name)
            except NotImplementedError:  # pragma: no cover - every sandbox implements it
                return
            if value:
                state.partial = value
                return

    async def _execute(
        self, state: RunState, sandbox: Sandbox, code: str, index: int
    ) -> ExecResult:
        result = await sandbox.execute(code)
        self._emit(
            state,
            "cell_executed",
            iteration=state.iteration,
            index=index,
            code=code,
            **result.to_dict(),
        )
        return result

    async def _ask(self, state: RunState) -> ModelResponse:
        """Send the run's conversation to its model; the trace gets only the new messages."""
        delta = state.messages[state.sent :]
        state.sent = len(state.messages)
        return await self.call_model(
            state,
            state.model,
            state.messages,
            state.settings,
            depth=state.depth,
            trace_messages=[m.to_dict() for m in delta],
            iteration=state.iteration + 1,
        )

    async def call_model(
        self,
        state: RunState,
        model: Model,
        messages: list[Message],
        settings: ModelSettings | None,
        *,
        depth: int,
        trace_messages: list[dict[str, str]],
        iteration: int | None = None,
        call_id: str | None = None,
    ) -> ModelResponse:
        """One model request: traced, timed, and charged to the shared budget."""
        return await traced_request(
            functools.partial(self._emit, state),
            self.budget,
            model,
            messages,
            settings,
            request_id=f"{state.run_id}-r{next(self._request_ids)}",
            depth=depth,
            trace_messages=trace_messages,
            iteration=iteration,
            call_id=call_id,
        )

    # ------------------------------------------------------------------ misc
    def _emit(self, state: RunState, type_: str, **data: Any) -> None:
        if not self.tracer.sinks:
            return
        self.tracer.emit(
            type_, run_id=state.run_id, parent_id=state.parent_id, depth=state.depth, **data
        )


async def traced_request(
    emit: Callable[..., None],
    budget: Budget,
    model: Model,
    messages: Sequence[Message],
    settings: ModelSettings | None,
    *,
    request_id: str,
    depth: int,
    trace_messages: list[dict[str, str]],
    iteration: int | None = None,
    call_id: str | None = None,
) -> ModelResponse:
    """Send one request to ``model``: ``model_request`` / ``model_response`` events through
    ``emit(type, **data)``, its usage and cost recorded in ``budget`` at ``depth``.

    ``trace_messages`` is what the trace shows of ``messages`` (a run's turns log only the
    messages added since its previous request). The engine's turns and sub-calls and the
    benchmark's baselines all send their requests through here, so every trace reads alike.
    """
    emit(
        "model_request",
        request_id=request_id,
        call_id=call_id,
        model=model.name,
        iteration=iteration,
        messages=trace_messages,
        total_messages=len(messages),
        request_depth=depth,
    )
    started = time.monotonic()
    try:
        response = await model.request(messages, settings)
    except ModelError as exc:
        emit(
            "model_response",
            request_id=request_id,
            call_id=call_id,
            model=model.name,
            error=str(exc),
            duration_s=round(time.monotonic() - started, 6),
            request_depth=depth,
        )
        raise
    cost = budget.record(model, response, depth)
    emit(
        "model_response",
        request_id=request_id,
        call_id=call_id,
        model=model.name,
        **response_fields(response, cost),
        duration_s=round(time.monotonic() - started, 6),
        request_depth=depth,
    )
    return response


class _SandboxStart:
    """A run's sandbox, started in the background.

    A run's first model turn needs only the context's description, so the sandbox's start-up
    (the isolated worker's is ~75 ms) overlaps the first model request instead of preceding
    it. Each model turn goes through :meth:`alongside`, which returns once both the reply and
    the sandbox are ready; a sandbox that fails to start cancels the pending request and its
    error is raised at once, as before. A start in progress is never cancelled half-way (it
    could leave a worker process behind): :meth:`close` lets it finish, then closes.
    """

    def __init__(self, sandbox: Sandbox, context: Any) -> None:
        self.sandbox = sandbox
        self._task = asyncio.ensure_future(self._start(context))

    async def _start(self, context: Any) -> None:
        await self.sandbox.__aenter__()
        await self.sandbox.load_context(context)

    @property
    def ready(self) -> bool:
        """The sandbox started and holds the context."""
        return self._task.done() and not self._task.cancelled() and not self._task.exception()

    async def alongside(self, request: Awaitable[ModelResponse]) -> ModelResponse:
        """``request``'s reply, once the sandbox is ready too."""
        if self._task.done():
            self._task.result()  # a failed start raises here
            return await request
        pending = asyncio.ensure_future(request)
        await asyncio.wait({pending, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done() and self._task.exception() is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
            self._task.result()
        reply = await pending
        await asyncio.shield(self._task)
        return reply

    async def close(self) -> None:
        # An error of the start was raised already, or is not the one to report.
        with contextlib.suppress(BaseException):
            await asyncio.shield(self._task)
        await self.sandbox.aclose()


def _is_fatal(exc: BaseException) -> bool:
    if isinstance(exc, ContextLengthError):
        return False  # the model can split its input and try again
    if isinstance(exc, ModelRequestsDisabled):
        return True
    return isinstance(exc, ModelAPIError) and exc.status in _FATAL_STATUSES


class _SubCallRouter:
    """The host side of one run's REPL functions (``llm_query``, ``rlm_query`` ...)."""

    def __init__(self, engine: Engine, state: RunState) -> None:
        self.engine = engine
        self.state = state

    @property
    def _budget(self) -> Budget:
        return self.engine.budget

    def _admit(self) -> str | None:
        stop = self._budget.check()
        if stop is not None:
            return f"Error: {stop.message}"
        refused = self._budget.take_sub_call()
        if refused is not None:
            return f"Error: {refused.message}"
        self.state.sub_calls += 1
        return None

    async def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        target = self._resolve_model(model)
        if isinstance(target, str):
            return [target] * len(prompts)
        return list(await asyncio.gather(*(self._llm_one(p, target) for p in prompts)))

    def _resolve_model(self, name: str | None) -> Model | str:
        cfg = self.engine.config
        if name is None or name in {cfg.sub_model.name, cfg.sub_model.model_name}:
            return cfg.sub_model
        if name in cfg.models:
            return cfg.models[name]
        for candidate in (cfg.model, *cfg.models.values()):
            if name in {candidate.name, candidate.model_name}:
                return candidate
        known = ", ".join(sorted({cfg.sub_model.name, cfg.model.name, *cfg.models}))
        return f"Error: unknown model {name!r}; available: {known}."

    async def _llm_one(self, prompt: str, model: Model, kind: str = "llm") -> str:
        too_big = _preflight(model, prompt)
        if too_big is not None:
            self.engine._emit(
                self.state,
                "sub_call_refused",
                kind=kind,
                model=model.name,
                prompt_chars=len(prompt),
                reason=too_big,
            )
            return too_big
        refused = self._admit()
        if refused is not None:
            return refused
        engine, state = self.engine, self.state
        call_id = _new_id()
        engine._emit(
            state,
            "sub_call_started",
            call_id=call_id,
            kind=kind,
            model=model.name,
            prompt=prompt[:_TRACE_PROMPT_CHARS],
            prompt_chars=len(prompt),
        )
        started = time.monotonic()
        answer: str
        error: str | None = None
        try:
            async with self._budget.request_slots:
                response = await engine.call_model(
                    state,
                    model,
                    [Message("user", prompt)],
                    engine.config.sub_settings,
                    depth=state.depth + 1,
                    trace_messages=[{"role": "user", "content": prompt[:_TRACE_PROMPT_CHARS]}],
                    call_id=call_id,
                )
            answer = response.text
        except ModelError as exc:
            if _is_fatal(exc) and state.fatal is None:
                state.fatal = exc
            error = str(exc)
            answer = f"Error: {exc}"
            if isinstance(exc, ContextLengthError):
                answer += f" {_SPLIT_HINT}"
        engine._emit(
            state,
            "sub_call_finished",
            call_id=call_id,
            kind=kind,
            answer=answer[:_TRACE_PROMPT_CHARS],
            error=error,
            duration_s=round(time.monotonic() - started, 6),
        )
        return answer

    async def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]:
        ctxs: list[Any] = list(contexts) if contexts is not None else [None] * len(prompts)
        cfg = self.engine.config
        if self.state.depth >= cfg.max_depth - 1:
            # At the depth cap a sub-RLM is a plain model call (the paper's depth rule).
            plain = [
                p if c is None else f"{p}\n\n--- context ---\n{_as_text(c)}"
                for p, c in zip(prompts, ctxs, strict=True)
            ]
            return list(
                await asyncio.gather(*(self._llm_one(p, cfg.sub_model, "rlm") for p in plain))
            )
        slots = asyncio.Semaphore(cfg.limits.max_concurrency)

        async def bounded(prompt: str, context: Any) -> str:
            async with slots:
                return await self._child(prompt, context)

        return list(
            await asyncio.gather(*(bounded(p, c) for p, c in zip(prompts, ctxs, strict=True)))
        )

    async def _child(self, prompt: str, context: Any) -> str:
        refused = self._admit()
        if refused is not None:
            return refused
        engine, state = self.engine, self.state
        call_id = _new_id()
        child = engine.new_state(
            query=prompt if context is not None else None,
            depth=state.depth + 1,
            parent_id=state.run_id,
        )
        engine._emit(
            state,
            "sub_call_started",
            call_id=call_id,
            kind="rlm",
            model=engine.config.sub_model.name,
            prompt=prompt[:_TRACE_PROMPT_CHARS],
            prompt_chars=len(prompt),
            child_run_id=child.run_id,
        )
        started = time.monotonic()
        error: str | None = None
        try:
            outcome = await engine.run(child, prompt if context is None else context)
            answer = outcome.answer
            if outcome.stop is not None and not answer:
                answer = f"Error: the sub-RLM stopped without an answer: {outcome.stop.message}"
        except RLMError as exc:
            if _is_fatal(exc) and state.fatal is None:
                state.fatal = exc
            error = str(exc)
            answer = f"Error: the sub-RLM failed: {exc}"
        engine._emit(
            state,
            "sub_call_finished",
            call_id=call_id,
            kind="rlm",
            child_run_id=child.run_id,
            answer=answer[:_TRACE_PROMPT_CHARS],
            error=error,
            duration_s=round(time.monotonic() - started, 6),
        )
        return answer


_SPLIT_HINT = (
    "Split the input into smaller pieces and call llm_query on each "
    "(llm_query_batched runs them concurrently), then combine the answers."
)


def _preflight(model: Model, prompt: str) -> str | None:
    """Refuse, before sending, a prompt that cannot fit the model's window; the text tells
    the model the sizes so it can split the input."""
    window = model.context_window
    if not window:
        return None
    tokens = model.count_tokens([Message("user", prompt)])
    if tokens <= window:
        return None
    chars_per_token = len(prompt) / tokens
    fits = int(window * chars_per_token * 0.8)
    return (
        f"Error: this prompt is about {tokens:,} tokens ({len(prompt):,} characters), more "
        f"than {model.name}'s context window of {window:,} tokens; it was not sent. "
        f"{_SPLIT_HINT} Pieces of at most about {fits:,} characters fit."
    )


def _as_text(value: Any) -> str:
    from rlmx.context import context_text, normalize_context

    return context_text(normalize_context(value))


def _budget_note(limits: Limits) -> str | None:
    notes = []
    if limits.max_sub_calls is not None:
        notes.append(f"at most {limits.max_sub_calls} sub-calls")
    if limits.max_cost_usd is not None:
        notes.append(f"a budget of ${limits.max_cost_usd}")
    if limits.timeout_s is not None:
        notes.append(f"{limits.timeout_s:g} seconds in all")
    return ", ".join(notes) if notes else None


def _description_dict(description: Any) -> dict[str, Any]:
    return {
        "type": description.type_name,
        "total_chars": description.total_chars,
        "item_count": description.item_count,
    }
