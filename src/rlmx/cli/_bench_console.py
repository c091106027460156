"""The benchmark's live console on stderr: a rich progress bar on a terminal, plain lines
elsewhere. It only receives the runner's progress calls; the runner never prints."""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from rlmx.bench.runner import BenchProgress

__all__ = ["BenchConsole"]


class BenchConsole(BenchProgress):
    """The benchmark's live console: items done of total, running, tokens, cost, elapsed, and
    the mean score so far per method. A rich progress bar on a terminal; elsewhere one plain
    line per finished item."""

    def __init__(self, stream: TextIO | None = None, force_plain: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.total = 0
        self.done = 0
        self.skipped = 0
        self.running = 0
        self.errors = 0
        self.tokens = 0
        self.cost: Decimal | None = Decimal(0)
        self.scores: dict[str, list[float]] = {}
        self.started_at = time.monotonic()
        self.live_mode = not force_plain and self.stream.isatty()
        self._progress: Progress | None = None
        self._bar: TaskID | None = None

    def started(self, total: int, already_done: int) -> None:
        self.total, self.skipped, self.done = total, already_done, already_done
        if already_done:
            self._line(f"{already_done} of {total} items already done in this folder: skipped")
        if self.live_mode:
            console = Console(file=self.stream, stderr=True)
            self._progress = Progress(
                TextColumn("rlmx bench"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}", style="dim"),
                console=console,
                refresh_per_second=4,
            )
            self._bar = self._progress.add_task(
                "bench", total=total, completed=already_done, status=""
            )
            self._progress.start()

    def status(self) -> str:
        cost = "cost unknown" if self.cost is None else f"${self.cost:.4f}"
        means = " · ".join(
            f"{method} {100 * sum(s) / len(s):.1f}" for method, s in sorted(self.scores.items())
        )
        errors = f" · {self.errors} failed" if self.errors else ""
        return (
            f"{self.done}/{self.total} done, {self.running} running{errors} · {self.tokens:,} "
            f"tokens · {cost} · {time.monotonic() - self.started_at:.1f}s"
            + (f" · score {means}" if means else "")
        )

    def item_started(self, method: str, item: Any) -> None:
        self.running += 1
        self._refresh()

    def item_finished(self, record: dict[str, Any]) -> None:
        self.running -= 1
        self.done += 1
        self.tokens += int(record.get("input_tokens") or 0) + int(record.get("output_tokens") or 0)
        cost = record.get("cost_usd")
        self.cost = None if cost is None or self.cost is None else self.cost + Decimal(cost)
        self.scores.setdefault(str(record["method"]), []).append(float(record.get("score") or 0))
        if record.get("error"):
            self.errors += 1
        if self._progress is None:
            outcome = (
                f"error: {record['error']}"
                if record.get("error")
                else (f"score {100 * float(record.get('score') or 0):.1f}")
            )
            self._line(
                f"[{self.done}/{self.total}] {record['method']} {record['item_id']} {outcome}"
            )
            self._line(self.status())
        self._refresh()

    def _refresh(self) -> None:
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, completed=self.done, status=self.status())

    def _line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
            return
        self.stream.write(f"rlmx bench: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None
