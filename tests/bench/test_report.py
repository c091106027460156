"""Benchmark reports: percentiles, the per-task table, unknown costs, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlmx.bench.report import percentile, summarise, write_plots, write_summary


def record(method: str, length: int, score: float, **kw: Any) -> dict[str, Any]:
    base = {"task": "oolong", "method": method, "length": length, "score": score}
    base |= {"latency_s": 1.0, "cost_usd": "0.01", "input_tokens": 100, "output_tokens": 10}
    return base | kw


def test_percentiles_interpolate() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(i) for i in range(1, 101)], 95) == pytest.approx(95.05)


def test_rows_group_by_method_and_length_in_a_stable_order() -> None:
    records = [
        record("rag", 1024, 0.0),
        record("rlm:1", 1024, 1.0, latency_s=2.0),
        record("rlm:1", 1024, 0.5, latency_s=4.0, cost_usd="0.03"),
        record("rlm:1", 2048, 0.25, error="ModelAPIError: 503"),
        record("direct", 1024, 1.0, cost_usd=None),
    ]
    rows = summarise(records)
    assert [(r["method"], r["length"]) for r in rows] == [
        ("rlm:1", 1024),
        ("rlm:1", 2048),
        ("direct", 1024),
        ("rag", 1024),
    ]
    first = rows[0]
    assert first["n"] == 2 and first["score"] == 75.0
    assert first["mean_cost_usd"] == "0.020000" and first["total_cost_usd"] == "0.040000"
    assert first["latency_p50_s"] == 3.0 and first["latency_p95_s"] == pytest.approx(3.9)
    assert rows[1]["errors"] == 1
    assert rows[2]["mean_cost_usd"] is None  # one unpriced item makes the mean unknown


def test_summary_files_and_plots(tmp_path: Path) -> None:
    records = [record("rlm:1", 1024, 1.0), record("rlm:1", 4096, 0.5), record("rag", 1024, 0.0)]
    config = {"model": "m", "sub_model": "s", "seed": 0, "tokenizer": "o200k_base"}
    rows = write_summary(tmp_path, records, config)
    payload = json.loads((tmp_path / "summary.json").read_text())
    assert payload["rows"] == rows and payload["config"] == config
    table = (tmp_path / "summary.md").read_text()
    assert (
        "## oolong" in table
        and "| rlm:1 | 4K | 1 | 50.0 | $0.0100 | 1.00 s | 1.00 s | 0 |" in table
    )
    written = write_plots(tmp_path, rows)
    assert [p.name for p in written] == ["oolong_score_vs_length.png", "oolong_cost_vs_score.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
