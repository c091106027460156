"""Measure the sandboxes: start-up, per-cell round trip, sub-calls and big contexts.

For each sandbox — ``isolated`` with bubblewrap namespaces, ``isolated`` with
``use_bwrap=False`` and ``local`` — the script prints Markdown tables of:

1. start-up: time from creating a sandbox to the result of its first cell ``1``; *cold*
   is the first sandbox in a fresh process (median over several fresh processes; it
   includes the one-time layer probe, timed on its own too), *warm* the following ones;
2. the round trip of a trivial cell ``x = 1`` (median and p95);
3. one ``llm_query`` round trip against a handler that answers at once;
4. a 100-prompt ``llm_query_batched`` against a handler that spends 0.2 s on every
   prompt, all prompts concurrently, like a model (ideal: 0.2 s);
5. ``load_context`` of a 100 MiB and a 1 GiB ASCII string and of a 100 MiB non-ASCII
   one (the UTF-8 path), then the first cell ``len(context)``, with peak memory: the
   host's ``VmHWM`` and the sum of ``VmHWM`` over every worker process (bwrap and the
   Python worker). Each context runs in a fresh process, so earlier allocations do not
   inflate the host's peak, three times (times: the median and the range, as they vary
   a lot from run to run; memory: the largest run). The parent also samples the summed
   ``VmRSS`` of that process tree every 10 ms (the simultaneous peak, which the
   ``VmHWM`` sum bounds).

    .venv/bin/python benchmarks/sandbox.py
    .venv/bin/python benchmarks/sandbox.py --quick --skip-1g

``--quick`` cuts the repetitions (for a smoke test); ``--skip-1g`` leaves out the 1 GiB
context. The ``load_context`` time is that of a fresh sandbox, as the engine uses it:
it includes starting the worker; the table splits it into the host writing the context
file, the worker reading it, and the rest (starting the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
GIB = 1024 * MIB
SRC = Path(__file__).resolve().parent.parent / "src"

# name -> (get_sandbox kind, options)
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "isolated (bwrap)": ("isolated", {"use_bwrap": True}),
    "isolated (no bwrap)": ("isolated", {"use_bwrap": False}),
    "local": ("local", {}),
}

TARGET_STARTUP_MS = 150.0
TARGET_CELL_MS = 2.0
TARGET_LOAD_1G_S = 4.0
TARGET_PEAK_1G = 2.5 * GIB

BATCH_PROMPTS = 100
BATCH_DELAY_S = 0.2


# ---------------------------------------------------------------------- handlers
class InstantHandler:
    """A sub-call handler that answers every prompt at once (echoes it)."""

    async def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        return list(prompts)

    async def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]:
        return list(prompts)


class ModelLikeHandler:
    """Every prompt takes ``delay`` seconds; the prompts of a batch run concurrently."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def _one(self, prompt: str) -> str:
        await asyncio.sleep(self.delay)
        return prompt

    async def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        return list(await asyncio.gather(*(self._one(p) for p in prompts)))

    async def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]:
        return list(await asyncio.gather(*(self._one(p) for p in prompts)))


# ---------------------------------------------------------------------- /proc helpers
def proc_status_kib(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``); 0 if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


# ---------------------------------------------------------------------- small helpers
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def make_context(size: int, non_ascii: bool) -> str:
    """``size`` characters of 1,024-character lines, built with one allocation."""
    line = ("0123456789abcdef" * 64)[:-1] + "\n"
    if non_ascii:
        line = "é" + line[1:]
    count, rest = divmod(size, len(line))
    return line * count + line[:rest]


def new_sandbox(mode: str, handler: Any = None) -> Any:
    from rlmx.sandbox import SandboxConfig, get_sandbox

    kind, options = MODES[mode]
    return get_sandbox(kind, SandboxConfig(handler=handler, cell_timeout_s=60), **options)


def check(result: Any, what: str) -> Any:
    if result.error is not None or result.timed_out or result.restarted:
        raise SystemExit(f"{what} failed: {result.error}")
    return result


async def time_startup(mode: str) -> float:
    """Seconds from creating a sandbox to the result of its first cell; closes it."""
    start = time.perf_counter()
    sandbox = new_sandbox(mode, InstantHandler())
    async with sandbox:
        check(await sandbox.execute("1"), "the first cell")
        return time.perf_counter() - start


# ---------------------------------------------------------------------- child tasks
# Each runs in a fresh interpreter (``--child TASK ...``) and prints one JSON line.


def child_probe() -> dict[str, Any]:
    import rlmx.sandbox  # noqa: F401  (imported before the clock starts)
    from rlmx.sandbox import _spawn

    start = time.perf_counter()
    found = _spawn.probe()
    return {"seconds": time.perf_counter() - start, "layers": found.available_layers}


def child_cold(mode: str) -> dict[str, Any]:
    start = time.perf_counter()
    import rlmx.sandbox  # noqa: F401  (imported before the start-up clock starts)

    imported = time.perf_counter() - start
    return {"import": imported, "seconds": asyncio.run(time_startup(mode))}


async def child_cells(mode: str, warm: int, cells: int, queries: int, batches: int) -> dict:
    import rlmx.sandbox  # noqa: F401  (imported before the start-up clock starts)

    out: dict[str, Any] = {"first": await time_startup(mode)}
    out["warm"] = [await time_startup(mode) for _ in range(warm)]

    async with new_sandbox(mode, InstantHandler()) as sandbox:
        for _ in range(20):  # warm-up
            check(await sandbox.execute("x = 1"), "x = 1")
        times = []
        for _ in range(cells):
            start = time.perf_counter()
            check(await sandbox.execute("x = 1"), "x = 1")
            times.append(time.perf_counter() - start)
        out["cell"] = times
        for _ in range(10):
            check(await sandbox.execute("y = llm_query('hi')"), "llm_query")
        times = []
        for _ in range(queries):
            start = time.perf_counter()
            check(await sandbox.execute("y = llm_query('hi')"), "llm_query")
            times.append(time.perf_counter() - start)
        out["llm_query"] = times
        out["layers"] = sandbox.describe().get("layers", [])

    code = f"r = llm_query_batched([f'prompt {{i}}' for i in range({BATCH_PROMPTS})])"
    async with new_sandbox(mode, ModelLikeHandler(BATCH_DELAY_S)) as sandbox:
        check(await sandbox.execute("1"), "start")
        times = []
        for _ in range(batches):
            start = time.perf_counter()
            check(await sandbox.execute(code), "llm_query_batched")
            times.append(time.perf_counter() - start)
        result = check(await sandbox.execute("len(r), r[7]"), "batch answers")
        if result.stdout.strip() != f"({BATCH_PROMPTS}, 'prompt 7')":
            raise SystemExit(f"unexpected batch answers: {result.stdout!r}")
        out["batch"] = times
    return out


async def child_context(mode: str, size: int, non_ascii: bool) -> dict[str, Any]:
    from rlmx.sandbox import isolated

    text = make_context(size, non_ascii)
    phases = {"write": 0.0, "read": 0.0}

    # Instrumentation only: time the host's file write and the worker's read.
    write_context = isolated._write_context

    def timed_write(value: Any, context_dir: Path) -> Any:
        start = time.perf_counter()
        try:
            return write_context(value, context_dir)
        finally:
            phases["write"] += time.perf_counter() - start

    load = isolated.IsolatedSandbox._load

    async def timed_load(self: Any, worker: Any, message: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            await load(self, worker, message)
        finally:
            phases["read"] += time.perf_counter() - start

    isolated._write_context = timed_write  # type: ignore[assignment]
    isolated.IsolatedSandbox._load = timed_load  # type: ignore[method-assign]

    me = os.getpid()
    out: dict[str, Any] = {"chars": len(text)}
    async with new_sandbox(mode) as sandbox:
        out["host_before_kib"] = proc_status_kib(me, "VmRSS")
        start = time.perf_counter()
        await sandbox.load_context(text)
        out["load"] = time.perf_counter() - start
        start = time.perf_counter()
        result = check(await sandbox.execute("len(context)"), "len(context)")
        out["first_cell"] = time.perf_counter() - start
        if result.stdout.strip() != str(len(text)):
            raise SystemExit(f"len(context) gave {result.stdout!r}, expected {len(text)}")
        out["host_peak_kib"] = proc_status_kib(me, "VmHWM")
        workers = descendants(me)
        out["worker_procs"] = len(workers)
        out["worker_peak_kib"] = sum(proc_status_kib(pid, "VmHWM") for pid in workers)
    out.update(phases)
    return out


def child_main(argv: list[str]) -> None:
    task, *rest = argv
    result: dict[str, Any]
    if task == "probe":
        result = child_probe()
    elif task == "cold":
        result = child_cold(rest[0])
    elif task == "cells":
        mode, *counts = rest
        warm, cells, queries, batches = (int(c) for c in counts)
        result = asyncio.run(child_cells(mode, warm, cells, queries, batches))
    elif task == "context":
        result = asyncio.run(child_context(rest[0], int(rest[1]), rest[2] == "utf-8"))
    else:
        raise SystemExit(f"unknown child task {task!r}")
    print(json.dumps(result))


# ---------------------------------------------------------------------- parent
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def run_child(*args: object, sample: bool = False) -> dict[str, Any]:
    """Run ``--child ARGS`` in a fresh interpreter; optionally sample its tree's RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *map(str, args)]
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, text=True)
    peak_kib = 0
    if sample:
        while proc.poll() is None:
            tree = [proc.pid, *descendants(proc.pid)]
            peak_kib = max(peak_kib, sum(proc_status_kib(pid, "VmRSS") for pid in tree))
            time.sleep(0.01)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with status {proc.returncode}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    if sample:
        result["sampled_peak_kib"] = peak_kib
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Times: the median run (and the load's range); memory: the largest of the runs."""
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("load", "write", "read", "first_cell"):
        out[key] = statistics.median(r[key] for r in runs)
    out["loads"] = [r["load"] for r in runs]
    for key in ("host_before_kib", "host_peak_kib", "worker_peak_kib", "sampled_peak_kib"):
        out[key] = max(r[key] for r in runs)
    out["combined_kib"] = max(r["host_peak_kib"] + r["worker_peak_kib"] for r in runs)
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f}"


def size_label(size: int) -> str:
    return f"{size // GIB} GiB" if size % GIB == 0 else f"{size // MIB} MiB"


def table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> None:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(align) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    parser.add_argument("--skip-1g", action="store_true", help="leave out the 1 GiB context")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
        return

    from rlmx.sandbox import _spawn

    fresh = 2 if args.quick else 5  # fresh processes for the probe and the cold start
    counts = (5, 100, 50, 2) if args.quick else (20, 500, 200, 5)
    modes = list(MODES)
    if _spawn.probe().bwrap is None:
        print(f"# bwrap unusable here ({_spawn.probe().bwrap_problem}): skipped", file=sys.stderr)
        modes.remove("isolated (bwrap)")

    print("# probe", file=sys.stderr)
    probes = [run_child("probe")["seconds"] for _ in range(fresh)]
    startup: dict[str, dict[str, Any]] = {}
    for mode in modes:
        print(f"# start-up and round trips: {mode}", file=sys.stderr)
        cold = [run_child("cold", mode) for _ in range(fresh)]
        startup[mode] = {
            "cold": [c["seconds"] for c in cold],
            "import": [c["import"] for c in cold],
            **run_child("cells", mode, *counts),
        }

    sizes = [(100 * MIB, False), (100 * MIB, True)]
    if not args.skip_1g:
        sizes.append((GIB, False))
    repeats = 1 if args.quick else 3  # fresh processes per context: load times vary a lot
    contexts: list[tuple[str, int, bool, dict[str, Any]]] = []
    for size, non_ascii in sizes:
        fmt = "utf-8" if non_ascii else "ascii"
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for i in range(repeats):  # modes interleaved, so a slow spell hits them alike
            for mode in modes:
                print(f"# context {size_label(size)} {fmt} {mode} ({i + 1})", file=sys.stderr)
                runs[mode].append(run_child("context", mode, size, fmt, sample=True))
        contexts += [(mode, size, non_ascii, summarize(runs[mode])) for mode in modes]

    cpus = os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.release()} "
        f"{platform.machine()}, {cpus} cores, {ram:.1f} GiB RAM"
    )
    print(f"Layer probe (first call in a fresh process): median {ms(statistics.median(probes))} ms")
    print()

    def row(label: str, fn: Any) -> list[str]:
        return [label, *(fn(startup[m]) for m in modes)]

    n_warm, n_cells, n_queries, n_batches = counts
    rows = [
        row("layers", lambda r: ", ".join(r["layers"]) or "-"),
        row(
            f"`import rlmx.sandbox`, not part of the start-up (ms, median of {fresh})",
            lambda r: ms(statistics.median(r["import"])),
        ),
        [
            f"layer probe alone, first call in a fresh process (ms, median of {fresh})",
            *(ms(statistics.median(probes)) if MODES[m][0] == "isolated" else "-" for m in modes),
        ],
        row(
            f"cold start, isolated incl. the probe (ms, median of {fresh} fresh processes)",
            lambda r: ms(statistics.median(r["cold"])),
        ),
        row(f"warm start (ms, median of {n_warm})", lambda r: ms(statistics.median(r["warm"]))),
        row("warm start (ms, min / max)", lambda r: f"{ms(min(r['warm']))} / {ms(max(r['warm']))}"),
        row(f"cell `x = 1` (ms, median of {n_cells})", lambda r: ms(statistics.median(r["cell"]))),
        row("cell `x = 1` (ms, p95)", lambda r: ms(percentile(r["cell"], 95))),
        row(
            f"cell `llm_query('hi')`, instant handler (ms, median of {n_queries})",
            lambda r: ms(statistics.median(r["llm_query"])),
        ),
        row("cell `llm_query('hi')` (ms, p95)", lambda r: ms(percentile(r["llm_query"], 95))),
        row(
            f"`llm_query_batched`, {BATCH_PROMPTS} prompts x {BATCH_DELAY_S} s "
            f"(s, median of {n_batches}; ideal {BATCH_DELAY_S})",
            lambda r: f"{statistics.median(r['batch']):.3f}",
        ),
    ]
    table(["", *modes], rows)

    rows = []
    for mode, size, non_ascii, r in contexts:
        combined = r["combined_kib"]
        isolated = MODES[mode][0] == "isolated"
        rows.append(
            [
                mode,
                f"{size_label(size)} {'non-ASCII' if non_ascii else 'ASCII'}",
                f"{r['load']:.3f}",
                f"{min(r['loads']):.3f}–{max(r['loads']):.3f}",
                f"{r['write']:.3f}" if isolated else "-",
                f"{r['read']:.3f}" if isolated else "-",
                ms(r["first_cell"]),
                mib(r["host_before_kib"]),
                mib(r["host_peak_kib"]),
                mib(r["worker_peak_kib"]),
                mib(combined),
                f"{combined * 1024 / size:.2f}",
                mib(r["sampled_peak_kib"]),
            ]
        )
    table(
        [
            "sandbox",
            "context",
            f"load_context (s, median of {repeats})",
            "load_context range (s)",
            "host writes file (s)",
            "worker reads (s)",
            "first cell `len(context)` (ms)",
            "host RSS before (MiB)",
            "host peak (MiB)",
            "worker peak (MiB)",
            "combined peak (MiB)",
            "combined / context size",
            "sampled RSS peak (MiB)",
        ],
        rows,
        ["---", "---", *["---:"] * 11],
    )

    targets: list[list[str]] = []
    if "isolated (bwrap)" in modes:
        warm = statistics.median(startup["isolated (bwrap)"]["warm"])
        targets.append(
            [
                f"warm start-up <= {TARGET_STARTUP_MS:.0f} ms (bwrap + seccomp)",
                "isolated (bwrap)",
                f"{ms(warm)} ms",
                verdict(warm * 1000 <= TARGET_STARTUP_MS),
            ]
        )
    isolated_modes = [m for m in modes if MODES[m][0] == "isolated"]
    for mode in isolated_modes:
        cell = statistics.median(startup[mode]["cell"])
        targets.append(
            [
                f"cell round trip <= {TARGET_CELL_MS:.0f} ms (median)",
                mode,
                f"{ms(cell)} ms",
                verdict(cell * 1000 <= TARGET_CELL_MS),
            ]
        )
    for mode, size, non_ascii, r in contexts:
        if size != GIB or non_ascii or mode not in isolated_modes:
            continue
        combined = r["combined_kib"] * 1024
        over = sum(load > TARGET_LOAD_1G_S for load in r["loads"])
        met = verdict(r["load"] <= TARGET_LOAD_1G_S)
        targets.append(
            [
                f"1 GiB context loaded in <= {TARGET_LOAD_1G_S:.0f} s (median)",
                mode,
                f"{r['load']:.2f} s ({min(r['loads']):.2f}–{max(r['loads']):.2f})",
                f"{met} ({over} of {len(r['loads'])} runs over)" if over else met,
            ]
        )
        targets.append(
            [
                "1 GiB combined peak memory <= 2.5 GiB (largest run)",
                mode,
                f"{combined / GIB:.2f} GiB",
                verdict(combined <= TARGET_PEAK_1G),
            ]
        )
    table(["target", "sandbox", "measured", ""], targets, ["---", "---", "---:", "---"])


if __name__ == "__main__":
    main()
