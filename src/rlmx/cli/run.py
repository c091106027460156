"""``rlmx run``: answer one query over a context from files, folders or stdin."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from rlmx.cli import EXIT_LIMIT, EXIT_OK
from rlmx.exceptions import ConfigError, RLMError
from rlmx.limits import Limits
from rlmx.models.base import ModelSettings
from rlmx.models.ratelimit import RateLimit
from rlmx.models.wrappers import RetryPolicy
from rlmx.result import RLMResult

__all__ = ["add_parser", "handle", "model_names"]


def _number(
    convert: Callable[[str], Any], expected: str, *, allow_zero: bool
) -> Callable[[str], Any]:
    """An argparse ``type=`` that converts with ``convert`` and rejects negatives (and 0)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (ValueError, InvalidOperation):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise argparse.ArgumentTypeError(f"expected {expected} {bound}, got {text}")
        return value

    return parse


_count = _number(int, "an integer", allow_zero=True)
_positive = _number(int, "an integer", allow_zero=False)
_positive_float = _number(float, "a number", allow_zero=False)
_seconds = _number(float, "a number", allow_zero=False)
_money = _number(lambda text: Decimal(text.lstrip("$")), "an amount", allow_zero=True)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="answer a query over a context",
        description="Answer QUERY over the context given with --context (files, folders, -).",
    )
    p.add_argument("query", metavar="QUERY", help="the question to answer")
    models = p.add_argument_group("models")
    models.add_argument("--model", help="root model as provider:model (env RLMX_MODEL)")
    models.add_argument("--sub-model", help="model for sub-calls (env RLMX_SUB_MODEL)")
    models.add_argument("--base-url", help="OpenAI-compatible endpoint for both models")
    models.add_argument("--sub-base-url", help="endpoint for the sub-model only")
    models.add_argument(
        "--fallback-model",
        action="append",
        default=[],
        metavar="M",
        help="answers when the root model is unavailable; repeatable, tried in order",
    )
    models.add_argument(
        "--sub-fallback-model",
        action="append",
        default=[],
        metavar="M",
        help="answers when the sub-model is unavailable; repeatable",
    )
    models.add_argument("--temperature", type=float, default=None)
    models.add_argument("--seed", type=int, default=None)
    models.add_argument(
        "--max-output-tokens", type=_positive, default=None, metavar="N", help="per reply"
    )
    res = p.add_argument_group("resilience")
    res.add_argument(
        "--cache",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="replay stored replies (SQLite; default ~/.cache/rlmx/responses.sqlite3 "
        "or $RLMX_CACHE_PATH); new replies are stored",
    )
    res.add_argument(
        "--retries",
        type=_count,
        default=None,
        metavar="N",
        help="retries per request on 429/5xx/timeouts (default 5; 0 = none)",
    )
    res.add_argument(
        "--rpm", type=_positive_float, default=None, help="requests/min per provider key"
    )
    res.add_argument(
        "--tpm", type=_positive_float, default=None, help="tokens/min per provider key"
    )
    ctx = p.add_argument_group("context")
    ctx.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="PATH",
        help="a file, a folder (recursive) or - for stdin; repeatable",
    )
    ctx.add_argument("--include", action="append", default=[], metavar="GLOB")
    ctx.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    lim = p.add_argument_group("limits")
    lim.add_argument("--sandbox", default="isolated", help="isolated (default) or local (unsafe)")
    lim.add_argument(
        "--require-isolation",
        action="store_true",
        help="fail instead of warning when the kernel's isolation layers are missing",
    )
    lim.add_argument("--max-depth", type=_count, default=1)
    lim.add_argument("--max-iterations", type=_count, default=30)
    lim.add_argument("--max-sub-calls", type=_count, default=None)
    lim.add_argument("--max-tokens", type=_count, default=None)
    lim.add_argument("--max-cost", type=_money, default=None, metavar="USD")
    lim.add_argument("--timeout", type=_seconds, default=None, metavar="S")
    lim.add_argument("--cell-timeout", type=_seconds, default=120.0, metavar="S")
    lim.add_argument("--max-concurrency", type=_count, default=16)
    lim.add_argument("--strict", action="store_true", help="a limit is an error, not a partial")
    out = p.add_argument_group("output")
    out.add_argument("--trace", metavar="PATH", help="write JSONL trace events to PATH")
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=handle)


def model_names(args: argparse.Namespace) -> tuple[str, str | None]:
    """The root model (``--model`` or ``RLMX_MODEL``, required) and the sub-model
    (``--sub-model`` or ``RLMX_SUB_MODEL``, if any)."""
    model = args.model or os.environ.get("RLMX_MODEL")
    if not model:
        raise ConfigError(
            "No model given: pass --model provider:model (e.g. openai:gpt-5-mini) "
            "or set RLMX_MODEL."
        )
    return model, args.sub_model or os.environ.get("RLMX_SUB_MODEL")


def handle(args: argparse.Namespace) -> int:
    from rlmx.cli._progress import ProgressSink
    from rlmx.context import load_context
    from rlmx.rlm import RLM

    model, sub_model = model_names(args)
    if not args.context:
        raise ConfigError(
            "No context given: pass --context PATH (a file or folder), or - for stdin."
        )
    loaded = load_context(args.context, include=args.include, exclude=args.exclude)
    for warning in loaded.warnings:
        sys.stderr.write(f"rlmx: warning: {warning.path}: {warning.message}\n")
    limits = Limits(
        max_iterations=args.max_iterations,
        max_sub_calls=args.max_sub_calls,
        max_tokens=args.max_tokens,
        max_cost_usd=args.max_cost,
        timeout_s=args.timeout,
        cell_timeout_s=args.cell_timeout,
        max_concurrency=args.max_concurrency,
    )
    settings = ModelSettings(
        temperature=args.temperature, seed=args.seed, max_tokens=args.max_output_tokens
    )
    retry: RetryPolicy | bool | None = None
    if args.retries is not None:
        retry = RetryPolicy(max_attempts=args.retries + 1) if args.retries else False
    rate_limit = None
    if args.rpm is not None or args.tpm is not None:
        rate_limit = RateLimit(requests_per_minute=args.rpm, tokens_per_minute=args.tpm)
    progress = None if args.quiet else ProgressSink(args.max_iterations)
    trace: list[Any] = []
    if args.trace:
        trace.append(args.trace)
    if progress is not None:
        trace.append(progress)
    rlm = RLM(
        model,
        sub_model,
        sandbox=args.sandbox,
        require_isolation=args.require_isolation,
        max_depth=args.max_depth,
        limits=limits,
        trace=trace or None,
        settings=settings,
        sub_settings=settings,
        base_url=args.base_url,
        sub_base_url=args.sub_base_url,
        strict=args.strict,
        fallback_models=args.fallback_model,
        sub_fallback_models=args.sub_fallback_model,
        retry=retry,
        rate_limit=rate_limit,
        cache=args.cache,
    )
    try:
        result = rlm.completion(loaded.value, args.query)
    except RLMError as exc:
        partial = getattr(exc, "result", None)
        if args.json and isinstance(partial, RLMResult):
            _print_json(partial, error=str(exc))
        raise
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write(result.answer.rstrip("\n") + "\n")
        cached = result.usage.cached_responses
        if cached and not args.quiet:
            sys.stderr.write(
                f"rlmx: {cached} of {result.usage.requests} model replies came from the cache\n"
            )
        if result.stopped_by and not args.quiet:
            sys.stderr.write(f"rlmx: stopped by {result.stopped_by}: {result.stop_message}\n")
        if result.trace_path and not args.quiet:
            sys.stderr.write(f"rlmx: trace written to {result.trace_path}\n")
    return EXIT_LIMIT if result.stopped_by else EXIT_OK


def _print_json(result: RLMResult, error: str | None = None) -> None:
    payload = result.to_dict()
    if error is not None:
        payload["error"] = error
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()
