"""``rlmx run`` end to end: a real subprocess, the real OpenAI SDK, a loopback HTTP server.

The server plays both models. Root requests (their system prompt describes the REPL)
follow a script keyed on the turn; sub-model requests are answered from their prompt.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rlmx.pricing import cost_of
from rlmx.testing.mock_server import MockOpenAIServer, MockRequest
from rlmx.trace import read_events
from rlmx.usage import RequestUsage

ROOT_MODEL = "gpt-4o-mini"
SUB_MODEL = "gpt-4.1-nano"
NEEDLE = "48151623"


def fence(src: str) -> str:
    return f"```repl\n{src}\n```"


def is_repl_run(request: MockRequest) -> bool:
    first = request.messages[0]
    return first["role"] == "system" and "persistent Python REPL" in first["content"]


def turn(request: MockRequest) -> int:
    return sum(1 for m in request.messages if m["role"] == "assistant")


def run_cli(
    *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLMX_MODEL"))}
    return subprocess.run(
        [sys.executable, "-m", "rlmx", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture
def server_factory() -> Iterator[Callable[[Callable[[MockRequest], str]], MockOpenAIServer]]:
    servers: list[MockOpenAIServer] = []

    def factory(handler: Callable[[MockRequest], str], latency_s: float = 0.0) -> MockOpenAIServer:
        srv = MockOpenAIServer(handler, latency_s=latency_s)
        srv.start_in_thread()
        servers.append(srv)
        return srv

    yield factory
    for srv in servers:
        srv.stop_thread()


@pytest.fixture
def haystack(tmp_path: Path) -> Path:
    """About 5 MB of filler lines with one needle in the middle."""
    rng = random.Random(7)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(70_000)]
    lines[41_234] = f"note: the magic number is {NEEDLE}."
    path = tmp_path / "haystack.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size > 5_000_000
    return path


def needle_policy(request: MockRequest) -> str:
    if is_repl_run(request):
        step = turn(request)
        if step == 0:
            return fence(
                "pieces = chunk('chars', 400_000)\n"
                "prompts = [f'Reply with the magic number in this text, or none.\\n{p}' "
                "for p in pieces]\n"
                "replies = llm_query_batched(prompts)\n"
                "found = [r for r in replies if r != 'none']\n"
                "print(len(pieces), found)"
            )
        return "FINAL(" + re.findall(r"\['(\d+)'\]", request.messages[-1]["content"])[0] + ")"
    match = re.search(r"magic number is (\d+)", request.last_user_message)
    return match.group(1) if match else "none"


def test_needle_in_5mb_through_batched_fan_out(
    server_factory: Callable[..., MockOpenAIServer], haystack: Path, tmp_path: Path
) -> None:
    srv = server_factory(needle_policy, latency_s=0.05)
    trace = tmp_path / "trace.jsonl"
    proc = run_cli(
        "run",
        "--model", f"openai:{ROOT_MODEL}",
        "--sub-model", f"openai:{SUB_MODEL}",
        "--base-url", srv.base_url,
        "--context", str(haystack),  # the default sandbox: isolated
        "--trace", str(trace),
        "--json",
        "What is the magic number?",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["answer"] == NEEDLE
    assert out["stopped_by"] is None
    assert out["iterations"] == 2
    pieces = -(-len(haystack.read_text()) // 400_000)
    assert out["sub_calls"] == pieces  # one request per chunk
    assert out["depth_reached"] == 1
    assert out["trace_path"] == str(trace)
    assert set(out) >= {
        "answer", "usage", "cost_usd", "iterations", "sub_calls", "depth_reached",
        "elapsed_s", "stopped_by", "trace_path",
    }  # fmt: skip

    # Usage equals what the server reported, request by request, model by model.
    server = srv.usage_totals()
    assert out["usage"]["requests"] == server["requests"] == pieces + 2
    assert out["usage"]["input_tokens"] == server["prompt_tokens"]
    assert out["usage"]["output_tokens"] == server["completion_tokens"]
    by_model = out["usage"]["by_model"]
    assert by_model[f"openai:{ROOT_MODEL}"]["requests"] == 2
    assert by_model[f"openai:{SUB_MODEL}"]["requests"] == pieces
    assert out["usage"]["by_depth"]["1"]["requests"] == pieces

    # Cost: the price table applied to each request the server answered.
    expected = Decimal(0)
    for req in srv.requests:
        usage = RequestUsage(
            input_tokens=_estimate(req.messages), output_tokens=_out_tokens(req, needle_policy)
        )
        price = cost_of(req.model, usage)
        assert price is not None
        expected += price
    assert Decimal(out["cost_usd"]) == expected

    # The trace is a consistent tree.
    events = read_events(trace)
    assert [e["type"] for e in events].count("run_started") == 1
    started = [e for e in events if e["type"] == "sub_call_started"]
    finished = [e for e in events if e["type"] == "sub_call_finished"]
    assert {e["call_id"] for e in started} == {e["call_id"] for e in finished}
    assert len(started) == pieces
    responses = [e for e in events if e["type"] == "model_response"]
    assert sum(e["usage"]["input_tokens"] for e in responses) == server["prompt_tokens"]
    assert events[-1]["type"] == "run_finished" and events[-1]["answer"] == NEEDLE
    # The sub-call requests overlapped (fan-out), they were not serial.
    assert srv.max_in_flight > 1


def _estimate(messages: list[dict[str, Any]]) -> int:
    from rlmx.testing.mock_server import estimate_message_tokens

    return estimate_message_tokens(messages)


def _out_tokens(req: MockRequest, policy: Callable[[MockRequest], str]) -> int:
    from rlmx.testing.mock_server import estimate_tokens

    return estimate_tokens(policy(req))


def test_depth_two_child_rlm_answers_part_of_the_question(
    server_factory: Callable[..., MockOpenAIServer], tmp_path: Path
) -> None:
    def policy(request: MockRequest) -> str:
        if request.model == ROOT_MODEL:
            if turn(request) == 0:
                return fence(
                    "first, second = context.split('|')\n"
                    "a = rlm_query('What is the city?', context=first)\n"
                    "b = second.strip()\n"
                    "print(a, b)"
                )
            return fence("FINAL(a + ' / ' + b)")
        assert is_repl_run(request), "at depth 2 the sub-model runs its own REPL"
        if turn(request) == 0:
            return fence("city = context.split('=')[1].strip()\ncity")
        return "FINAL_VAR(city)"

    srv = server_factory(policy)
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("city = Lisbon | river Tagus")
    trace = tmp_path / "t.jsonl"
    proc = run_cli(
        "run", "--model", f"openai:{ROOT_MODEL}", "--sub-model", f"openai:{SUB_MODEL}",
        "--base-url", srv.base_url, "--max-depth", "2",
        "--context", str(ctx), "--trace", str(trace), "--json", "--quiet", "City and river?",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["answer"] == "Lisbon / river Tagus"
    assert out["depth_reached"] == 1
    assert out["usage"]["by_model"][f"openai:{SUB_MODEL}"]["requests"] == 2
    events = read_events(trace)
    runs = [e for e in events if e["type"] == "run_started"]
    assert len(runs) == 2
    root, child = runs
    assert child["parent_id"] == root["run_id"] and child["depth"] == 1
    child_done = [
        e for e in events if e["type"] == "run_finished" and e["run_id"] == child["run_id"]
    ]
    assert child_done[0]["answer"] == "Lisbon"
    call = next(e for e in events if e["type"] == "sub_call_finished")
    assert call["child_run_id"] == child["run_id"] and call["kind"] == "rlm"


def test_plain_output_stdin_context_and_progress_lines(
    server_factory: Callable[..., MockOpenAIServer],
) -> None:
    def policy(request: MockRequest) -> str:
        return fence("context.count('x')") if turn(request) == 0 else "FINAL(three x)"

    srv = server_factory(policy)
    proc = run_cli(
        "run", "--model", "openai:gpt-4o-mini", "--base-url", srv.base_url,
        "--sandbox", "local", "--context", "-", "count x",
        stdin=b"x x x",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == "three x\n"
    stderr = proc.stderr.decode()
    assert "rlmx: iteration 2/30" in stderr  # plain progress lines: stderr is not a tty
    assert "Traceback" not in stderr


def test_limit_exit_code_and_partial_answer(
    server_factory: Callable[..., MockOpenAIServer], tmp_path: Path
) -> None:
    srv = server_factory(lambda r: fence("answer = 'partial'\nprint(1)"))
    ctx = tmp_path / "c.txt"
    ctx.write_text("abc")
    proc = run_cli(
        "run", "--model", "openai:gpt-4o-mini", "--base-url", srv.base_url, "--sandbox",
        "local", "--context", str(ctx), "--max-iterations", "2", "--json", "q",
    )  # fmt: skip
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    assert out["stopped_by"] == "max_iterations"
    assert out["answer"] == "partial"

    strict = run_cli(
        "run", "--model", "openai:gpt-4o-mini", "--base-url", srv.base_url, "--sandbox",
        "local", "--context", str(ctx), "--max-iterations", "1", "--strict", "--json", "q",
    )  # fmt: skip
    assert strict.returncode == 3
    assert "rlmx: stopped: max_iterations=1 reached" in strict.stderr.decode()
    assert json.loads(strict.stdout)["stopped_by"] == "max_iterations"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model", "openai:gpt-4o-mini"], 2, "set OPENAI_API_KEY"),
        (["--model", "opena:gpt-4o-mini"], 2, "Did you mean 'openai'"),
        (["--model", "gpt-4o-mini"], 2, "provider:model"),
        ([], 2, "No model given"),
        (["--model", "vllm:x", "--sandbox", "docker"], 2, "choose one of: isolated, local"),
        (["--model", "vllm:x", "--sandbox", "local", "--require-isolation"], 2, "needs sandbox"),
        (["--model", "openai:x", "--max-iterations", "x"], 2, "expected an integer"),
        (["--model", "openai:x", "--max-cost", "-1"], 2, "amount >= 0"),
    ],
)
def test_user_errors_are_messages_not_tracebacks(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    ctx = tmp_path / "c.txt"
    ctx.write_text("abc")
    proc = run_cli("run", *args, "--context", str(ctx), "q")
    stderr = proc.stderr.decode()
    assert proc.returncode == code, stderr
    assert message in stderr
    assert "Traceback" not in stderr


def test_missing_context_path_and_unreachable_endpoint(tmp_path: Path) -> None:
    missing = run_cli(
        "run", "--model", "openai:gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1",
        "--sandbox", "local", "--context", str(tmp_path / "nope.txt"), "q",
    )  # fmt: skip
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr.decode()

    ctx = tmp_path / "c.txt"
    ctx.write_text("abc")
    unreachable = run_cli(
        "run", "--model", "openai:gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1",
        "--sandbox", "local", "--context", str(ctx), "--quiet", "q",
    )  # fmt: skip
    assert unreachable.returncode == 1
    assert "Could not reach openai:gpt-4o-mini at http://127.0.0.1:9/v1" in (
        unreachable.stderr.decode()
    )
    assert "Traceback" not in unreachable.stderr.decode()


def test_doctor_and_help() -> None:
    doctor = run_cli("doctor")
    assert doctor.returncode == 0
    text = doctor.stdout.decode()
    assert "local" in text and "isolated" in text and "OPENAI_API_KEY" in text
    helped = run_cli("--help")
    assert helped.returncode == 0 and "Exit codes" in helped.stdout.decode()
    nothing = run_cli()
    assert nothing.returncode == 2
