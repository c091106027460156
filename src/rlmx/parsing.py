"""Reading a root model's reply: which code blocks to run and whether it gave a final answer.

The model writes Python in fenced blocks (```` ```repl ```` or ```` ```python ````) and
finishes with ``FINAL(answer)`` or ``FINAL_VAR(variable_name)`` on a line of plain text.
:func:`parse_reply` turns one reply into a :class:`ParsedReply`; it is pure and never raises,
whatever the model wrote. :func:`format_help` is the reminder sent back to the model when a
reply contains neither code nor an answer.

A final answer counts only when it comes before the first code block: a model that writes
code and then ``FINAL(...)`` in the same reply has not seen the code's output yet, so its
answer is a guess. Such a marker is reported through :attr:`ParsedReply.ignored_final`.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass
from typing import Literal

__all__ = ["FinalMarker", "ParsedReply", "format_help", "parse_reply"]


@dataclass(frozen=True, slots=True)
class FinalMarker:
    """A ``FINAL(...)`` or ``FINAL_VAR(...)`` written in the reply's plain text."""

    kind: Literal["value", "var"]
    """``"value"`` for ``FINAL(...)``, ``"var"`` for ``FINAL_VAR(...)``."""
    payload: str
    """The answer text for ``"value"`` (unquoted if it was a string literal); the variable
    name for ``"var"``."""


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What one model reply asks for."""

    code_blocks: tuple[str, ...]
    """Code to execute, in the order written. Empty when :attr:`final` is set."""
    final: FinalMarker | None
    """The accepted final answer, if the reply gave one before any code block."""
    ignored_final: bool
    """A final marker was written, but after a code block, so it was not accepted."""
    unclosed_fence: bool
    """A fence was opened and never closed, and its content was not used as code."""


_CODE_LANGS = frozenset({"repl", "python", "py", "python3", "ipython"})

# Backtick fences only; an info string containing a backtick is inline code, not a fence
# (CommonMark), which keeps one-liners like ```x``` out.
_OPEN_RE = re.compile(r"( {0,3})(`{3,})([^`]*)")
_CLOSE_RE = re.compile(r" {0,3}(`{3,})[ \t]*")

# The decoration prefix is possessive because "**" can also be read as two "*"; without it
# a long run of asterisks would backtrack exponentially.
_MARKER_RE = re.compile(r"(?:[ \t>*#+\-`]|\d+[.)])*+(FINAL_VAR|FINAL)[ \t]*\(")

_QUOTED_START_RE = re.compile(r"\s*[rRbBuUfF]{0,2}['\"]")


@dataclass(slots=True)
class _Fence:
    start: int
    kind: Literal["code", "bare", "other"]
    content: str
    closed: bool


def parse_reply(text: str) -> ParsedReply:
    """Split a model reply into code blocks to run and an optional final answer.

    Never raises. See the module docstring for the precedence between code and answers.
    """
    text = text.replace("\r\n", "\n")
    fences, text_lines = _scan(text)

    has_tagged_code = any(f.kind == "code" for f in fences)
    blocks: list[tuple[int, str]] = []
    unclosed = False
    for fence in fences:
        usable = bool(fence.content.strip())
        if not fence.closed:
            # A truncated reply: running half a program is only safe if it is still valid.
            if fence.kind == "code" and usable and _compiles(fence.content):
                blocks.append((fence.start, fence.content))
            else:
                unclosed = True
        elif fence.kind == "code" and usable:
            blocks.append((fence.start, fence.content))
        elif fence.kind == "bare" and not has_tagged_code and usable and _compiles(fence.content):
            # Models that forget the tag still mean code; once any block is tagged, untagged
            # ones are more likely sample output or prose.
            blocks.append((fence.start, fence.content))

    first_code = blocks[0][0] if blocks else len(text) + 1
    marker = _first_marker(text_lines)
    if marker is None:
        return ParsedReply(tuple(src for _, src in blocks), None, False, unclosed)
    position, kind, payload_start = marker
    if position < first_code:
        final = _make_final(kind, _extract_payload(text, payload_start))
        return ParsedReply((), final, False, unclosed)
    return ParsedReply(tuple(src for _, src in blocks), None, True, unclosed)


def format_help() -> str:
    """The reminder sent to the model when its reply had neither runnable code nor an answer."""
    return (
        "Your last reply contained no code to run and no final answer. "
        "Use exactly one of these forms.\n"
        "\n"
        "To run Python, put it in a fenced block tagged repl:\n"
        "```repl\n"
        "x = 1 + 1\n"
        "print(x)\n"
        "```\n"
        "\n"
        "To give your final answer, write it on its own line, outside any code block:\n"
        "FINAL(your answer here)\n"
        "or, to answer with the value of a variable you created in the REPL:\n"
        "FINAL_VAR(variable_name)\n"
        "\n"
        "Give the final answer only after you have seen your code's output: a FINAL written "
        "after a code block in the same reply is ignored."
    )


def _scan(text: str) -> tuple[list[_Fence], list[tuple[int, str]]]:
    """Find the fences and the plain-text lines (with their offsets) between them."""
    lines = text.split("\n")
    fences: list[_Fence] = []
    text_lines: list[tuple[int, str]] = []
    pos = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = _OPEN_RE.fullmatch(line)
        if opening is None:
            text_lines.append((pos, line))
            pos += len(line) + 1
            i += 1
            continue

        start = pos
        indent = len(opening[1])
        ticks = len(opening[2])
        info = opening[3].strip()
        pos += len(line) + 1
        i += 1
        kind: Literal["code", "bare", "other"]
        if not info and i < len(lines) and lines[i].strip().lower() in _CODE_LANGS:
            # A "split fence": the tag landed on its own line after a bare ```.
            kind = "code"
            pos += len(lines[i]) + 1
            i += 1
        elif not info:
            kind = "bare"
        elif _tag(info) in _CODE_LANGS:
            kind = "code"
        else:
            kind = "other"

        body: list[str] = []
        closed = False
        while i < len(lines):
            line = lines[i]
            pos += len(line) + 1
            i += 1
            closing = _CLOSE_RE.fullmatch(line)
            if closing is not None and len(closing[1]) >= ticks:
                closed = True
                break
            body.append(_strip_indent(line, indent))
        fences.append(_Fence(start, kind, "\n".join(body), closed))
    return fences, text_lines


def _tag(info: str) -> str:
    # "{python}" and "{.python}" are how Quarto and Pandoc spell the same tag.
    return info.split()[0].lower().strip("{}.")


def _strip_indent(line: str, indent: int) -> str:
    # As in CommonMark: content of an indented fence loses up to the fence's own indent.
    k = 0
    while k < indent and k < len(line) and line[k] == " ":
        k += 1
    return line[k:]


def _compiles(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            # Invalid escapes and the like warn at compile time; under "error" filters that
            # would wrongly read as a syntax error.
            warnings.simplefilter("ignore")
            compile(
                source,
                "<cell>",
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
    except Exception:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError...
        return False
    return True


def _first_marker(
    text_lines: list[tuple[int, str]],
) -> tuple[int, Literal["value", "var"], int] | None:
    """The first final marker in plain text: its offset, kind and where its payload starts."""
    for offset, line in text_lines:
        if "FINAL" not in line:
            continue
        match = _MARKER_RE.match(line)
        if match is not None:
            kind: Literal["value", "var"] = "var" if match[1] == "FINAL_VAR" else "value"
            return offset + match.start(1), kind, offset + match.end()
    return None


def _extract_payload(text: str, start: int) -> str:
    # Quote-awareness helps with FINAL("a)b") but hurts with apostrophes in prose
    # (FINAL(it's (roughly) 5)), so it goes first only when the payload opens with a quote.
    quoted_first = _QUOTED_START_RE.match(text, start) is not None
    for quote_aware in (quoted_first, not quoted_first):
        end = _match_paren(text, start, quote_aware=quote_aware)
        if end is not None:
            return text[start:end]
    last = text.rfind(")", start)
    if last != -1:
        return text[start:last]
    eol = text.find("\n", start)
    return text[start:] if eol == -1 else text[start:eol]


def _match_paren(text: str, start: int, *, quote_aware: bool) -> int | None:
    """Index of the ``)`` closing a ``(`` that sits just before ``start``, if balanced."""
    depth = 1
    i = start
    n = len(text)
    while i < n:
        char = text[i]
        if quote_aware and char in "'\"":
            after = _skip_string(text, i)
            if after is None:
                return None
            i = after
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _skip_string(text: str, i: int) -> int | None:
    """Offset just past the string literal opening at ``i``, or None if it never closes."""
    quote = text[i]
    n = len(text)
    if text.startswith(quote * 3, i):
        j = i + 3
        while j < n:
            if text[j] == "\\":
                j += 2
            elif text.startswith(quote * 3, j):
                return j + 3
            else:
                j += 1
        return None
    j = i + 1
    while j < n:
        char = text[j]
        if char == "\\":
            j += 2
        elif char == quote:
            return j + 1
        elif char == "\n":
            return None
        else:
            j += 1
    return None


def _make_final(kind: Literal["value", "var"], raw: str) -> FinalMarker:
    payload = raw.strip()
    if payload.endswith("**") and not payload.startswith("**"):
        payload = payload[:-2].rstrip()
    if kind == "var":
        return FinalMarker("var", payload.strip().strip("'\"`").strip())
    return FinalMarker("value", _unquote(payload))


def _unquote(payload: str) -> str:
    if _QUOTED_START_RE.match(payload) is None:
        return payload
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ast.literal_eval(payload)
    except Exception:
        return payload
    return value if isinstance(value, str) else payload
