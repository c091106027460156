"""``rlmx bench``: run benchmark tasks over methods and models, resumably, and report."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from rlmx.cli import EXIT_MODEL, EXIT_OK
from rlmx.cli.run import _count, _money, _positive, _seconds, model_names
from rlmx.exceptions import ConfigError

__all__ = ["add_parser", "handle", "parse_length"]

_LENGTH = re.compile(r"^\s*(?:(\d+)\s*\^\s*(\d+)|(\d+(?:\.\d+)?)\s*([kKmM]?))\s*$")


def parse_length(text: str) -> int:
    """A context length in tokens: ``8192``, ``8k`` / ``8K`` (x1024), ``1M`` (x1024^2), ``2^17``."""
    match = _LENGTH.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a length in tokens like 8192, 8k, 1M or 2^17, got {text!r}"
        )
    base, power, number, unit = match.groups()
    if base is not None:
        value: int = int(base) ** int(power)
    else:
        value = int(float(number) * {"": 1, "k": 1 << 10, "m": 1 << 20}[unit.lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a length must be positive, got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    from rlmx.bench.base import BASELINES
    from rlmx.bench.tasks import TASKS

    p = sub.add_parser(
        "bench",
        help="run a benchmark task over methods and report scores, cost and latency",
        description="Run TASK's seeded items through each --method with the same models, "
        "record every answer in OUT/results.jsonl (a rerun resumes), and write summary.md, "
        "summary.json and plots. Methods: rlm (= rlm:1), rlm:0, rlm:1, rlm:2, "
        + ", ".join(BASELINES)
        + ".",
    )
    p.add_argument("task", metavar="TASK", choices=TASKS, help=" | ".join(TASKS))
    p.add_argument(
        "--method", action="append", default=[], metavar="M", help="repeatable (default rlm)"
    )
    models = p.add_argument_group("models")
    models.add_argument("--model", help="root model as provider:model (env RLMX_MODEL)")
    models.add_argument("--sub-model", help="model for sub-calls (env RLMX_SUB_MODEL)")
    models.add_argument("--base-url", help="OpenAI-compatible endpoint for both models")
    models.add_argument("--sub-base-url", help="endpoint for the sub-model only")
    models.add_argument("--temperature", type=float, default=None)
    models.add_argument("--model-seed", type=int, default=None, help="sampling seed")
    models.add_argument(
        "--max-output-tokens", type=_positive, default=None, metavar="N", help="per reply"
    )
    models.add_argument(
        "--window",
        type=_positive,
        default=None,
        metavar="TOKENS",
        help="the model's context window, for the baselines (default: the model's own, else 128K)",
    )
    models.add_argument(
        "--cache",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="replay stored replies (SQLite); a rerun of the same items costs nothing",
    )
    items = p.add_argument_group("items")
    items.add_argument(
        "--lengths",
        nargs="+",
        type=parse_length,
        default=None,
        metavar="L",
        help="context lengths in tokens: 8192, 8k, 2^17, 1M (default: the paper's size)",
    )
    items.add_argument("--n", type=_positive, default=5, help="items per length (default 5)")
    items.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    items.add_argument(
        "--data",
        metavar="PATH",
        help="official files: RULER jsonl (sniah), OOLONG's files or TREC (oolong, "
        "oolong-pairs: TREC)",
    )
    items.add_argument("--variant", help="sniah: single_1 (default), single_2, single_3")
    items.add_argument("--haystack", metavar="DIR", help="sniah: .txt files for the essay text")
    items.add_argument("--source", metavar="DIR", help="codeqa: the source tree to ask about")
    run = p.add_argument_group("running")
    run.add_argument("--out", metavar="DIR", help="results folder (default bench-out/TASK)")
    run.add_argument("--concurrency", type=_positive, default=4, help="items at once (default 4)")
    run.add_argument("--sandbox", default="isolated", help="isolated (default) or local (unsafe)")
    run.add_argument("--max-iterations", type=_positive, default=20, metavar="N")
    run.add_argument("--max-cost-per-item", type=_money, default=None, metavar="USD")
    run.add_argument("--timeout-per-item", type=_seconds, default=None, metavar="S")
    run.add_argument("--max-concurrency", type=_count, default=16, help="sub-calls per item")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rlmx.bench.methods import MethodSetup, parse_method
    from rlmx.bench.report import write_plots, write_summary
    from rlmx.bench.runner import BenchConfig, BenchRunner, load_results
    from rlmx.bench.tasks import DEFAULT_LENGTHS, get_task
    from rlmx.bench.tokens import TOKENIZER_NAME
    from rlmx.cli._bench_console import BenchConsole
    from rlmx.limits import Limits
    from rlmx.models import get_model, resolve_cache, wrap_model
    from rlmx.models.base import ModelSettings

    model_name, sub_given = model_names(args)
    sub_name = sub_given or model_name
    methods = [parse_method(m) for m in (args.method or ["rlm"])]
    methods = list({m.label: m for m in methods}.values())
    task = get_task(
        args.task,
        data=args.data,
        variant=args.variant,
        source=args.source,
        haystack_dir=args.haystack,
    )
    cache = resolve_cache(args.cache)
    model = wrap_model(get_model(model_name, base_url=args.base_url), cache=cache)
    if sub_name == model_name and not args.sub_base_url:
        sub_model = model
    else:
        url = args.sub_base_url or args.base_url
        sub_model = wrap_model(get_model(sub_name, base_url=url), cache=cache)
    settings = ModelSettings(
        temperature=args.temperature, seed=args.model_seed, max_tokens=args.max_output_tokens
    )
    setup = MethodSetup(
        model=model,
        sub_model=sub_model,
        settings=settings,
        sandbox=args.sandbox,
        limits=Limits(
            max_iterations=args.max_iterations,
            max_cost_usd=args.max_cost_per_item,
            timeout_s=args.timeout_per_item,
            max_concurrency=args.max_concurrency,
        ),
        window_tokens=args.window,
        max_concurrency=args.max_concurrency,
    )
    out = Path(args.out) if args.out else Path("bench-out") / args.task
    config = BenchConfig(
        task=args.task,
        methods=methods,
        lengths=args.lengths or DEFAULT_LENGTHS[args.task],
        n=args.n,
        seed=args.seed,
        out=out,
        model=model_name,
        sub_model=sub_name,
        concurrency=args.concurrency,
        task_options={
            k: v
            for k, v in {
                "variant": args.variant,
                "data": args.data,
                "source": args.source,
                "haystack": args.haystack,
            }.items()
            if v is not None
        },
    )
    console = None if args.quiet else BenchConsole()
    runner = BenchRunner(task, config, setup, progress=console)

    async def run_all() -> None:
        try:
            await runner.arun()
        finally:
            await model.aclose()
            await sub_model.aclose()

    try:
        asyncio.run(run_all())
    finally:
        if console is not None:
            console.close()
        if cache is not None:
            cache.close()
        # the summary of whatever the folder holds, even after an interruption or an error
        records = load_results(out)
        summary_config = {**config.to_dict(), "tokenizer": TOKENIZER_NAME}
        rows = write_summary(out, records, summary_config) if records else []
    wanted = {(m.label, length) for m in methods for length in config.lengths}
    mine = [r for r in records if (r["method"], r.get("length")) in wanted]
    if not args.no_plots and rows:
        try:
            for path in write_plots(out, rows):
                sys.stderr.write(f"rlmx: plot written to {path}\n")
        except ConfigError as exc:
            sys.stderr.write(f"rlmx: warning: {exc}\n")
    summary = out / "summary.md"
    if summary.exists():
        sys.stdout.write(summary.read_text(encoding="utf-8"))
    sys.stderr.write(f"rlmx: results in {out} (rlmx view {out} to browse the traces)\n")
    failed = [r for r in mine if r.get("error")]
    if failed:
        sys.stderr.write(
            f"rlmx: {len(failed)} item(s) ended in an error (score 0); rerun the same command "
            f"to retry them. First: {failed[0]['error']}\n"
        )
        return EXIT_MODEL
    return EXIT_OK
