"""Run one workload of the suite with rlms (PyPI ``rlms``, import ``rlm``), in its own venv.

    ~/.cache/rlmx/perf/rlms-VERSION/bin/python drive_rlms.py SPEC_JSON

The counterpart of ``drive_rlmx.py``, run by ``run.py`` in the virtual environment that
holds rlms, never in rlmx's. rlms is used as published, unpatched, with its defaults:
``RLM(backend="openai", backend_kwargs={"model_name", "base_url", "api_key"})``, the
default ``environment="local"`` (code runs in this process), ``max_depth=1`` and
``max_iterations=30``. A dummy API key is passed because its OpenAI client requires one.
The context is ``RLM.completion(prompt=...)``, the question ``root_prompt``.

As for rlmx: one warm-up completion (model ``warmup``, not counted by the server), then
one measured completion, or for ``concurrency`` ``CONCURRENCY_RUNS`` completions on as
many threads (rlms is synchronous; one ``RLM`` per thread). Besides the wall time taken
around the call it reports rlms' own ``execution_time``, which stops before the
completion's teardown (the LM handler's ``socketserver`` shutdown, which waits up to its
0.5 s poll interval). The result goes to a file: rlms' local REPL swaps the process-wide
``sys.stdout``, so cells can print onto this process's standard output.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import common

t_import = time.monotonic()
from rlm import RLM  # noqa: E402

IMPORT_S = time.monotonic() - t_import


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("rlms")


def make_rlm(spec: dict[str, Any], model: str) -> RLM:
    backend_kwargs = {"model_name": model, "base_url": spec["url"], "api_key": "sk-mock"}
    return RLM(backend="openai", backend_kwargs=backend_kwargs)


def run_one(rlm: RLM, context: Any, query: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result = rlm.completion(context, root_prompt=query)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    summary = result.usage_summary
    return {
        "answer": result.response,
        "execution_time_s": result.execution_time,
        "call_wall_s": time.monotonic() - started,
        "input_tokens_reported": summary.total_input_tokens,
        "calls_reported": sum(m.total_calls for m in summary.model_usage_summaries.values()),
    }


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    workload, params = spec["workload"], spec.get("params", {})
    out: dict[str, Any] = {
        "library": "rlms",
        "version": version(),
        "variant": spec["variant"],
        "workload": workload,
        "import_s": IMPORT_S,
    }

    warm = run_one(make_rlm(spec, common.WARMUP_MODEL), "warm-up context", "warm up")
    out["warmup_ok"] = warm.get("answer") == "warm"
    if not out["warmup_ok"]:
        out["warmup"] = warm

    context: Any = None
    if workload == "context":
        context = common.read_ascii(Path(params["path"]))
    elif workload == "tokens":
        context = common.make_text(common.TOKENS_CONTEXT_CHARS)
    elif workload != "concurrency":
        context = f"{workload} benchmark context"

    if workload == "concurrency":
        n = int(params.get("runs", common.CONCURRENCY_RUNS))

        def one(k: int) -> dict[str, Any]:
            rlm = make_rlm(spec, common.MEASURED_MODEL)
            r = run_one(rlm, common.concurrency_context(k), common.concurrency_query(k))
            r["run"] = k
            r["correct"] = r.get("answer") == common.concurrency_expected(k)
            return r

        with common.Measure() as measure, ThreadPoolExecutor(n) as pool:
            answers = list(pool.map(one, range(n)))
        out["runs"] = answers
        out["correct"] = sum(a["correct"] for a in answers)
        out["errors"] = sum("error" in a for a in answers)
    else:
        built = time.monotonic()
        rlm = make_rlm(spec, common.MEASURED_MODEL)
        out["construct_s"] = time.monotonic() - built
        with common.Measure() as measure:
            one_result = run_one(rlm, context, f"Run the {workload} workload.")
        common.check_answer(out, one_result, workload, params, context)
    out.update(measure.result)
    out["context_chars"] = len(context) if isinstance(context, str) else None
    common.emit(spec["out"], out)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc(file=sys.__stderr__)
        sys.exit(1)
