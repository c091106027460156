"""``rlmx bench`` end to end: a subprocess, real HTTP to a loopback OpenAI-compatible server,
the isolated sandbox, and every output file; plus argument errors as one clear line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlmx.cli.bench import parse_length
from rlmx.testing.mock_server import MockOpenAIServer, MockRequest

NEEDLE = re.compile(r"special magic number for ([\w-]+) mentioned")


def solver(request: MockRequest) -> str:
    """A "model" that solves S-NIAH: in an RLM turn it writes the code that finds the needle,
    otherwise it reads the needle off the prompt (the baselines put the context there)."""
    text = "\n".join(str(m.get("content")) for m in request.messages)
    key = NEEDLE.search(text)
    assert key is not None, "every request carries the question"
    pattern = rf"special magic numbers? for {key.group(1)} is: (\d+)"
    if request.messages[0].get("role") == "system":
        return f"```repl\nimport re\nFINAL(re.search(r'{pattern}', context).group(1))\n```"
    found = re.search(pattern, text)
    return found.group(1) if found else "not in what I was shown"


@pytest.fixture
def server() -> Iterator[MockOpenAIServer]:
    srv = MockOpenAIServer(solver)
    srv.start_in_thread()
    yield srv
    srv.stop_thread()


def rlmx(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLMX_MODEL"))}
    return subprocess.run(
        [sys.executable, "-m", "rlmx", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_bench_end_to_end_over_http(server: MockOpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["bench", "sniah", "--method", "rlm", "--method", "direct", "--method", "rag"]
    args += ["--model", "vllm:mock", "--base-url", server.base_url, "--lengths", "2k", "4096"]
    args += ["--n", "2", "--out", str(out)]
    proc = rlmx(*args)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 2 * 2
    assert {(r["method"], r["length"]) for r in records} == {
        (m, n) for m in ("rlm:1", "direct", "rag") for n in (2048, 4096)
    }
    assert all(r["score"] == 1.0 and r["error"] is None for r in records), records
    # usage in the records is what the server reported, request for request
    totals = server.usage_totals()
    assert sum(r["input_tokens"] for r in records) == totals["prompt_tokens"]
    assert sum(r["output_tokens"] for r in records) == totals["completion_tokens"]
    for record in records:
        assert (out / record["trace"]).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["method"], r["length"], r["n"], r["score"]) for r in summary["rows"]} == {
        (m, n, 2, 100.0) for m in ("rlm:1", "direct", "rag") for n in (2048, 4096)
    }
    table = (out / "summary.md").read_text()
    assert "| rlm:1 | 2K | 2 | 100.0 |" in table and table in proc.stdout
    for png in ("sniah_score_vs_length.png", "sniah_cost_vs_score.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    # a rerun finds everything done: no request is sent
    sent = len(server.requests)
    again = rlmx(*args)
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == sent and "12 of 12 items already done" in again.stderr
    # the folder's traces, browsable with their scores
    view = rlmx("view", str(out))
    assert view.returncode == 0, view.stderr
    assert '"score":1.0' in (out / "view" / "index.html").read_text()


def test_a_failing_provider_exits_1_with_the_results_kept(tmp_path: Path) -> None:
    srv = MockOpenAIServer(lambda request: "x", api_key="the-right-key")
    srv.start_in_thread()
    try:
        out = tmp_path / "out"
        proc = rlmx(
            "bench", "sniah", "--method", "direct", "--model", "vllm:mock",
            "--base-url", srv.base_url, "--lengths", "2k", "--n", "1", "--out", str(out),
        )  # fmt: skip
    finally:
        srv.stop_thread()
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "401" in proc.stderr
    assert (out / "config.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sniah", "--method", "magic"], "Unknown method 'magic'"),
        (["sniah", "--method", "rlm:7"], "Unknown RLM depth"),
        (["sniah", "--lengths", "lots"], "expected a length in tokens"),
        (["nosuchtask"], "invalid choice: 'nosuchtask'"),
        (["sniah", "--variant", "single_9"], "unknown S-NIAH variant"),
        (["oolong", "--variant", "single_2"], "--variant does not apply to the oolong task"),
    ],
)
def test_bad_arguments_are_one_clear_line(args: list[str], message: str) -> None:
    proc = rlmx("bench", *args, "--model", "vllm:mock", "--base-url", "http://127.0.0.1:9/v1")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_no_model_is_a_usage_error() -> None:
    proc = rlmx("bench", "sniah")
    assert proc.returncode == 2 and "No model given" in proc.stderr


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("8192", 8192), ("8k", 8192), ("32K", 32768), ("2^17", 131072), ("1M", 1 << 20)],
)
def test_lengths(text: str, tokens: int) -> None:
    assert parse_length(text) == tokens


def test_the_response_cache_makes_a_rerun_free(server: MockOpenAIServer, tmp_path: Path) -> None:
    cache = tmp_path / "replies.sqlite3"
    args = ["bench", "sniah", "--method", "direct", "--method", "mapreduce", "--window", "1024"]
    args += ["--model", "vllm:mock", "--base-url", server.base_url, "--lengths", "2k", "--n", "2"]
    first = rlmx(*args, "--cache", str(cache), "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    sent = len(server.requests)
    assert sent > 4  # mapreduce mapped several chunks per item
    second = rlmx(*args, "--cache", str(cache), "--out", str(tmp_path / "b"))
    assert second.returncode == 0, second.stderr
    assert len(server.requests) == sent  # every reply came from the cache

    def results(name: str) -> dict[tuple[str, str], dict[str, object]]:
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        return {(r["method"], r["item_id"]): r for r in map(json.loads, lines)}

    before, after = results("a"), results("b")
    assert before.keys() == after.keys() and len(after) == 4
    for key, record in after.items():
        assert record["cached_responses"] > 0 and before[key]["cached_responses"] == 0
        assert (record["answer"], record["score"]) == (before[key]["answer"], before[key]["score"])
