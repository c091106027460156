"""Tasks by name, with the command line's options: official files route to their loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlmx.bench.base import Task
from rlmx.bench.codeqa import CodeQATask
from rlmx.bench.oolong import OolongTask
from rlmx.bench.oolong_official import OolongOfficialTask
from rlmx.bench.oolong_pairs import OolongPairsTask
from rlmx.bench.sniah import SniahTask
from rlmx.bench.tasks import TASKS, get_task
from rlmx.exceptions import ConfigError
from tests.bench.test_oolong_official import record, write_jsonl

TREC = "DESC:manner How did serfdom develop in and then leave Russia ?\n" * 3


def test_every_task_by_name(tmp_path: Path) -> None:
    (tmp_path / "train_5500.label").write_text(TREC)
    built = {name: get_task(name, data=tmp_path if "oolong" in name else None) for name in TASKS}
    assert isinstance(built["sniah"], SniahTask)
    assert isinstance(built["oolong"], OolongTask)
    assert isinstance(built["oolong-pairs"], OolongPairsTask)
    assert isinstance(built["codeqa"], CodeQATask)
    assert all(isinstance(task, Task) for task in built.values())
    assert [task.name for task in built.values()] == ["sniah", "oolong", "oolong-pairs", "codeqa"]


def test_official_oolong_files_go_to_their_loader(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "oolong-synth.jsonl", [record(1), record(2)])
    task = get_task("oolong", data=data)
    assert isinstance(task, OolongOfficialTask)
    items = task.items(1024, 2, seed=0)
    assert [item.item_id for item in items] == ["oolong-official-1", "oolong-official-2"]
    assert task.score(items[0], "Label: entity") == 1.0


def test_ruler_files_are_selected_by_length_bucket(tmp_path: Path) -> None:
    rows = [
        {"index": i, "input": f"text {i}\nWhat is the number?", "outputs": [str(i)], "length": n}
        for i, n in enumerate([3900, 4000, 7950, 2000])
    ]
    path = tmp_path / "niah.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = get_task("sniah", data=path)
    assert [item.length for item in task.items(4096, 2, seed=0)] == [3900, 4000]
    assert [item.length for item in task.items(8192, 1, seed=0)] == [7950]
    with pytest.raises(ConfigError, match="fewer than the 3 asked for; pass --n 2"):
        task.items(4096, 3, seed=0)
    assert task.score(task.items(8192, 1, seed=0)[0], "it is 2") == 1.0
    with pytest.raises(ConfigError, match=r"no sniah items of length 65536.*\[2000, 3900"):
        task.items(65536, 1, seed=0)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nope", {}, "Unknown benchmark task 'nope'"),
        ("oolong", {"variant": "single_1"}, "--variant does not apply to the oolong task"),
        ("oolong-pairs", {"source": "x"}, "--source does not apply"),
        ("codeqa", {"data": "x"}, "--data does not apply to the codeqa task"),
        ("codeqa", {"haystack_dir": "x"}, "--haystack does not apply"),
    ],
)
def test_options_that_do_not_apply_are_refused(
    name: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        get_task(name, **options)  # type: ignore[arg-type]
