"""The REPL itself: namespace, cell execution and the functions model code can call.

This module is shared by every sandbox (in-process, or inside a worker process), so it
imports nothing from the engine and talks to the host only through ``SubCallClient``,
a blocking interface that each sandbox implements over its own channel.
"""

from __future__ import annotations

import ast
import json
import linecache
import re
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rlmx.context import context_text
from rlmx.sandbox._capture import capture
from rlmx.sandbox.base import ExecResult

__all__ = [
    "CellTimeout",
    "FinalAnswerSignal",
    "Repl",
    "SubCallClient",
    "render_final",
]

HELPER_NAMES = (
    "context",
    "llm_query",
    "llm_query_batched",
    "rlm_query",
    "rlm_query_batched",
    "FINAL",
    "FINAL_VAR",
    "SHOW_VARS",
    "peek",
    "grep",
    "chunk",
    "select",
)


class FinalAnswerSignal(BaseException):
    """Raised by ``FINAL``; a ``BaseException`` so ``except Exception`` cannot swallow it."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        super().__init__(answer)


class CellTimeout(BaseException):
    """Delivered asynchronously into a cell that ran past its time."""


class SubCallClient(Protocol):
    """Blocking access to the host's sub-call handler, from inside the REPL."""

    def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]: ...

    def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]: ...


def render_final(value: object) -> str:
    """The text of a final answer: strings as they are, other values as JSON if possible."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _require_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} expects a str prompt, got {type(value).__name__}")
    return value


class Repl:
    """A persistent namespace plus the helper functions, executing one cell at a time."""

    def __init__(
        self, *, sub_calls: SubCallClient | None = None, max_output_chars: int = 20_000
    ) -> None:
        self.max_output_chars = max_output_chars
        self._sub_calls = sub_calls
        self._cell_no = 0
        self._sources: dict[str, list[str]] = {}
        self._text: str | None = None
        self._text_of: object = None
        self.namespace: dict[str, Any] = {"__name__": "__repl__", "__builtins__": __builtins__}
        self._install_helpers()

    # ----------------------------------------------------------------- context
    def load_context(self, value: Any) -> None:
        self.namespace["context"] = value
        self._text = None

    def _context_text(self) -> str:
        # Cached per object: code that rebinds ``context`` gets helpers over the new value.
        value = self.namespace.get("context", "")
        if self._text is None or value is not self._text_of:
            self._text = context_text(value)
            self._text_of = value
        return self._text

    # ----------------------------------------------------------------- helpers
    def _install_helpers(self) -> None:
        ns = self.namespace
        ns["FINAL"] = self._final
        ns["FINAL_VAR"] = self._final_var
        ns["SHOW_VARS"] = self._show_vars
        ns["peek"] = self._peek
        ns["grep"] = self._grep
        ns["chunk"] = self._chunk
        ns["select"] = self._select
        if self._sub_calls is not None:
            ns["llm_query"] = self._llm_query
            ns["llm_query_batched"] = self._llm_query_batched
            ns["rlm_query"] = self._rlm_query
            ns["rlm_query_batched"] = self._rlm_query_batched

    @property
    def helper_names(self) -> tuple[str, ...]:
        return tuple(n for n in HELPER_NAMES if n in self.namespace)

    def _final(self, value: object) -> None:
        raise FinalAnswerSignal(render_final(value))

    def _final_var(self, name: object) -> None:
        if isinstance(name, str) and name.strip().strip("'\"") in self.namespace:
            raise FinalAnswerSignal(render_final(self.namespace[name.strip().strip("'\"")]))
        if not isinstance(name, str) or any(
            self.namespace[k] is name for k in self.user_variables()
        ):
            # The model passed the value itself (``FINAL_VAR(answer)``, a str variable
            # included); answering with it is what it meant.
            raise FinalAnswerSignal(render_final(name))
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise NameError(
            f"FINAL_VAR({shown!r}): no variable named {shown!r}. Assign it first, "
            f"or answer with FINAL(value). Variables: {', '.join(self.user_variables()) or 'none'}"
        )

    def user_variables(self) -> list[str]:
        skip = set(HELPER_NAMES) | {"__name__", "__builtins__"}
        return [
            k
            for k, v in self.namespace.items()
            if k not in skip and not k.startswith("_") and not _is_module(v)
        ]

    def _show_vars(self) -> None:
        names = self.user_variables()
        if not names:
            print("No variables yet (besides context and the helper functions).")
            return
        for name in names:
            value = self.namespace[name]
            size = f", len={len(value)}" if hasattr(value, "__len__") else ""
            print(f"{name}: {type(value).__name__}{size}")

    def _peek(self, start: int = 0, end: int = 2000) -> str:
        return self._context_text()[start:end]

    def _grep(
        self, pattern: str | re.Pattern[str], max_matches: int = 20, context: int = 0
    ) -> list[str]:
        """Lines matching ``pattern`` (a regex), as ``"L<line>@<offset>: <text>"``."""
        text = self._context_text()
        # grep works on lines: ^ and $ anchor at every line, as in grep(1).
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, re.MULTILINE)
        hits: list[str] = []
        if max_matches <= 0:
            return hits
        line_no = 1
        scanned = 0
        last_line_start = -1
        for match in regex.finditer(text):
            pos = match.start()
            line_start = text.rfind("\n", 0, pos) + 1
            if line_start == last_line_start:
                continue  # one hit per line
            line_no += text.count("\n", scanned, line_start)
            scanned = line_start
            last_line_start = line_start
            first = line_start
            for _ in range(context):
                if first == 0:
                    break
                first = text.rfind("\n", 0, first - 1) + 1
            last = text.find("\n", pos)
            last = len(text) if last == -1 else last
            for _ in range(context):
                if last >= len(text):
                    break
                nxt = text.find("\n", last + 1)
                last = len(text) if nxt == -1 else nxt
            snippet = text[first:last]
            if len(snippet) > 2000:
                snippet = snippet[:2000] + "..."
            hits.append(f"L{line_no}@{line_start}: {snippet}")
            if len(hits) >= max_matches:
                break
        return hits

    def _chunk(self, mode: str = "chars", size: int = 100_000, overlap: int = 0) -> list[str]:
        """Split the context's text into pieces of ``size`` lines or characters."""
        if size <= 0 or overlap < 0 or overlap >= size:
            raise ValueError("chunk() needs size > 0 and 0 <= overlap < size")
        text = self._context_text()
        step = size - overlap
        # Stop once a chunk reaches the end: a further one would lie inside the last.
        if mode == "chars":
            return [text[i : i + size] for i in range(0, max(len(text) - overlap, 1), step)]
        if mode == "lines":
            lines = text.splitlines(keepends=True)
            stop = max(len(lines) - overlap, 1)
            return ["".join(lines[i : i + size]) for i in range(0, stop, step)]
        raise ValueError(f"chunk() mode must be 'lines' or 'chars', not {mode!r}")

    def _select(self, ranges: Sequence[Sequence[int]] | Sequence[int]) -> str:
        """Join character ranges ``[(start, end), ...]`` of the context's text."""
        text = self._context_text()
        if len(ranges) == 2 and all(isinstance(x, int) for x in ranges):
            pairs: list[Sequence[int]] = [ranges]  # type: ignore[list-item]
        else:
            pairs = list(ranges)  # type: ignore[arg-type]
        parts: list[str] = []
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError("select() takes (start, end) pairs of character offsets")
            start, end = int(pair[0]), int(pair[1])
            parts.append(text[start:end])
        return "\n...\n".join(parts)

    def _client(self) -> SubCallClient:
        assert self._sub_calls is not None
        return self._sub_calls

    def _llm_query(self, prompt: str, model: str | None = None) -> str:
        return self._client().llm_query_batched([_require_str("llm_query", prompt)], model)[0]

    def _llm_query_batched(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        if isinstance(prompts, str):
            raise TypeError("llm_query_batched expects a list of prompts, got one str")
        checked = [_require_str("llm_query_batched", p) for p in prompts]
        return self._client().llm_query_batched(checked, model) if checked else []

    def _rlm_query(self, prompt: str, context: Any = None) -> str:
        contexts = None if context is None else [context]
        return self._client().rlm_query_batched([_require_str("rlm_query", prompt)], contexts)[0]

    def _rlm_query_batched(
        self, prompts: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[str]:
        if isinstance(prompts, str):
            raise TypeError("rlm_query_batched expects a list of prompts, got one str")
        checked = [_require_str("rlm_query_batched", p) for p in prompts]
        if contexts is not None and len(contexts) != len(checked):
            raise ValueError("rlm_query_batched: contexts must have one entry per prompt")
        ctx = None if contexts is None else list(contexts)
        return self._client().rlm_query_batched(checked, ctx) if checked else []

    # ----------------------------------------------------------------- cells
    def run_cell(
        self,
        code: str,
        *,
        on_start: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> ExecResult:
        """Execute ``code``; the trailing expression's repr is printed, as in Jupyter.

        ``on_start`` / ``on_end`` are called in the cell's thread just before and after the
        model's code runs, both inside the handler of ``CellTimeout``: a timeout delivered
        between them is always reported here, never raised out of ``run_cell``.
        """
        self._cell_no += 1
        filename = f"<cell-{self._cell_no}>"
        started = time.perf_counter()
        error: str | None = None
        final: str | None = None
        timed_out = False
        with capture(self.max_output_chars) as streams:
            try:
                body, last = self._compile(code, filename)
                if on_start is not None:
                    on_start()
                try:
                    exec(body, self.namespace)
                    if last is not None:
                        value = eval(last, self.namespace)
                        if value is not None:
                            print(repr(value))
                finally:
                    if on_end is not None:
                        on_end()
            except FinalAnswerSignal as signal:
                final = signal.answer
            except CellTimeout:
                timed_out = True
                error = "TimeoutError: the cell ran past its time limit and was interrupted."
            except SyntaxError as exc:
                error = _format_syntax_error(exc)
            except BaseException as exc:  # the model's mistake: report it, keep the REPL
                error = _short_traceback(exc, self._sources)
        return ExecResult(
            stdout=streams.stdout.getvalue(),
            stderr=streams.stderr.getvalue(),
            error=error,
            final=final,
            truncated_chars=streams.stdout.dropped + streams.stderr.dropped,
            duration_s=time.perf_counter() - started,
            timed_out=timed_out,
        )

    def _compile(self, code: str, filename: str) -> tuple[Any, Any]:
        tree = ast.parse(code, filename=filename, mode="exec")
        # Register the source so tracebacks show the offending line. The filename is the
        # same in every REPL of the process, so our own tracebacks read ``_sources``.
        lines = code.splitlines(keepends=True)
        self._sources[filename] = lines
        linecache.cache[filename] = (len(code), None, lines, filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            expr = tree.body.pop()
            assert isinstance(expr, ast.Expr)
            last = compile(ast.Expression(expr.value), filename, "eval")
        return compile(tree, filename, "exec"), last


def _is_module(value: object) -> bool:
    return type(value).__name__ == "module"


def _format_syntax_error(exc: SyntaxError) -> str:
    where = f" (line {exc.lineno})" if exc.lineno else ""
    text = f"\n    {exc.text.rstrip()}" if exc.text else ""
    return f"SyntaxError: {exc.msg}{where}{text}"


def _short_traceback(exc: BaseException, sources: dict[str, list[str]]) -> str:
    """The frames of the model's own cells only, then the exception line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in sources]
    lines = ["Traceback (most recent call last):"] if frames else []
    for frame in frames[-5:]:
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        source = sources[frame.filename]
        line = (
            source[frame.lineno - 1].strip() if frame.lineno and frame.lineno <= len(source) else ""
        )
        if line:
            lines.append(f"    {line}")
    lines.extend(traceback.format_exception_only(type(exc), exc))
    out = "\n".join(line.rstrip("\n") for line in lines)
    return out if len(out) < 4000 else out[:4000] + "..."
