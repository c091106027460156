"""``RLM``: the public facade. Configure once, then ``completion`` / ``acompletion``.

``acompletion`` is the one implementation; ``completion`` runs it on a fresh event loop
(and says so clearly when called from inside a running loop).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from rlmx.context import normalize_context
from rlmx.engine import Engine, EngineConfig, SystemPrompt
from rlmx.exceptions import ConfigError, LimitExceeded, RLMError, UserError
from rlmx.limits import Budget, Limits, StopReason, as_seconds
from rlmx.models import (
    CacheOption,
    Model,
    ModelSettings,
    RateLimit,
    ResponseCache,
    RetryPolicy,
    get_model,
    resolve_cache,
    wrap_model,
)
from rlmx.result import RLMResult
from rlmx.sandbox import Sandbox, SandboxConfig, get_sandbox
from rlmx.trace import JSONLTraceSink, Tracer, TraceSink

__all__ = ["RLM"]

TraceOption = str | Path | TraceSink | Sequence[str | Path | TraceSink] | None
SandboxOption = str | Callable[[SandboxConfig], Sandbox]
_LIMIT_FIELDS = frozenset(f.name for f in fields(Limits))
_OVERRIDES = _LIMIT_FIELDS | {"strict", "system_prompt", "trace", "max_depth", "output_type"}


class RLM:
    """A Recursive Language Model.

    ``model`` answers at the root; ``sub_model`` (default: ``model``) serves
    ``llm_query`` and child runs. ``max_depth`` follows the paper: 0 = no sub-calls,
    1 = ``llm_query`` reaches a plain model, >= 2 = ``rlm_query`` starts child RLMs.

    Models named by string get retries (``retry``) and their provider key's shared rate
    limiter (``rate_limit``); a ``Model`` instance is used as given unless ``retry`` /
    ``rate_limit`` are passed explicitly. ``fallback_models`` (and ``sub_fallback_models``)
    answer when the model before them is unavailable; ``cache`` (``True``, a path or a
    :class:`~rlmx.models.ResponseCache`) replays stored replies with no provider call.
    """

    def __init__(
        self,
        model: str | Model,
        sub_model: str | Model | None = None,
        *,
        sandbox: SandboxOption = "isolated",
        max_depth: int = 1,
        limits: Limits | None = None,
        system_prompt: SystemPrompt | None = None,
        output_type: Any = None,
        trace: TraceOption = None,
        settings: ModelSettings | None = None,
        sub_settings: ModelSettings | None = None,
        models: dict[str, str | Model] | None = None,
        base_url: str | None = None,
        sub_base_url: str | None = None,
        worked_example: bool = False,
        strict: bool = False,
        require_isolation: bool = False,
        sandbox_options: dict[str, Any] | None = None,
        fallback_models: Sequence[str | Model] = (),
        sub_fallback_models: Sequence[str | Model] = (),
        retry: RetryPolicy | bool | None = None,
        rate_limit: RateLimit | None = None,
        cache: CacheOption = None,
    ) -> None:
        self.cache: ResponseCache | None = resolve_cache(cache)
        self._owns_cache = self.cache is not None and not isinstance(cache, ResponseCache)

        def build(spec: str | Model, fallbacks: Sequence[str | Model], url: str | None) -> Model:
            # A Model instance was composed by the caller: it gets only what they asked for.
            as_given = isinstance(spec, Model) and retry is None and rate_limit is None
            return wrap_model(
                get_model(spec, base_url=url),
                retry=False if as_given else (True if retry is None else retry),
                rate_limit=rate_limit,
                shared_limiter=not as_given,
                fallbacks=[get_model(m, base_url=url) for m in fallbacks],
                cache=self.cache,
            )

        self.model = build(model, fallback_models, base_url)
        if sub_model is None and not sub_fallback_models:
            self.sub_model = self.model
        else:
            self.sub_model = build(
                model if sub_model is None else sub_model,
                sub_fallback_models,
                sub_base_url or base_url,
            )
        self.models = {name: build(m, (), base_url) for name, m in (models or {}).items()}
        self.limits = limits or Limits()
        self.max_depth = _check_depth(max_depth)
        options = dict(sandbox_options or {})
        if require_isolation:
            if sandbox != "isolated":
                raise ConfigError(
                    "require_isolation=True needs sandbox='isolated' (the default), "
                    f"not {sandbox!r}."
                )
            options["require_isolation"] = True
        if isinstance(sandbox, str):
            kind = sandbox
            self._sandbox_factory: Callable[[SandboxConfig], Sandbox] = lambda config: get_sandbox(
                kind, config, **options
            )
            # Fail now, not at the first completion, if the kind cannot be had.
            get_sandbox(kind, SandboxConfig(), **options)
        elif options:
            raise ConfigError("sandbox_options apply to a named sandbox, not to a factory.")
        else:
            self._sandbox_factory = sandbox
        self.sandbox = sandbox if isinstance(sandbox, str) else getattr(sandbox, "kind", "custom")
        self.system_prompt = system_prompt
        self.output_type = output_type
        self.trace = trace
        self.settings = settings
        self.sub_settings = sub_settings
        self.worked_example = worked_example
        self.strict = strict

    # ------------------------------------------------------------------ public
    def completion(self, context: Any, query: str | None = None, **overrides: Any) -> RLMResult:
        """Answer ``query`` about ``context`` (blocking). See :meth:`acompletion`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UserError(
                "RLM.completion() was called inside a running event loop; "
                "use `await rlm.acompletion(...)` there instead."
            )
        return asyncio.run(self._completion_then_close(context, query, overrides))

    async def _completion_then_close(
        self, context: Any, query: str | None, overrides: dict[str, Any]
    ) -> RLMResult:
        try:
            return await self.acompletion(context, query, **overrides)
        finally:
            await self.aclose()

    async def acompletion(
        self, context: Any, query: str | None = None, **overrides: Any
    ) -> RLMResult:
        """Answer ``query`` about ``context``.

        ``context`` is a ``str``, a list or a dict. Keyword overrides apply to this call
        only: any ``Limits`` field (``max_iterations=5``), ``max_depth``, ``strict``,
        ``system_prompt``, ``trace``, ``output_type``.
        """
        unknown = set(overrides) - _OVERRIDES
        if unknown:
            raise ConfigError(
                f"Unknown option(s) for completion: {', '.join(sorted(unknown))}. "
                f"Allowed: {', '.join(sorted(_OVERRIDES))}."
            )
        value = normalize_context(context)
        limit_changes = {k: v for k, v in overrides.items() if k in _LIMIT_FIELDS}
        limits = self.limits.replace(**limit_changes) if limit_changes else self.limits
        max_depth = _check_depth(
            overrides.get(
                "max_depth", limits.max_depth if limits.max_depth is not None else self.max_depth
            )
        )
        strict = bool(overrides.get("strict", self.strict))
        output_type = overrides.get("output_type", self.output_type)
        check, hint = _output_checker(output_type)
        config = EngineConfig(
            model=self.model,
            sub_model=self.sub_model,
            max_depth=max_depth,
            limits=limits,
            sandbox_factory=self._sandbox_factory,
            system_prompt=overrides.get("system_prompt", self.system_prompt),
            worked_example=self.worked_example,
            settings=self.settings,
            sub_settings=self.sub_settings,
            models=self.models,
            output_check=check,
            output_hint=hint,
        )
        budget = Budget(limits)
        sinks, trace_path, owned = _open_sinks(overrides.get("trace", self.trace))
        tracer = Tracer(sinks)
        engine = Engine(config, budget, tracer)
        state = engine.new_state(query=query)
        metadata = {
            "model": self.model.name,
            "sub_model": self.sub_model.name,
            "max_depth": max_depth,
            "sandbox": self.sandbox,
        }

        def make_result(stop: StopReason | None) -> RLMResult:
            if engine.sandbox_report:
                metadata["isolation"] = engine.sandbox_report
            final = state.final is not None
            answer = state.final if state.final is not None else (state.partial or "")
            return RLMResult(
                answer=answer,
                output=state.output if final else answer,
                usage=budget.usage,
                cost_usd=budget.usage.cost_usd,
                iterations=state.iteration,
                sub_calls=budget.sub_calls,
                depth_reached=budget.depth_reached,
                elapsed_s=budget.elapsed_s,
                stopped_by=stop.limit if stop else None,
                stop_message=stop.message if stop else None,
                trace_path=str(trace_path) if trace_path is not None else None,
                run_id=state.run_id,
                metadata=metadata,
            )

        try:
            async with asyncio.timeout(as_seconds(limits.timeout_s)):
                outcome = await engine.run(state, value)
            stop = outcome.stop
        except TimeoutError:
            stop = budget.mark_timeout()
            state.stop = state.stop or stop
            engine._emit_finished(state)
        except RLMError as exc:
            # Keep what was spent and found: the caller (and the CLI) can still report it.
            exc.result = make_result(state.stop)
            raise
        finally:
            for sink in owned:
                sink.close()
        result = make_result(stop)
        if strict and stop is not None:
            raise _limit_error(stop, result)
        return result

    async def aclose(self) -> None:
        """Close the models' network clients for the current event loop."""
        seen: set[int] = set()
        for model in (self.model, self.sub_model, *self.models.values()):
            if id(model) not in seen:
                seen.add(id(model))
                await model.aclose()
        if self._owns_cache and self.cache is not None:
            self.cache.close()

    async def __aenter__(self) -> RLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"RLM(model={self.model.name!r}, sub_model={self.sub_model.name!r}, "
            f"max_depth={self.max_depth}, sandbox={self.sandbox!r})"
        )


def _check_depth(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"max_depth must be an integer >= 0, got {value!r}.")
    return value


def _limit_error(stop: StopReason, result: RLMResult) -> LimitExceeded:
    return LimitExceeded(stop.message, limit=stop.limit, value=stop.value, result=result)


def _open_sinks(option: TraceOption) -> tuple[list[TraceSink], Path | None, list[JSONLTraceSink]]:
    """Sinks for a trace option; a path (file, or directory for one file per run) opens JSONL."""
    if option is None:
        return [], None, []
    items: Iterable[str | Path | TraceSink]
    items = [option] if isinstance(option, str | Path) or callable(option) else option
    sinks: list[TraceSink] = []
    owned: list[JSONLTraceSink] = []
    path: Path | None = None
    for item in items:
        if isinstance(item, str | Path):
            target = Path(item)
            if target.is_dir() or str(item).endswith(("/", "\\")):
                target.mkdir(parents=True, exist_ok=True)
                target = target / f"rlmx-{_timestamp()}.jsonl"
            sink = JSONLTraceSink(target)
            owned.append(sink)
            sinks.append(sink)
            path = path or target
        elif callable(item):
            sinks.append(item)
        else:
            raise ConfigError(f"trace must be a path or a callable, got {type(item).__name__}.")
    return sinks, path, owned


def _timestamp() -> str:
    import datetime
    import uuid

    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:6]}"


def _output_checker(
    output_type: Any,
) -> tuple[Callable[[str], tuple[Any, str | None]] | None, str | None]:
    """A validator for the final answer, and the instruction that tells the model the form."""
    if output_type is None or output_type is str:
        return None, None
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter: TypeAdapter[Any] = TypeAdapter(output_type)
        schema = json.dumps(adapter.json_schema())
    except Exception as exc:
        raise ConfigError(f"output_type {output_type!r} is not usable: {exc}") from None

    def check(answer: str) -> tuple[Any, str | None]:
        text = answer.strip()
        try:
            return adapter.validate_json(text), None
        except ValidationError:
            pass
        try:
            return adapter.validate_python(text), None
        except ValidationError as exc:
            detail = "; ".join(e["msg"] for e in exc.errors()[:3])
            return None, f"expected JSON matching {schema}, got {text[:200]!r} ({detail})"

    hint = (
        "The final answer must be JSON matching this JSON schema (pass a dict/list/number "
        f"to FINAL, or its JSON text): {schema}"
    )
    return check, hint
