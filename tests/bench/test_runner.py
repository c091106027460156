"""Every task x every method through the real runner, against model policies that know the
gold answer (must score 100) or never do (must score 0): this proves the generators, the
methods, the scorers and the plumbing together, not a model. Plus resume, errors, config
pinning and the records' shape."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rlmx.bench.base import BenchItem, Task
from rlmx.bench.codeqa import CodeQATask
from rlmx.bench.methods import MethodSetup, parse_method
from rlmx.bench.oolong import OolongTask
from rlmx.bench.oolong_pairs import OolongPairsTask
from rlmx.bench.runner import BenchConfig, BenchProgress, BenchRunner, load_results
from rlmx.bench.sniah import SniahTask
from rlmx.bench.trec import builtin_trec
from rlmx.exceptions import ConfigError, ModelAPIError
from rlmx.limits import Limits
from rlmx.models import FunctionModel, Message, ModelSettings
from rlmx.trace import load_trace

ALL_METHODS = ["rlm:0", "rlm:1", "rlm:2", "direct", "rag", "mapreduce", "summary"]
WRONG = "Answer: 99999 (99998, 99999) E"

PACKAGE = {
    "shapes/__init__.py": "from shapes.base import Shape\nfrom shapes.round import Circle\n",
    "shapes/base.py": textwrap.dedent(
        """
        class ShapeError(Exception):
            pass


        class Shape:
            def area(self):
                raise ShapeError("abstract")

            def describe(self):
                return f"{type(self).__name__} of area {self.area()}"


        def check(shape):
            if shape.area() < 0:
                raise ValueError("negative")
            return shape
        """
    ),
    "shapes/round.py": textwrap.dedent(
        """
        from shapes.base import Shape, check


        class Circle(Shape):
            def __init__(self, r):
                self.r = r

            def area(self):
                return 3.14159 * self.r * self.r


        class Ring(Circle):
            def describe(self):
                return "ring " + str(check(self).area())


        def unit():
            return check(Circle(1))
        """
    ),
    "shapes/square.py": textwrap.dedent(
        """
        from shapes.base import Shape, check


        class Square(Shape):
            def __init__(self, side):
                self.side = side

            def area(self):
                return self.side * self.side


        class Rect(Square):
            def __init__(self, w, h):
                self.w, self.h = w, h

            def area(self):
                return check(self).w * self.h


        def never_used():
            raise KeyError("unused")
        """
    ),
}


def oracle_text(item: BenchItem) -> str:
    """An answer the task's published scorer must give full marks."""
    if item.task == "sniah":
        return "The value is " + ", ".join(item.gold)
    if item.task == "oolong-pairs":
        return "\n".join(f"({a}, {b})" for a, b in item.gold)
    return f"Answer: {item.gold}"


class OnePolicy(BenchProgress):
    """Runs items one at a time and tells the model policy which item is being answered."""

    def __init__(self, oracle: bool) -> None:
        self.oracle = oracle
        self.item: BenchItem | None = None
        self.records: list[dict[str, Any]] = []

    def item_started(self, method: str, item: BenchItem) -> None:
        self.item = item

    def item_finished(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def __call__(self, messages: Sequence[Message], _settings: ModelSettings | None) -> str:
        assert self.item is not None
        text = oracle_text(self.item) if self.oracle else WRONG
        if messages[0].role == "system":  # an RLM turn: answer through the REPL
            return f"```repl\nFINAL({text!r})\n```"
        return text


def make_tasks(tmp_path: Path) -> dict[str, tuple[Task, int]]:
    for rel, text in PACKAGE.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text)
    return {
        "sniah": (SniahTask("single_1"), 2048),
        "oolong": (OolongTask(builtin_trec()), 1024),
        "oolong-pairs": (OolongPairsTask(builtin_trec()), 1024),
        "codeqa": (CodeQATask(tmp_path / "src"), 100_000),
    }


def setup_for(policy: OnePolicy, **kw: Any) -> MethodSetup:
    model = FunctionModel(policy, prices=(1, 2))
    limits = Limits(max_iterations=3)
    return MethodSetup(model=model, sub_model=model, sandbox="local", limits=limits, **kw)


def run(task: Task, length: int, out: Path, policy: OnePolicy, methods: list[str], n: int = 2):
    config = BenchConfig(
        task=task.name,
        methods=[parse_method(m) for m in methods],
        lengths=[length],
        n=n,
        seed=0,
        out=out,
        model="test:function",
        sub_model="test:function",
        concurrency=1,
    )
    # small windows so the chunked baselines really chunk the tiny contexts
    setup = setup_for(policy, window_tokens=6000, chunk_tokens=200, map_chunk_tokens=400)
    return asyncio.run(BenchRunner(task, config, setup, progress=policy).arun())


@pytest.mark.parametrize("task_name", ["sniah", "oolong", "oolong-pairs", "codeqa"])
def test_an_oracle_scores_100_and_a_wrong_policy_0_with_every_method(
    task_name: str, tmp_path: Path
) -> None:
    task, length = make_tasks(tmp_path)[task_name]
    oracle = OnePolicy(oracle=True)
    records = run(task, length, tmp_path / "oracle", oracle, ALL_METHODS)
    assert len(records) == 2 * len(ALL_METHODS)
    assert {r["method"] for r in records} == set(ALL_METHODS)
    for record in records:
        assert record["error"] is None, record["error"]
        assert record["score"] == 1.0, (record["method"], record["answer"], record["gold"])
    wrong = OnePolicy(oracle=False)
    for record in run(task, length, tmp_path / "wrong", wrong, ALL_METHODS):
        assert record["error"] is None
        assert record["score"] == 0.0, (record["method"], record["answer"], record["gold"])


def test_records_carry_what_a_report_needs(tmp_path: Path) -> None:
    task, length = make_tasks(tmp_path)["oolong"]
    records = run(task, length, tmp_path / "out", OnePolicy(True), ["rlm:1", "mapreduce"], n=1)
    for record in records:
        for key in ("score", "answer", "gold", "input_tokens", "output_tokens", "cost_usd"):
            assert key in record
        assert record["latency_s"] >= 0 and record["iterations"] >= 1
        assert record["input_tokens"] > 0 and float(record["cost_usd"]) > 0
        trace = load_trace(tmp_path / "out" / record["trace"])
        assert trace.finished and trace.root is not None
        assert trace.root.input_tokens == record["input_tokens"]
    mapreduce = next(r for r in records if r["method"] == "mapreduce")
    assert mapreduce["sub_calls"] > 1  # the tiny window made it map over several chunks
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["method"] for line in lines] == ["rlm:1", "mapreduce"]


def test_a_rerun_resumes_and_retries_only_failed_items(tmp_path: Path) -> None:
    task, length = make_tasks(tmp_path)["sniah"]
    out = tmp_path / "out"
    first = OnePolicy(True)
    run(task, length, out, first, ["direct"], n=2)
    assert len(first.records) == 2
    # mark one item as failed, as an interrupted provider would have left it
    lines = (out / "results.jsonl").read_text().splitlines()
    broken = json.loads(lines[1]) | {"error": "ModelAPIError: 503", "score": 0.0}
    (out / "results.jsonl").write_text("\n".join([*lines, json.dumps(broken)]) + "\n")
    second = OnePolicy(True)
    records = run(task, length, out, second, ["direct"], n=2)
    assert [r["item_id"] for r in second.records] == [broken["item_id"]]
    assert all(r["error"] is None and r["score"] == 1.0 for r in records)
    third = OnePolicy(True)
    run(task, length, out, third, ["direct", "rag"], n=2)  # a new method adds its items only
    assert {r["method"] for r in third.records} == {"rag"}
    assert json.loads((out / "config.json").read_text())["methods"] == ["direct", "rag"]


def test_a_folder_of_another_configuration_is_refused(tmp_path: Path) -> None:
    task, length = make_tasks(tmp_path)["sniah"]
    out = tmp_path / "out"
    run(task, length, out, OnePolicy(True), ["direct"], n=1)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"seed": 7}))
    with pytest.raises(ConfigError, match="seed=7"):
        run(task, length, out, OnePolicy(True), ["direct"], n=1)


def test_a_failing_item_is_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    task, length = make_tasks(tmp_path)["sniah"]
    calls = {"n": 0}

    def flaky(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ModelAPIError("upstream exploded", status=500, model="test:function")
        return "nothing"

    model = FunctionModel(flaky)
    config = BenchConfig(
        task="sniah",
        methods=[parse_method("direct")],
        lengths=[length],
        n=2,
        seed=0,
        out=tmp_path / "out",
        model="m",
        sub_model="m",
        concurrency=1,
    )
    setup = MethodSetup(model=model, sub_model=model, sandbox="local")
    records = asyncio.run(BenchRunner(task, config, setup).arun())
    failed = [r for r in records if r["error"]]
    assert len(failed) == 1 and "upstream exploded" in failed[0]["error"]
    assert failed[0]["score"] == 0.0
    assert len(records) == 2


def test_an_authentication_error_stops_the_benchmark(tmp_path: Path) -> None:
    task, length = make_tasks(tmp_path)["sniah"]

    def unauthorised(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        raise ModelAPIError("bad key", status=401, model="test:function")

    model = FunctionModel(unauthorised)
    config = BenchConfig(
        task="sniah",
        methods=[parse_method("direct")],
        lengths=[length],
        n=3,
        seed=0,
        out=tmp_path / "out",
        model="m",
        sub_model="m",
        concurrency=1,
    )
    setup = MethodSetup(model=model, sub_model=model, sandbox="local")
    with pytest.raises(ModelAPIError, match="bad key"):
        asyncio.run(BenchRunner(task, config, setup).arun())
    assert load_results(tmp_path / "out") == []
