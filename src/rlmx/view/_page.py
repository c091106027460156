"""The page template (style, data and script inlined into one HTML file) and the trace page."""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from rlmx import __version__
from rlmx.trace import Trace, load_trace
from rlmx.view._model import DEFAULT_MAX_TEXT_CHARS, build_view, code_style

__all__ = ["asset", "render_page", "render_trace", "write_trace_page"]

_PLACEHOLDER = re.compile(r"\{\{(TITLE|STYLE|DATA|SCRIPT|VERSION)\}\}")


def asset(name: str) -> str:
    """A file of the viewer's assets (template, style, scripts) as text."""
    return resources.files("rlmx.view").joinpath("assets", name).read_text(encoding="utf-8")


def _embed_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no HTML comment openers)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(title: str, data: Any, script: str, extra_style: str = "") -> str:
    """One self-contained page: the template with its style, data and script inlined."""
    replacements = {
        "TITLE": html.escape(title),
        "STYLE": asset("viewer.css") + "\n" + extra_style,
        "DATA": _embed_json(data),
        "SCRIPT": asset("common.js") + "\n" + script,
        "VERSION": html.escape(__version__),
    }
    # one pass over the template: an inserted value (the data may hold "{{SCRIPT}}") is
    # never scanned for placeholders again
    return _PLACEHOLDER.sub(lambda m: replacements[m.group(1)], asset("page.html"))


def render_trace(trace: Trace | str | Path, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """The viewer page for a trace (a loaded :class:`Trace` or a JSONL path), as HTML text."""
    loaded = trace if isinstance(trace, Trace) else load_trace(trace)
    data = build_view(loaded, max_text_chars=max_text_chars)
    name = data["file"] or "trace"
    return render_page(f"rlmx trace · {name}", data, asset("viewer.js"), code_style())


def write_trace_page(
    trace_path: str | Path,
    out: str | Path | None = None,
    *,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> Path:
    """Write the viewer page for ``trace_path`` (default: beside it, ``.html``); returns it."""
    source = Path(trace_path)
    target = Path(out) if out is not None else source.with_suffix(".html")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_trace(source, max_text_chars=max_text_chars), encoding="utf-8")
    return target
