"""Twenty runs at once in one process, over real HTTP, give twenty unmixed answers."""

from __future__ import annotations

import asyncio
import re

import pytest

from rlmx import RLM
from rlmx.models import OpenAIChatModel
from rlmx.testing.mock_server import MockOpenAIServer, MockRequest


def policy(request: MockRequest) -> str:
    first = request.messages[0]
    if first["role"] != "system":  # a sub-call: echo the tag back, upper-cased
        return request.last_user_message.removeprefix("shout ").upper()
    turns = sum(1 for m in request.messages if m["role"] == "assistant")
    if turns == 0:
        return (
            "```repl\n"
            "import time\n"
            "for _ in range(30):\n    print(context[:5]); time.sleep(0.001)\n"
            "tag = context.split(':')[1]\n"
            "loud = llm_query_batched(['shout ' + tag] * 3)\n"
            "```"
        )
    seen = {
        line for line in request.messages[-1]["content"].splitlines() if re.match(r"r\d\d:", line)
    }
    if len(seen) != 1:
        return f"FINAL(leaked {sorted(seen)})"
    return "```repl\nFINAL(loud[0] if len(set(loud)) == 1 else 'mixed')\n```"


@pytest.mark.parametrize("sandbox", ["isolated", "local"])
async def test_twenty_concurrent_runs_over_http(sandbox: str) -> None:
    async with MockOpenAIServer(policy, latency_s=0.02) as srv:
        model = OpenAIChatModel("gpt-4o-mini", base_url=srv.base_url, max_retries=0)
        async with RLM(model, sandbox=sandbox) as rlm:
            contexts = [f"r{i:02d}:tag{i}" for i in range(20)]
            results = await asyncio.gather(*(rlm.acompletion(c, "tag?") for c in contexts))
        assert [r.answer for r in results] == [f"TAG{i}" for i in range(20)]
        assert all(r.sub_calls == 3 and r.usage.requests == 5 for r in results)
        # Each run's usage is its own: the totals add up to what the server reported.
        assert sum(r.usage.input_tokens for r in results) == srv.usage_totals()["prompt_tokens"]
        assert srv.max_in_flight > 1
