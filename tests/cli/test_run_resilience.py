"""``rlmx run`` with the resilience flags, end to end over loopback HTTP: the response cache
replays a run with zero provider calls, and a fallback model answers for a dead one."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from rlmx.testing.mock_server import MockOpenAIServer, MockReply, MockRequest
from tests.cli.test_run_e2e import fence, is_repl_run, run_cli, turn

pytestmark = pytest.mark.timeout(120)


def counting_policy(request: MockRequest) -> str | MockReply:
    if request.model == "gpt-4.1-mini":
        return MockReply("", status=503, error_message="primary is down")
    if is_repl_run(request):
        if turn(request) == 0:
            return fence("n = llm_query('how many?')\nprint(n)")
        return "FINAL(seven)"
    return "7"


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    path = tmp_path / "ctx.txt"
    path.write_text("a small context\n")
    return path


def test_cache_replays_a_run_with_zero_provider_calls(context_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite3"
    args = [
        "run",
        "--model",
        "openai:gpt-4.1-nano",
        "--context",
        str(context_file),
        "--sandbox",
        "local",
        "--cache",
        str(cache),
        "--json",
        "q",
    ]
    with MockOpenAIServer(counting_policy).running() as server:
        first = run_cli(*args, "--base-url", server.base_url)
        first_requests = len(server.requests)
        server.reset()
        second = run_cli(*args, "--base-url", server.base_url)
        second_requests = len(server.requests)
    assert first.returncode == 0, first.stderr.decode()
    assert second.returncode == 0, second.stderr.decode()
    assert first_requests == 3  # two root turns and one sub-call
    assert second_requests == 0
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert one["answer"] == two["answer"] == "seven"
    for key in ("requests", "input_tokens", "output_tokens"):
        assert one["usage"][key] == two["usage"][key]
    assert one["usage"]["cached_responses"] == 0
    assert two["usage"]["cached_responses"] == 3
    assert Decimal(one["cost_usd"]) > 0 and Decimal(two["cost_usd"]) == 0


def test_cache_message_on_stderr(context_file: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite3"
    with MockOpenAIServer(counting_policy).running() as server:
        args = ["run", "--model", "openai:gpt-4.1-nano", "--base-url", server.base_url]
        args += ["--context", str(context_file), "--sandbox", "local", "--cache", str(cache), "q"]
        run_cli(*args)
        replay = run_cli(*args)
    assert replay.returncode == 0
    assert b"3 of 3 model replies came from the cache" in replay.stderr


def test_a_bad_cache_path_is_a_usage_error(context_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    proc = run_cli(
        "run", "--model", "openai:m", "--base-url", "http://127.0.0.1:9/v1",
        "--context", str(context_file), "--cache", str(bad), "q",
    )  # fmt: skip
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
    assert str(bad).encode() in proc.stderr and b"choose another path" in proc.stderr


def test_fallback_model_answers_when_the_primary_is_down(
    context_file: Path, tmp_path: Path
) -> None:
    with MockOpenAIServer(counting_policy).running() as server:
        proc = run_cli(
            "run", "--model", "openai:gpt-4.1-mini", "--fallback-model", "openai:gpt-4.1-nano",
            "--sub-model", "openai:gpt-4.1-nano", "--base-url", server.base_url,
            "--context", str(context_file), "--sandbox", "local", "--retries", "1",
            "--json", "q",
        )  # fmt: skip
        models = [r.model for r in server.requests]
    assert proc.returncode == 0, proc.stderr.decode()
    payload = json.loads(proc.stdout)
    assert payload["answer"] == "seven"
    # Each root turn: two attempts at the primary, then the fallback answers.
    assert models.count("gpt-4.1-mini") == 4
    by_model = payload["usage"]["by_model"]
    assert "openai:gpt-4.1-mini" not in by_model
    assert by_model["openai:gpt-4.1-nano"]["requests"] == 3


def test_bad_resilience_flags_are_usage_errors(context_file: Path) -> None:
    for flag, value in (("--retries", "-1"), ("--rpm", "0"), ("--tpm", "x")):
        proc = run_cli(
            "run", "--model", "openai:m", "--context", str(context_file), flag, value, "q"
        )
        assert proc.returncode == 2, flag
        assert b"Traceback" not in proc.stderr
