"""Measure sub-call fan-out: 1,000 ``llm_query_batched`` prompts against a 200 ms mock model.

A mock OpenAI server (``rlmx.testing.mock_server.MockOpenAIServer``, 0.2 s per reply) runs
in its own process, so its CPU is not charged to the client. Each measurement then runs in
a fresh client process, at each concurrency (default 64 and 256):

1. ``rlmx``: an ``RLM`` whose root model is a ``ScriptedModel`` (first reply: a ```` ```repl ````
   cell running ``answers = llm_query_batched([f"q{i}" for i in range(1000)])``; second
   reply: ``FINAL_VAR(summary)``) and whose sub-model is the string ``"openai:mock"`` with
   ``sub_base_url=`` the mock server, so requests go through the real provider adapter and
   rlmx's default wrappers (retry + shared rate limiter), from the default isolated sandbox,
   with ``Limits(max_concurrency=c)``. Wall time is the whole ``RLM.completion`` (sandbox
   start-up included); the cell also times the batch alone and reads the worker's CPU.
2. ``SDK (httpx2)``: a plain ``openai.AsyncOpenAI(base_url=..., api_key="x", max_retries=0)``
   with its default transport, the same calls bounded by ``asyncio.Semaphore(c)``.
3. ``SDK (aiohttp)``: the same with ``http_client=openai.DefaultAioHttpClient()``, the
   transport rlmx uses.
4. ``SDK (httpx2, pool=c)``: the default transport with ``max_connections`` and
   ``max_keepalive_connections`` set to ``c`` (the SDK's default is 1,000 / 100).

For each it prints the median over ``--repeat`` runs of: wall time (and its range) and its
ratio to the ideal ``ceil(calls / c) * latency``, the client process's CPU (``RUSAGE_SELF``,
user + sys) and CPU per call, the sandbox worker's CPU as ``RUSAGE_CHILDREN`` sees it and
as the worker itself reads it (``time.process_time()`` at the end of the cell: with bwrap,
``RUSAGE_CHILDREN`` only sees bwrap, not the worker inside its PID namespace), the server's
peak requests in flight and its CPU, the CPU other processes used meanwhile (the machine's
busy time from ``/proc/stat`` less the client, worker and server) and the answers that were
errors or not the expected reply (all runs). Then the targets: rlmx within 1.3x the ideal
at concurrency 256, and at most 2 ms of client CPU per call. The configurations are
interleaved, and each run first waits (``--settle``, at most 60 s) for the machine to be
idle, as other processes' load on a small machine changes the wall times a lot.

    .venv/bin/python benchmarks/fanout.py
    .venv/bin/python benchmarks/fanout.py --quick
    .venv/bin/python benchmarks/fanout.py --repeat 5 --json /tmp/fanout.json

``--quick`` makes 200 calls once per configuration (a smoke test; the targets are defined
for 1,000 calls). The server is ``MockOpenAIServer`` started by a small wrapper rather than
``python -m rlmx.testing.mock_server``, whose command line has no way to report the
in-flight peak: the wrapper serves the same way and answers ``reset`` / ``stats`` on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

GIB = 1024**3
SRC = Path(__file__).resolve().parent.parent / "src"

# method -> label in the tables
METHODS: dict[str, str] = {
    "rlmx": "rlmx (RLM, isolated sandbox)",
    "httpx": "SDK (httpx2, default pool)",
    "aiohttp": "SDK (aiohttp)",
    "httpx-pool": "SDK (httpx2, pool=c)",
}

TARGET_RATIO = 1.3  # rlmx wall time / ideal, at concurrency TARGET_CONCURRENCY
TARGET_CONCURRENCY = 256
TARGET_CPU_MS = 2.0  # rlmx client CPU per call
QUIET_SHARE = 0.15  # a run starts once the machine is at most this busy (all cores), if it can

# The mock server process: MockOpenAIServer as `python -m rlmx.testing.mock_server` runs it,
# plus `reset` / `stats` commands on stdin (the peak in flight lives in the server process).
SERVER = """
import asyncio, json, resource, sys, threading
from rlmx.testing.mock_server import MockOpenAIServer

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

async def main(latency):
    server = MockOpenAIServer(latency_s=latency)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def commands():
        mark = cpu()
        for line in sys.stdin:
            if line.strip() == "reset":
                server.reset()
                mark = cpu()
                print("{}", flush=True)
            elif line.strip() == "stats":
                stats = {
                    "max_in_flight": server.max_in_flight,
                    "requests": len(server.requests),
                    "ok_replies": server.usage_totals()["requests"],
                    "cpu_s": cpu() - mark,
                }
                print(json.dumps(stats), flush=True)
        loop.call_soon_threadsafe(done.set)

    async with server:
        print(server.base_url, flush=True)
        threading.Thread(target=commands, daemon=True).start()
        await done.wait()

asyncio.run(main(float(sys.argv[1])))
"""

# The cell the scripted root model runs; it leaves a JSON summary in `summary`.
CELL = """\
import json, time
t0 = time.perf_counter()
answers = llm_query_batched([f"q{{i}}" for i in range({calls})])
batch_s = time.perf_counter() - t0
bad = [i for i, a in enumerate(answers) if a != f"mock reply to: q{{i}}"]
summary = json.dumps({{
    "answers": len(answers),
    "errors": sum(1 for a in answers if a.startswith("Error")),
    "bad": len(bad) + {calls} - len(answers),
    "first_bad": answers[bad[0]][:300] if bad else None,
    "batch_s": batch_s,
    "worker_cpu_s": time.process_time(),
}})
print(len(answers))"""


def expected(i: int) -> str:
    """The mock server's default reply to the prompt ``q{i}``."""
    return f"mock reply to: q{i}"


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, steal included), /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return math.nan
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    del idle, iowait
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- child: one run
def child_rlmx(url: str, calls: int, concurrency: int) -> dict[str, Any]:
    from rlmx import RLM, Limits
    from rlmx.models import ScriptedModel

    root = ScriptedModel([f"```repl\n{CELL.format(calls=calls)}\n```", "FINAL_VAR(summary)"])
    rlm = RLM(
        root,
        "openai:mock",
        sub_base_url=url,
        limits=Limits(max_concurrency=concurrency),
    )
    self0, children0 = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    busy0 = machine_busy_s()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "no price known for 'mock'"
        result = rlm.completion("fan-out benchmark", "Answer every prompt.")
    wall = time.perf_counter() - started
    busy = machine_busy_s() - busy0
    cpu = cpu_seconds(resource.RUSAGE_SELF) - self0
    children = cpu_seconds(resource.RUSAGE_CHILDREN) - children0
    try:
        summary = json.loads(result.answer)
    except (TypeError, ValueError):
        message = f"the run gave no summary: {result.answer!r} ({result.stop_message})"
        raise SystemExit(message) from None
    return {
        "wall_s": wall,
        "batch_s": summary["batch_s"],
        "cpu_s": cpu,
        "children_cpu_s": children,
        "worker_cpu_s": summary["worker_cpu_s"],
        "machine_busy_s": busy,
        "errors": summary["errors"],
        "bad": summary["bad"],
        "first_bad": summary["first_bad"],
        "sub_calls": result.sub_calls,
        "isolation": result.metadata.get("isolation"),
    }


async def sdk_fanout(url: str, calls: int, concurrency: int, method: str) -> list[str]:
    import openai

    http_client: Any = None
    if method == "aiohttp":
        http_client = openai.DefaultAioHttpClient()
    elif method == "httpx-pool":
        import httpx2

        pool = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        http_client = openai.DefaultAsyncHttpxClient(limits=pool)
    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, http_client=http_client)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with slots:
            try:
                completion = await client.chat.completions.create(
                    model="mock", messages=[{"role": "user", "content": f"q{i}"}]
                )
            except openai.OpenAIError as exc:
                return f"Error: {type(exc).__name__}: {exc}"
            return completion.choices[0].message.content or ""

    try:
        return list(await asyncio.gather(*(one(i) for i in range(calls))))
    finally:
        await client.close()


def child_sdk(url: str, calls: int, concurrency: int, method: str) -> dict[str, Any]:
    import aiohttp  # noqa: F401  (imported before the clock starts, like rlmx's modules)
    import httpx2  # noqa: F401
    import openai  # noqa: F401

    self0 = cpu_seconds(resource.RUSAGE_SELF)
    busy0 = machine_busy_s()
    started = time.perf_counter()
    answers = asyncio.run(sdk_fanout(url, calls, concurrency, method))
    wall = time.perf_counter() - started
    busy = machine_busy_s() - busy0
    cpu = cpu_seconds(resource.RUSAGE_SELF) - self0
    bad = [i for i, a in enumerate(answers) if a != expected(i)]
    return {
        "wall_s": wall,
        "batch_s": wall,
        "cpu_s": cpu,
        "children_cpu_s": 0.0,
        "worker_cpu_s": 0.0,
        "machine_busy_s": busy,
        "errors": sum(1 for a in answers if a.startswith("Error")),
        "bad": len(bad),
        "first_bad": answers[bad[0]][:300] if bad else None,
        "sub_calls": len(answers),
    }


def child_main(spec: dict[str, Any]) -> None:
    method, url, calls, concurrency = (
        spec["method"],
        spec["url"],
        spec["calls"],
        spec["concurrency"],
    )
    if method == "rlmx":
        result = child_rlmx(url, calls, concurrency)
    else:
        result = child_sdk(url, calls, concurrency, method)
    print(json.dumps(result))


# ---------------------------------------------------------------------- parent
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


class MockServerProcess:
    """The mock server in its own process; ``reset()`` and ``stats()`` talk to it on stdin."""

    def __init__(self, latency_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(latency_s)],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base_url = self._line()

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the mock server exited with status {self.proc.wait()}")
        return line.strip()

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line())
        return answer

    def reset(self) -> None:
        self._ask("reset")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # EOF: the server stops
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()


def wait_for_quiet(max_wait_s: float, busy_share: float = QUIET_SHARE) -> float:
    """Wait (at most ``max_wait_s``) until the machine's CPU is mostly idle for 0.5 s.

    Other processes on a small machine change the wall times a lot; the time waited is
    returned, and each run still records what others used while it ran.
    """
    cores = os.cpu_count() or 1
    started = time.monotonic()
    while True:
        before = machine_busy_s()
        time.sleep(0.5)
        share = (machine_busy_s() - before) / (0.5 * cores)
        waited = time.monotonic() - started
        if math.isnan(share) or share <= busy_share or waited >= max_wait_s:
            return waited


def run_once(
    server: MockServerProcess, method: str, calls: int, concurrency: int, settle_s: float
) -> dict[str, Any]:
    spec = {"method": method, "url": server.base_url, "calls": calls, "concurrency": concurrency}
    waited = wait_for_quiet(settle_s) if settle_s > 0 else 0.0
    server.reset()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child {spec} failed with status {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    stats = server.stats()
    result["server_max_in_flight"] = stats["max_in_flight"]
    result["server_requests"] = stats["requests"]
    result["server_cpu_s"] = stats["cpu_s"]
    # What other processes used while the run ran: the machine's busy time less this run's
    # client, sandbox worker and server (their windows differ a little: an estimate).
    others = result["machine_busy_s"] - result["cpu_s"] - result["worker_cpu_s"] - stats["cpu_s"]
    result["others_cpu_s"] = max(0.0, others)
    result["others_share"] = result["others_cpu_s"] / (result["wall_s"] * (os.cpu_count() or 1))
    result["waited_for_quiet_s"] = waited
    return result


def ideal_s(calls: int, concurrency: int, latency: float) -> float:
    return math.ceil(calls / concurrency) * latency


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> None:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(align) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, help="sub-calls per run (default 1000; 200 quick)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[64, 256], help="default: 64 256"
    )
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per reply (0.2)")
    parser.add_argument("--repeat", type=int, help="runs per configuration (default 3; 1 quick)")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=list(METHODS),
        help="what to measure (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="200 calls, 1 run (smoke test)")
    parser.add_argument(
        "--settle",
        type=float,
        help="before each run, wait up to this many seconds for the machine to be idle "
        "(default 60; 0 with --quick)",
    )
    parser.add_argument("--json", type=Path, help="write the raw results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    calls = args.calls or (200 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)
    settle = args.settle if args.settle is not None else (0.0 if args.quick else 60.0)
    configs = [(m, c) for m in args.methods for c in args.concurrency]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {cfg: [] for cfg in configs}
    server = MockServerProcess(args.latency)
    try:
        for i in range(repeat):  # configurations interleaved, so a slow spell hits them alike
            for method, concurrency in configs:
                print(f"# {method} c={concurrency} ({i + 1}/{repeat})", file=sys.stderr)
                runs[method, concurrency].append(
                    run_once(server, method, calls, concurrency, settle)
                )
    finally:
        server.close()

    cpus = os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.release()} "
        f"{platform.machine()}, {cpus} cores, {ram:.1f} GiB RAM"
    )
    print(
        f"{calls:,} calls, mock latency {args.latency} s, median of {repeat} run(s); "
        "errors summed over all runs; others' CPU: what other processes used during a "
        f"run, as a share of all {cpus} cores (median)"
    )
    print()
    header = [
        "method",
        "concurrency",
        "wall s",
        "wall range s",
        "ideal s",
        "ratio to ideal",
        "batch s",
        "client CPU s",
        "CPU ms/call",
        "worker CPU s (children / own)",
        "server peak in flight",
        "server CPU s",
        "others' CPU",
        "errors",
    ]
    rows: list[list[str]] = []
    for method, concurrency in configs:
        rs = runs[method, concurrency]
        ideal = ideal_s(calls, concurrency, args.latency)
        wall = median(rs, "wall_s")
        cpu = median(rs, "cpu_s")
        worker = (
            f"{median(rs, 'children_cpu_s'):.3f} / {median(rs, 'worker_cpu_s'):.3f}"
            if method == "rlmx"
            else "-"
        )
        rows.append(
            [
                METHODS[method],
                str(concurrency),
                f"{wall:.3f}",
                f"{min(r['wall_s'] for r in rs):.2f}–{max(r['wall_s'] for r in rs):.2f}",
                f"{ideal:.1f}",
                f"{wall / ideal:.2f}x",
                f"{median(rs, 'batch_s'):.3f}",
                f"{cpu:.3f}",
                f"{cpu / calls * 1000:.2f}",
                worker,
                str(max(r["server_max_in_flight"] for r in rs)),
                f"{median(rs, 'server_cpu_s'):.3f}",
                f"{median(rs, 'others_share'):.0%}",
                f"{sum(r['bad'] for r in rs)}",
            ]
        )
    table(header, rows, ["---", *["---:"] * (len(header) - 1)])

    targets: list[list[str]] = []
    if "rlmx" in args.methods:
        if TARGET_CONCURRENCY in args.concurrency:
            rs = runs["rlmx", TARGET_CONCURRENCY]
            ratio = median(rs, "wall_s") / ideal_s(calls, TARGET_CONCURRENCY, args.latency)
            targets.append(
                [
                    f"rlmx wall <= {TARGET_RATIO}x ideal at concurrency {TARGET_CONCURRENCY}",
                    f"{ratio:.2f}x",
                    "MET" if ratio <= TARGET_RATIO else "MISSED",
                ]
            )
        for concurrency in args.concurrency:
            per_call = median(runs["rlmx", concurrency], "cpu_s") / calls * 1000
            targets.append(
                [
                    f"rlmx client CPU <= {TARGET_CPU_MS} ms/call at concurrency {concurrency}",
                    f"{per_call:.2f} ms",
                    "MET" if per_call <= TARGET_CPU_MS else "MISSED",
                ]
            )
        for concurrency in args.concurrency:
            bad = sum(r["bad"] for r in runs["rlmx", concurrency])
            targets.append(
                [
                    f"rlmx: every answer came back, none an error (concurrency {concurrency})",
                    f"{bad} bad",
                    "MET" if bad == 0 else "MISSED",
                ]
            )
    if targets:
        table(["target", "measured", ""], targets, ["---", "---:", "---"])
    if args.quick or calls != 1000:
        print(f"(the targets are defined for 1,000 calls; this run made {calls:,})")
    for (method, concurrency), rs in runs.items():
        extra = [r["server_requests"] for r in rs if r["server_requests"] != calls]
        if extra:  # retries, or requests that never reached the server
            print(f"{method} c={concurrency}: the server received {extra} requests, not {calls}")
        for r in rs:
            if r["first_bad"]:
                print(f"{method} c={concurrency}: first bad answer: {r['first_bad']!r}")
                break

    if args.json:
        raw = {
            "calls": calls,
            "latency_s": args.latency,
            "repeat": repeat,
            "machine": {
                "python": platform.python_version(),
                "system": f"{platform.system()} {platform.release()} {platform.machine()}",
                "cpus": cpus,
                "ram_gib": round(ram, 1),
            },
            "runs": [
                {"method": m, "concurrency": c, "ideal_s": ideal_s(calls, c, args.latency), **r}
                for (m, c), rs in runs.items()
                for r in rs
            ],
        }
        args.json.write_text(json.dumps(raw, indent=2))
        print(f"# raw results written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
