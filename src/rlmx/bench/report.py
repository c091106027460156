"""Benchmark reports: ``summary.json``, ``summary.md`` (a table per task: method x length,
score, mean cost, p50/p95 latency) and PNG plots (score vs context length per method; cost vs
score), all computed from the records in ``results.jsonl``."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rlmx.exceptions import ConfigError

__all__ = ["percentile", "summarise", "write_plots", "write_summary"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _method_order(label: str) -> tuple[int, str]:
    order = ["rlm:0", "rlm:1", "rlm:2", "rlm:3", "direct", "rag", "mapreduce", "summary"]
    return (order.index(label) if label in order else len(order), label)


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task x method x length: n, score (mean x100), cost, latency, errors."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        key = (str(record.get("task")), str(record["method"]), int(record.get("length") or 0))
        groups[key].append(record)
    rows = []
    for (task, method, length), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], _method_order(kv[0][1]), kv[0][2])
    ):
        scores = [float(r.get("score") or 0.0) for r in group]
        latencies = [float(r["latency_s"]) for r in group if r.get("latency_s") is not None]
        costs = [r.get("cost_usd") for r in group]
        known = [Decimal(str(c)) for c in costs if c is not None]
        errors = sum(1 for r in group if r.get("error"))
        mean_cost = None
        if known and len(known) == len(costs):
            mean_cost = sum(known, Decimal(0)) / len(known)
        rows.append(
            {
                "task": task,
                "method": method,
                "length": length,
                "n": len(group),
                "score": round(100 * statistics.fmean(scores), 2),
                "mean_cost_usd": None if mean_cost is None else f"{mean_cost:.6f}",
                "total_cost_usd": None if mean_cost is None else f"{sum(known, Decimal(0)):.6f}",
                "latency_p50_s": _round(percentile(latencies, 50)),
                "latency_p95_s": _round(percentile(latencies, 95)),
                "mean_input_tokens": round(
                    statistics.fmean(r.get("input_tokens") or 0 for r in group)
                ),
                "mean_output_tokens": round(
                    statistics.fmean(r.get("output_tokens") or 0 for r in group)
                ),
                "mean_iterations": round(
                    statistics.fmean(r.get("iterations") or 0 for r in group), 2
                ),
                "mean_sub_calls": round(
                    statistics.fmean(r.get("sub_calls") or 0 for r in group), 2
                ),
                "errors": errors,
            }
        )
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _length_label(tokens: int) -> str:
    if tokens >= 1 << 20 and tokens % (1 << 20) == 0:
        return f"{tokens >> 20}M"
    if tokens >= 1 << 10 and tokens % (1 << 10) == 0:
        return f"{tokens >> 10}K"
    return f"{tokens:,}"


def _markdown(rows: Sequence[dict[str, Any]], config: dict[str, Any]) -> str:
    lines = [
        "# Benchmark summary",
        "",
        f"Model `{config.get('model')}`, sub-model `{config.get('sub_model')}`, seed "
        f"{config.get('seed')}; lengths in tokens ({config.get('tokenizer', 'tokens')}). "
        "Score is the mean x100 of the published per-item scorer; cost is the mean per item "
        "(unknown when a model had no price); latency per item.",
    ]
    for task in sorted({r["task"] for r in rows}):
        lines += [
            "",
            f"## {task}",
            "",
            "| method | length | n | score | mean cost | p50 latency | p95 latency | errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["task"] == task):
            cost = "unknown" if r["mean_cost_usd"] is None else f"${float(r['mean_cost_usd']):.4f}"
            p50 = "–" if r["latency_p50_s"] is None else f"{r['latency_p50_s']:.2f} s"
            p95 = "–" if r["latency_p95_s"] is None else f"{r['latency_p95_s']:.2f} s"
            lines.append(
                f"| {r['method']} | {_length_label(r['length'])} | {r['n']} | {r['score']:.1f} "
                f"| {cost} | {p50} | {p95} | {r['errors']} |"
            )
    return "\n".join(lines) + "\n"


def write_summary(
    out: Path, records: Sequence[dict[str, Any]], config: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write ``summary.json`` and ``summary.md`` into ``out``; returns the rows."""
    rows = summarise(records)
    payload = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "rows": rows,
    }
    (out / "summary.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(_markdown(rows, config), encoding="utf-8")
    return rows


def write_plots(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``score_vs_length.png`` and ``cost_vs_score.png`` per task (needs matplotlib, the
    ``bench`` extra); returns the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(
            'Plots need matplotlib: pip install "rlmx[bench]" (the summary was written).'
        ) from exc
    written: list[Path] = []

    def save(task: str, kind: str, xlabel: str, title: str, draw: Any) -> None:
        """One score plot: ``draw(ax, method, rows)`` adds each method's points."""
        task_rows = [r for r in rows if r["task"] == task]
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
        for method in sorted({r["method"] for r in task_rows}, key=_method_order):
            draw(ax, method, [r for r in task_rows if r["method"] == method])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("score")
        ax.set_ylim(-3, 103)
        ax.set_title(f"{task}: {title}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"{_file_part(task)}_{kind}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    def by_length(ax: Any, method: str, method_rows: list[dict[str, Any]]) -> None:
        points = sorted((r["length"], r["score"]) for r in method_rows)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
        ax.set_xscale("log", base=2)

    def by_cost(ax: Any, method: str, method_rows: list[dict[str, Any]]) -> None:
        points = [
            (float(r["mean_cost_usd"]), r["score"])
            for r in method_rows
            if r["mean_cost_usd"] is not None
        ]
        ax.scatter([p[0] for p in points], [p[1] for p in points], label=method)

    for task in sorted({r["task"] for r in rows}):
        save(
            task, "score_vs_length", "context length (tokens)", "score vs context length", by_length
        )
        title = "cost vs score (one point per method x length)"
        save(task, "cost_vs_score", "mean cost per item (USD)", title, by_cost)
    return written


def _file_part(task: str) -> str:
    return task.replace("/", "_").replace(" ", "_")
