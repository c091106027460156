"""``rlmx view``: write a trace's viewer page, or an index of every trace in a folder."""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path
from typing import Any

from rlmx.cli import EXIT_OK
from rlmx.exceptions import ConfigError

__all__ = ["add_parser", "handle"]


def add_parser(sub: Any) -> None:
    from rlmx.view import DEFAULT_MAX_TEXT_CHARS

    p = sub.add_parser(
        "view",
        help="see a run: trace file -> self-contained HTML page",
        description="Write one self-contained HTML page for TRACE.jsonl (beside it, unless "
        "--out), or, for a folder, one page per trace plus an index.html listing them with "
        "score, cost and time (in FOLDER/view, unless --out).",
    )
    p.add_argument("path", metavar="TRACE.jsonl|DIR", help="a JSONL trace, or a folder of them")
    p.add_argument("--out", metavar="PATH", help="the page to write (a folder for DIR)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument(
        "--max-text-chars",
        type=int,
        default=DEFAULT_MAX_TEXT_CHARS,
        metavar="N",
        help=f"cut longer prompts/outputs in the page (default {DEFAULT_MAX_TEXT_CHARS:,})",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rlmx.trace import load_trace
    from rlmx.view import render_trace, write_index

    source = Path(args.path)
    if args.max_text_chars < 100:
        raise ConfigError(f"--max-text-chars must be at least 100, got {args.max_text_chars}")
    if source.is_dir():
        index, rows = write_index(source, args.out, max_text_chars=args.max_text_chars)
        if not rows:
            raise ConfigError(
                f"No trace files under {source}: expected *.jsonl files written by "
                "--trace or trace=; pass a folder that holds some, or one trace file."
            )
        sys.stdout.write(f"{index}\n")
        sys.stderr.write(f"rlmx: {len(rows)} trace(s) listed in {index}\n")
        page = index
    elif source.is_file():
        try:
            trace = load_trace(source)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read {source}: {exc}") from None
        if trace.events == 0:
            detail = f" ({trace.problems[0]})" if trace.problems else ""
            raise ConfigError(
                f"{source} holds no rlmx trace events{detail}: pass a JSONL file written by "
                "--trace PATH or RLM(trace=PATH)."
            )
        page = Path(args.out) if args.out else source.with_suffix(".html")
        if page.resolve() == source.resolve():
            raise ConfigError(f"--out {page} would overwrite the trace itself; pick another path")
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(render_trace(trace, max_text_chars=args.max_text_chars), encoding="utf-8")
        sys.stdout.write(f"{page}\n")
        if not trace.finished:
            sys.stderr.write(
                "rlmx: warning: the run did not finish (crashed or killed); the page shows "
                "the trace up to its last complete line\n"
            )
        for problem in trace.problems[:5]:
            sys.stderr.write(f"rlmx: warning: {source}: {problem}\n")
    else:
        raise ConfigError(f"No such trace file or folder: {source}")
    if args.open:
        webbrowser.open(page.resolve().as_uri())
    return EXIT_OK
