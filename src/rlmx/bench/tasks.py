"""The benchmark tasks by name, built from the command line's options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlmx.bench.base import BenchItem, Task
from rlmx.exceptions import ConfigError

__all__ = ["DEFAULT_LENGTHS", "TASKS", "get_task"]

TASKS = ("sniah", "oolong", "oolong-pairs", "codeqa")
DEFAULT_LENGTHS = {
    "sniah": [1 << 13],
    "oolong": [1 << 17],
    "oolong-pairs": [1 << 15],
    "codeqa": [1 << 17],
}
"""The paper's sizes: S-NIAH from 2^13, OOLONG at 131K tokens, OOLONG-Pairs at 32K."""


class _FileTask:
    """Items read from a user's official file (RULER jsonl); scored by the task's scorer.

    A file's items carry their measured length, a little under the size they were built
    for, so a requested length ``L`` selects the items whose length is in ``(L/2, L]``."""

    def __init__(self, task: Task, items: list[BenchItem]) -> None:
        self.name = task.name
        self._task = task
        self._items = items

    def items(self, length: int, n: int, seed: int) -> list[BenchItem]:
        matching = [item for item in self._items if length // 2 < item.length <= length]
        if not matching:
            have = sorted({item.length for item in self._items})
            raise ConfigError(
                f"The data file has no {self.name} items of length {length}; it has "
                f"lengths {have}. Pass --lengths with one of them."
            )
        if len(matching) < n:
            raise ConfigError(
                f"The data file has {len(matching)} {self.name} items of length {length}, "
                f"fewer than the {n} asked for; pass --n {len(matching)}."
            )
        return matching[:n]

    def score(self, item: BenchItem, answer: str) -> float:
        return self._task.score(item, answer)


def get_task(
    name: str,
    *,
    data: str | Path | None = None,
    variant: str | None = None,
    source: str | Path | None = None,
    haystack_dir: str | Path | None = None,
) -> Task:
    """The task called ``name``. ``data``: a RULER jsonl file (sniah), OOLONG's official
    files or TREC data (oolong), TREC data (oolong-pairs)."""
    if name == "sniah":
        from rlmx.bench.sniah import SniahTask, load_ruler_jsonl

        task = SniahTask(variant or "single_1", haystack_dir=haystack_dir)
        if data is not None:
            return _FileTask(task, load_ruler_jsonl(data))
        return task
    if name in ("oolong", "oolong-pairs"):
        from rlmx.bench.trec import load_trec

        _no_option(name, variant=variant, source=source, haystack_dir=haystack_dir)
        if name == "oolong":
            from rlmx.bench.oolong import OolongTask
            from rlmx.bench.oolong_official import OolongOfficialTask, is_official_data

            if data is not None and is_official_data(data):
                return OolongOfficialTask(data)
            return OolongTask(load_trec(data))
        from rlmx.bench.oolong_pairs import OolongPairsTask

        return OolongPairsTask(load_trec(data))
    if name == "codeqa":
        from rlmx.bench.codeqa import CodeQATask

        _no_option(name, variant=variant, data=data, haystack_dir=haystack_dir)
        return CodeQATask(source)
    raise ConfigError(f"Unknown benchmark task {name!r}: choose from {', '.join(TASKS)}.")


def _no_option(task: str, **given: Any) -> None:
    flags = {"variant": "--variant", "source": "--source", "data": "--data"}
    flags["haystack_dir"] = "--haystack"
    for key, value in given.items():
        if value is not None:
            raise ConfigError(f"{flags[key]} does not apply to the {task} task.")
