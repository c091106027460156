"""The suite's mock model: one loopback OpenAI-compatible server shared by both libraries.

Run by ``run.py`` in its own process (rlmx's interpreter, for ``MockOpenAIServer``); it
prints its base URL, then obeys JSON commands on standard input, one per line, answering
each with one JSON line:

- ``{"cmd": "configure", "workload": W, "latency": S, "root_latency": R, "params": {...}}``:
  serve workload ``W``, sub-calls answered after ``S`` seconds and root requests after
  ``R`` (default ``S``), and forget everything recorded;
- ``{"cmd": "stats"}``: what was recorded since (see :meth:`Recorder.stats`).

A request is the *root* model's when it carries a ``system`` message (both libraries send
their system prompt to the root and a lone ``user`` message for ``llm_query``); its turn
is the number of assistant messages it carries, plus one. Root requests get the scripted
reply of ``trajectories.py``; sub-calls get :func:`common.sub_reply`. Requests whose model
is ``common.WARMUP_MODEL`` come from a driver's warm-up completion: answered, not counted.

Tokens are counted here, for both libraries alike, with the mock's own estimate
(``ceil(chars / 4)`` per message content, plus 4 per message). For the concurrency
workload each root request of turn 2 or later is checked for *mixing*: the REPL output
it carries must contain its own run's secret and no other run's tag or secret.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import trajectories

from rlmx.testing.mock_server import (
    MockOpenAIServer,
    MockReply,
    MockRequest,
    estimate_message_tokens,
    estimate_tokens,
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Recorder:
    """The handler: scripted replies, and what the current measurement sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server: MockOpenAIServer | None = None
        self.configure("warmup", 0.0, {}, None)

    def configure(
        self, workload: str, latency: float, params: dict[str, Any], root_latency: float | None
    ) -> None:
        with self.lock:
            self.workload = workload
            self.latency = latency
            self.root_latency = latency if root_latency is None else root_latency
            self.params = params
            self.records: list[dict[str, Any]] = []
            self.warmup_requests = 0
            self.in_flight = 0
            self.max_in_flight = 0
            self.sub_in_flight = 0
            self.max_sub_in_flight = 0
            self.overruns = 0
            self.mixing: list[dict[str, Any]] = []
            self.cpu_mark = _cpu_s()
        if self.server is not None:
            self.server.reset()

    async def __call__(self, request: MockRequest) -> MockReply:
        received = time.monotonic()
        messages = request.messages
        is_root = any(m.get("role") == "system" for m in messages)
        if request.model == common.WARMUP_MODEL:
            with self.lock:
                self.warmup_requests += 1
            turn = 1 + sum(1 for m in messages if m.get("role") == "assistant")
            if is_root:
                return MockReply(trajectories.root_reply("warmup", turn, {}), delay_s=0)
            return MockReply(common.sub_reply(_text(messages[-1].get("content"))), delay_s=0)
        with self.lock:
            workload, params = self.workload, self.params
            latency = self.root_latency if is_root else self.latency
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if not is_root:
                self.sub_in_flight += 1
                self.max_sub_in_flight = max(self.max_sub_in_flight, self.sub_in_flight)
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            if is_root:
                turn = 1 + sum(1 for m in messages if m.get("role") == "assistant")
                if workload == "concurrency" and turn >= 2:
                    self._check_mixing(messages, turn)
                content = trajectories.root_reply(workload, turn, params)
            else:
                turn = 0
                content = common.sub_reply(_text(messages[-1].get("content")))
            record = {
                "root": is_root,
                "turn": turn,
                "received": received,
                "replied": time.monotonic(),
                "input_tokens": estimate_message_tokens(messages),
                "input_chars": sum(len(_text(m.get("content"))) for m in messages),
                "messages": len(messages),
                "output_tokens": estimate_tokens(content),
            }
            with self.lock:
                self.records.append(record)
            return MockReply(content, delay_s=0)
        finally:
            with self.lock:
                self.in_flight -= 1
                if not is_root:
                    self.sub_in_flight -= 1

    def _check_mixing(self, messages: list[dict[str, Any]], turn: int) -> None:
        first_assistant = next(
            (i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages)
        )
        head = " ".join(_text(m.get("content")) for m in messages[:first_assistant])
        tags = common.RUN_TAG.findall(head)
        if not tags:
            with self.lock:
                self.mixing.append({"run": None, "turn": turn, "ok": False, "why": "no tag"})
            return
        k = int(tags[0])
        outputs = " ".join(
            _text(m.get("content"))
            for m in messages[first_assistant:]
            if m.get("role") in ("user", "tool")
        )
        foreign = sorted(
            {int(t) for t in common.RUN_TAG.findall(outputs) if int(t) != k}
            | {int(s) for s in common.SECRET.findall(outputs) if int(s) != k}
        )
        own = common.secret(k) in outputs
        entry = {"run": k, "turn": turn, "ok": own and not foreign, "own": own, "foreign": foreign}
        with self.lock:
            self.mixing.append(entry)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            records = sorted(self.records, key=lambda r: r["received"])
            root = [r for r in records if r["root"]]
            sub = [r for r in records if not r["root"]]
            gaps = [b["received"] - a["replied"] for a, b in itertools.pairwise(root)]
            out: dict[str, Any] = {
                "workload": self.workload,
                "latency_s": self.latency,
                "root_latency_s": self.root_latency,
                "root_requests": len(root),
                "sub_requests": len(sub),
                "warmup_requests": self.warmup_requests,
                "root_input_tokens": sum(r["input_tokens"] for r in root),
                "sub_input_tokens": sum(r["input_tokens"] for r in sub),
                "root_output_tokens": sum(r["output_tokens"] for r in root),
                "sub_output_tokens": sum(r["output_tokens"] for r in sub),
                "root_input_chars": sum(r["input_chars"] for r in root),
                "root_tokens_per_request": [r["input_tokens"] for r in root],
                "root_messages_per_request": [r["messages"] for r in root],
                "max_in_flight": self.max_in_flight,
                "max_sub_in_flight": self.max_sub_in_flight,
                "first_root_received": root[0]["received"] if root else None,
                "last_replied": max((r["replied"] for r in records), default=None),
                "first_sub_received": sub[0]["received"] if sub else None,
                "last_sub_replied": max((r["replied"] for r in sub), default=None),
                "root_gaps_s": gaps,
                "root_timeline": [[r["received"], r["replied"]] for r in root],
                "sub_timeline": [[r["received"], r["replied"]] for r in sub]
                if self.workload == "fanout"
                else [],
                "root_gap_median_s": statistics.median(gaps) if gaps else None,
                "mixing": self.mixing,
                "cpu_s": _cpu_s() - self.cpu_mark,
            }
        return out


async def main() -> None:
    recorder = Recorder()
    server = MockOpenAIServer(recorder)
    recorder.server = server
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def commands() -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            reply: dict[str, Any] = {}
            if command["cmd"] == "configure":
                root_latency = command.get("root_latency")
                recorder.configure(
                    command["workload"],
                    float(command["latency"]),
                    command.get("params", {}),
                    None if root_latency is None else float(root_latency),
                )
            elif command["cmd"] == "stats":
                reply = recorder.stats()
            print(json.dumps(reply), flush=True)
        loop.call_soon_threadsafe(done.set)

    async with server:
        print(server.base_url, flush=True)
        threading.Thread(target=commands, daemon=True).start()
        await done.wait()


if __name__ == "__main__":
    asyncio.run(main())
