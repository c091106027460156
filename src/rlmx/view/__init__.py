"""``rlmx view``: a trace as one self-contained HTML page, and a folder of traces as an index.

The page inlines its style, script and data (no network request, no CDN: a Content Security
Policy forbids any), so it can be mailed, attached to a bug or opened from a CI artifact.
It shows the run tree (root -> iterations -> cells -> sub-calls -> child runs), every model
call's prompt delta and reply, each cell's highlighted code and output, totals per node,
a timeline that shows the concurrency of fan-outs, search, and errors. A trace of a run that
crashed or was killed renders up to its last complete line and says the run did not finish.
"""

from __future__ import annotations

from rlmx.view._listing import TraceSummary, find_traces, render_index, write_index
from rlmx.view._model import DEFAULT_MAX_TEXT_CHARS, build_view
from rlmx.view._page import render_page, render_trace, write_trace_page

__all__ = [
    "DEFAULT_MAX_TEXT_CHARS",
    "TraceSummary",
    "build_view",
    "find_traces",
    "render_index",
    "render_page",
    "render_trace",
    "write_index",
    "write_trace_page",
]
