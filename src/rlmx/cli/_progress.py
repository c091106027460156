"""Live progress of a run on stderr: a rich status line on a terminal, plain lines elsewhere.

It is a trace sink: it only reads events, so the engine never prints.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from rlmx.trace import TraceEvent

__all__ = ["ProgressSink"]

_PLAIN_INTERVAL_S = 1.0


class ProgressSink:
    """Counts iterations, sub-calls, tokens and cost from trace events and shows them."""

    def __init__(
        self, max_iterations: int, stream: TextIO | None = None, force_plain: bool = False
    ) -> None:
        self.stream = stream or sys.stderr
        self.max_iterations = max_iterations
        self.iteration = 0
        self.sub_started = 0
        self.sub_finished = 0
        self.tokens = 0
        self.cost: Decimal | None = Decimal(0)
        self.started = time.monotonic()
        self.live_mode = not force_plain and self.stream.isatty()
        self._last_plain = 0.0
        self._live: Live | None = None
        if self.live_mode:
            console = Console(file=self.stream, stderr=True)
            self._live = Live(self._render(), console=console, refresh_per_second=4)
            self._live.start()

    def status(self) -> str:
        cost = "?" if self.cost is None else f"${self.cost:.4f}"
        in_flight = self.sub_started - self.sub_finished
        return (
            f"iteration {self.iteration}/{self.max_iterations} · sub-calls "
            f"{self.sub_finished} done, {in_flight} in flight · {self.tokens:,} tokens · "
            f"{cost} · {time.monotonic() - self.started:.1f}s"
        )

    def _render(self) -> Text:
        return Text("rlmx  " + self.status(), style="dim")

    def __call__(self, event: TraceEvent) -> None:
        data: dict[str, Any] = event.data
        important = False
        if event.type == "model_request" and event.depth == 0 and data.get("call_id") is None:
            self.iteration = data.get("iteration") or self.iteration
            important = True
        elif event.type == "sub_call_started":
            self.sub_started += 1
        elif event.type == "sub_call_finished":
            self.sub_finished += 1
        elif event.type == "model_response":
            usage = data.get("usage") or {}
            self.tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
            cost = data.get("cost_usd")
            if "usage" in data:
                self.cost = None if cost is None or self.cost is None else self.cost + Decimal(cost)
        elif event.type == "run_finished" and event.depth == 0:
            important = True
        self._show(important)

    def _show(self, important: bool) -> None:
        if self._live is not None:
            self._live.update(self._render())
            return
        now = time.monotonic()
        if important or now - self._last_plain >= _PLAIN_INTERVAL_S:
            self._last_plain = now
            self.stream.write(f"rlmx: {self.status()}\n")
            self.stream.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
