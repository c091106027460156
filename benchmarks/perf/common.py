"""Shared, standard-library-only pieces of the rlmx-vs-rlms performance suite.

This module is imported by the orchestrator (``run.py``), the mock server (``server.py``)
and by both drivers (``drive_rlmx.py`` in rlmx's interpreter, ``drive_rlms.py`` in the
separate rlms virtual environment), so it must not import either library. It holds what
several processes have to agree on: the workloads' names and defaults, the texts used as
contexts, the per-run secrets of the concurrency workload and the answers expected, and
the driver-side measurement helpers (CPU and peak memory of the driver process).
"""

from __future__ import annotations

import gc
import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

WORKLOADS = ("fanout", "loop", "context", "concurrency", "tokens")

# Model names the drivers send; the server tells the warm-up completion (not measured)
# from the measured one by the request's "model" field.
MEASURED_MODEL = "perf-model"
WARMUP_MODEL = "warmup"

FANOUT_PROMPTS = 1000
FANOUT_LATENCY_S = 0.2
LOOP_ITERATIONS = 30
TOKENS_ITERATIONS = 30
TOKENS_CONTEXT_CHARS = 2_000_000
# Characters each cell of the token-efficiency trajectory prints, in turn (cycled): small,
# medium and larger than both libraries' 20,000-character cut.
TOKENS_PRINT_SIZES = (400, 4_000, 40_000)
CONCURRENCY_RUNS = 20
CONCURRENCY_LATENCY_S = 0.2
CONCURRENCY_FILLER_CHARS = 2_000

_LINE = "line {:>9}: the quick brown fox jumps over the lazy dog, then naps in the sun.\n"


def make_text(chars: int) -> str:
    """``chars`` characters of numbered ASCII lines (deterministic)."""
    block = "".join(_LINE.format(i) for i in range(1000))
    reps = chars // len(block) + 1
    return (block * reps)[:chars]


def write_text_file(path: Path, size: int) -> None:
    """Write exactly ``size`` bytes of numbered ASCII lines, 16 MiB at a time."""
    block = "".join(_LINE.format(i) for i in range(200_000)).encode("ascii")
    with open(path, "wb") as f:
        remaining = size
        while remaining > 0:
            piece = block[:remaining]
            f.write(piece)
            remaining -= len(piece)


def read_ascii(path: Path) -> str:
    """The file as one ``str`` (the transient bytes copy is freed before returning)."""
    data = path.read_bytes()
    text = data.decode("ascii")
    del data
    gc.collect()
    return text


# ------------------------------------------------------------------ concurrency workload
RUN_TAG = re.compile(r"run-(\d\d)\b")
SECRET = re.compile(r"\bs(\d\d)q\d{5}\b")


def run_tag(k: int) -> str:
    return f"run-{k:02d}"


def secret(k: int) -> str:
    return f"s{k:02d}q{(k * 7919 + 13) % 100_000:05d}"


def concurrency_context(k: int) -> str:
    return f"{run_tag(k)} {secret(k)} " + make_text(CONCURRENCY_FILLER_CHARS)


def concurrency_query(k: int) -> str:
    return f"What is the secret of {run_tag(k)}?"


def sub_reply(prompt: str) -> str:
    """What the mock sub-model answers: ``q12`` -> ``a12``, ``echo X`` -> ``ok-X``."""
    if prompt.startswith("echo "):
        return "ok-" + prompt[5:].strip()
    if prompt.startswith("q") and prompt[1:].isdigit():
        return "a" + prompt[1:]
    return "ok"


def concurrency_expected(k: int) -> str:
    return f"{secret(k)}/{sub_reply('echo ' + secret(k))}"


def expected_answer(workload: str, params: dict[str, Any], context_chars: int = 0) -> str:
    """The answer a correct run of ``workload`` returns (concurrency: see above)."""
    if workload == "fanout":
        return f"{params.get('prompts', FANOUT_PROMPTS)} 0"
    if workload == "loop":
        return f"done {params.get('iterations', LOOP_ITERATIONS)}"
    if workload == "tokens":
        return f"tokens done {params.get('iterations', TOKENS_ITERATIONS)}"
    if workload == "context":
        return str(context_chars)
    if workload == "warmup":
        return "warm"
    raise ValueError(f"no single expected answer for {workload!r}")


# ------------------------------------------------------------------ driver-side measures
def cpu_self_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def status_kib(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), 0 if unreadable."""
    return rss_and_peak_kib(pid, (field,))[0]


def rss_and_peak_kib(
    pid: int | str = "self", fields: tuple[str, ...] = ("VmRSS", "VmHWM")
) -> tuple[int, ...]:
    """Several ``kB`` fields of ``/proc/PID/status`` in one read (0 where unreadable)."""
    found = dict.fromkeys(fields, 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return tuple(found.values())
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in found:
            found[name] = int(value.split()[0])
    return tuple(found[name] for name in fields)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``), so the peak covers only what follows."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class Measure:
    """Wall, CPU and peak memory of the driver process around the measured completion."""

    def __init__(self) -> None:
        self.rss_before_kib = 0
        self.hwm_reset = False
        self.t0 = self.t1 = 0.0
        self._cpu0 = self._children0 = 0.0
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Measure:
        self.rss_before_kib = status_kib("VmRSS")
        self.hwm_reset = reset_peak_rss()
        self._cpu0, self._children0 = cpu_self_s(), cpu_children_s()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.t1 = time.monotonic()
        self.result = {
            "t0": self.t0,
            "t1": self.t1,
            "wall_s": self.t1 - self.t0,
            "cpu_self_s": cpu_self_s() - self._cpu0,
            "cpu_children_s": cpu_children_s() - self._children0,
            "rss_before_kib": self.rss_before_kib,
            "driver_peak_kib": status_kib("VmHWM") if self.hwm_reset else None,
            "driver_peak_is_windowed": self.hwm_reset,
        }


def check_answer(
    out: dict[str, Any], result: dict[str, Any], workload: str, params: dict[str, Any], context: Any
) -> None:
    """Put one run's ``result`` into ``out`` with whether its answer is the workload's."""
    out.update(result)
    expected = expected_answer(workload, params, len(context) if isinstance(context, str) else 0)
    out["correct"] = int(result.get("answer") == expected)
    out["expected"] = expected


def emit(out: str, payload: dict[str, Any]) -> None:
    """Write the driver's one JSON result to ``out`` (stdout may carry the REPL's prints)."""
    Path(out).write_text(json.dumps(payload))
    print("result written", file=sys.__stderr__)
