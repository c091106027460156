"""The ``rlmx`` command: parse arguments, dispatch to a subcommand, turn errors into messages.

Exit codes (documented in the README):
0 answered · 1 model/provider error · 2 usage or configuration error ·
3 a limit stopped the run (the partial answer is still printed) · 4 sandbox error ·
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from rlmx import __version__
from rlmx.exceptions import LimitExceeded, ModelError, RLMError, SandboxError, UserError

__all__ = ["EXIT_CODES", "main"]

EXIT_OK = 0
EXIT_MODEL = 1
EXIT_USAGE = 2
EXIT_LIMIT = 3
EXIT_SANDBOX = 4
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "the run answered",
    EXIT_MODEL: "a model or provider error (unreachable endpoint, HTTP error)",
    EXIT_USAGE: "a usage or configuration error (bad option, missing key or path)",
    EXIT_LIMIT: "a limit stopped the run; the partial answer is still printed",
    EXIT_SANDBOX: "the sandbox could not run the code",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


# First match wins: how each kind of error is labelled and which code it exits with.
_ERROR_KINDS: tuple[tuple[type[RLMError], tuple[str, int]], ...] = (
    (UserError, ("error", EXIT_USAGE)),
    (LimitExceeded, ("stopped", EXIT_LIMIT)),
    (ModelError, ("model error", EXIT_MODEL)),
    (SandboxError, ("sandbox error", EXIT_SANDBOX)),
    (RLMError, ("error", EXIT_MODEL)),
)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with our code and message style."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"rlmx: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from rlmx.cli import bench, doctor, run, view

    parser = _Parser(
        prog="rlmx",
        description="Recursive Language Models: answer queries over contexts of any size.",
        epilog="Exit codes: "
        + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"rlmx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run.add_parser(sub)
    bench.add_parser(sub)
    view.add_parser(sub)
    doctor.add_parser(sub)
    return parser


def _print_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(f"rlmx: warning: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``rlmx`` calls ``sys.exit`` on it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    previous = warnings.showwarning
    warnings.showwarning = _print_warning
    try:
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:
        sys.stderr.write("rlmx: interrupted\n")
        return EXIT_INTERRUPTED
    except RLMError as exc:
        label, exit_code = next(v for k, v in _ERROR_KINDS if isinstance(exc, k))
        sys.stderr.write(f"rlmx: {label}: {exc}\n")
        return exit_code
    finally:
        warnings.showwarning = previous
