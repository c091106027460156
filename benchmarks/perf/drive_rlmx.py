"""Run one workload of the suite with rlmx, in rlmx's own interpreter, and write one JSON result.

    python drive_rlmx.py SPEC_JSON

``SPEC_JSON`` (from ``run.py``) names the workload, the mock server's URL, the sandbox
(``isolated``, rlmx's default, or ``local``), the workload's parameters and the file to
write the result to. The root model and the sub-model are both ``vllm:perf-model`` at
the mock server (an OpenAI-compatible preset that needs no key and costs nothing), so
every root turn and every sub-call is a real HTTP request, as for rlms.

The process first makes one warm-up completion (model ``warmup``, not counted by the
server), so imports and one-time probes are not charged to the measured run; then it
measures one completion (for ``concurrency``: ``CONCURRENCY_RUNS`` ``acompletion`` calls
gathered on one event loop): wall time, CPU of this process and of its reaped children,
and this process's peak RSS during the run (``run.py`` samples the sandbox workers).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import common

t_import = time.monotonic()
import rlmx  # noqa: E402
from rlmx import RLM, Limits  # noqa: E402

IMPORT_S = time.monotonic() - t_import


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("rlmx")


def make_rlm(spec: dict[str, Any], model: str, **kwargs: Any) -> RLM:
    return RLM(f"vllm:{model}", base_url=spec["url"], sandbox=spec["variant"], **kwargs)


def run_one(rlm: RLM, context: Any, query: str) -> dict[str, Any]:
    try:
        result = rlm.completion(context, query)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return {
        "answer": result.answer,
        "iterations": result.iterations,
        "sub_calls": result.sub_calls,
        "stopped_by": result.stopped_by,
        "input_tokens_reported": result.usage.input_tokens,
        "isolation": (result.metadata or {}).get("isolation"),
    }


async def gather_runs(rlm: RLM, n: int) -> list[Any]:
    try:
        return list(
            await asyncio.gather(
                *(
                    rlm.acompletion(common.concurrency_context(k), common.concurrency_query(k))
                    for k in range(n)
                ),
                return_exceptions=True,
            )
        )
    finally:
        await rlm.aclose()


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    workload, params = spec["workload"], spec.get("params", {})
    out: dict[str, Any] = {
        "library": "rlmx",
        "version": version(),
        "variant": spec["variant"],
        "workload": workload,
        "import_s": IMPORT_S,
        "rlmx_path": str(Path(rlmx.__file__).parent),
    }
    warnings.simplefilter("ignore")  # e.g. a loud note where only rlimits isolate

    warm = run_one(make_rlm(spec, common.WARMUP_MODEL), "warm-up context", "warm up")
    out["warmup_ok"] = warm.get("answer") == "warm"
    if not out["warmup_ok"]:
        out["warmup"] = warm

    kwargs: dict[str, Any] = {}
    if workload == "fanout":
        kwargs["limits"] = Limits(max_concurrency=int(params["concurrency"]))
    built = time.monotonic()
    rlm = make_rlm(spec, common.MEASURED_MODEL, **kwargs)
    out["construct_s"] = time.monotonic() - built

    context: Any = None
    if workload == "context":
        context = common.read_ascii(Path(params["path"]))
    elif workload == "tokens":
        context = common.make_text(common.TOKENS_CONTEXT_CHARS)
    elif workload != "concurrency":
        context = f"{workload} benchmark context"

    if workload == "concurrency":
        n = int(params.get("runs", common.CONCURRENCY_RUNS))
        with common.Measure() as measure:
            results = asyncio.run(gather_runs(rlm, n))
        answers = []
        for k, r in enumerate(results):
            if isinstance(r, BaseException):
                answers.append({"run": k, "error": f"{type(r).__name__}: {r}"[:300]})
            else:
                answers.append({"run": k, "answer": r.answer, "iterations": r.iterations})
            answers[-1]["correct"] = answers[-1].get("answer") == common.concurrency_expected(k)
        out["runs"] = answers
        out["correct"] = sum(a["correct"] for a in answers)
        out["errors"] = sum("error" in a for a in answers)
    else:
        with common.Measure() as measure:
            one = run_one(rlm, context, f"Run the {workload} workload.")
        common.check_answer(out, one, workload, params, context)
    out.update(measure.result)
    out["context_chars"] = len(context) if isinstance(context, str) else None
    common.emit(spec["out"], out)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
