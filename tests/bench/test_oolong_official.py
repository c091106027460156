"""Tests for rlmx.bench.oolong_official: reading OOLONG-synth records from JSON, JSON Lines and
Parquet exports, filtering them, converting the official gold strings, and scoring.

Every file is a tiny one written by the test, in the dataset's schema; nothing reads the network.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from rlmx.bench.base import BenchItem, Task
from rlmx.bench.oolong import OolongTask
from rlmx.bench.oolong_official import (
    REQUIRED_FIELDS,
    OolongOfficialTask,
    is_official_data,
    load_oolong_official,
    official_gold,
    official_kind,
    score_official,
)
from rlmx.exceptions import ConfigError

_WINDOW = (
    "The following lines contain 3 general-knowledge questions, one per line.\n"
    "Date: Jun 16, 2024 || User: 44106 || Instance: Who killed Gandhi ?\n"
)


def record(
    record_id: int,
    *,
    answer: Any = "['entity']",
    answer_type: str = "ANSWER_TYPE.LABEL",
    context_len: int = 1024,
    dataset: str = "trec_coarse",
    window: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One record with the columns of the published oolongbench/oolong-synth dataset."""
    row: dict[str, Any] = {
        "id": record_id,
        "context_len": context_len,
        "dataset": dataset,
        "context_window_id": window,
        "num_labels": 6,
        "context_window_text": f"{_WINDOW}(window {window})",
        "context_window_text_with_labels": f"{_WINDOW} || Label: human being",
        "question": f"Question {record_id}? Give your final answer in the form 'Label: answer'.",
        "answer": answer,
        "task_group": "counting",
        "task": "TASK_TYPE.MOST_FREQ",
        "answer_type": answer_type,
        "input_subset": "False",
    }
    row.update(extra)
    return row


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


MIXED = [
    record(10_200_001, context_len=1024, window=1),
    record(9_200_001, context_len=1024, dataset="spam", answer="['spam']"),
    record(
        10_200_002, context_len=1024, window=1, answer="[12]", answer_type="ANSWER_TYPE.NUMERIC"
    ),
    record(11_200_001, context_len=2048, window=2),
]


# --- reading and filtering -------------------------------------------------------------------


def test_jsonl_records_become_items_in_file_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "oolong.jsonl", MIXED)
    items = load_oolong_official(path, context_len=1024)
    assert [item.item_id for item in items] == [
        "oolong-official-10200001",
        "oolong-official-10200002",
    ]
    first, second = items
    assert first.task == "oolong"
    assert first.length == 1024
    assert first.context == MIXED[0]["context_window_text"]
    assert first.question == MIXED[0]["question"]
    assert first.gold == "entity"
    assert second.gold == "12"
    assert first.meta["kind"] == "label" and second.meta["kind"] == "number"
    assert first.meta["answer_type"] == "ANSWER_TYPE.LABEL"
    assert first.meta["answer_raw"] == "['entity']"
    assert first.meta["record_id"] == 10_200_001
    assert first.meta["dataset"] == "trec_coarse"
    assert first.meta["task_group"] == first.meta["family"] == "counting"
    assert first.meta["task"] == first.meta["question_type"] == "TASK_TYPE.MOST_FREQ"
    assert first.meta["context_window_id"] == 1
    # the labelled rendering is never carried into an item
    assert all("Label: human being" not in json.dumps(item.meta) for item in items)
    # questions over one window share one context string
    assert first.context is second.context


def test_filters(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "oolong.jsonl", MIXED)
    assert [item.length for item in load_oolong_official(path)] == [1024, 1024, 2048]
    assert [item.meta["dataset"] for item in load_oolong_official(path, dataset=None)] == [
        "trec_coarse",
        "spam",
        "trec_coarse",
        "trec_coarse",
    ]
    spam = load_oolong_official(path, dataset="spam", context_len=1024)
    assert [item.gold for item in spam] == ["spam"]
    assert [item.length for item in load_oolong_official(path, context_len=2048)] == [2048]


@pytest.mark.parametrize(
    "layout",
    ["array", "lines-in-json", "wrapped", "splits", "columns"],
)
def test_json_layouts(tmp_path: Path, layout: str) -> None:
    rows = MIXED[:3]
    path = tmp_path / "oolong.json"
    if layout == "array":
        text = json.dumps(rows)
    elif layout == "lines-in-json":  # what datasets' Dataset.to_json writes by default
        text = "\n".join(json.dumps(row) for row in rows)
    elif layout == "wrapped":
        text = json.dumps({"data": rows})
    elif layout == "splits":
        text = json.dumps({"validation": rows[:2], "test": rows[2:]})
    else:
        text = json.dumps({key: [row[key] for row in rows] for key in rows[0]})
    path.write_text(text, encoding="utf-8")
    items = load_oolong_official(path, dataset=None)
    assert [item.meta["record_id"] for item in items] == [row["id"] for row in rows]
    assert [item.gold for item in items] == ["entity", "spam", "12"]


def test_single_record_json_file(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(MIXED[0]), encoding="utf-8")
    assert [item.gold for item in load_oolong_official(path)] == ["entity"]


def test_folder_is_read_in_name_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [MIXED[2]])
    write_jsonl(tmp_path / "a.jsonl", [MIXED[0]])
    (tmp_path / "README.md").write_text("not data", encoding="utf-8")
    items = load_oolong_official(tmp_path)
    assert [item.meta["record_id"] for item in items] == [10_200_001, 10_200_002]


def test_answers_given_as_json_values(tmp_path: Path) -> None:
    rows = [
        record(1, answer=["location", "entity"]),
        record(2, answer=7, answer_type="ANSWER_TYPE.NUMERIC"),
        record(3, answer="human being"),
    ]
    path = write_jsonl(tmp_path / "values.jsonl", rows)
    assert [item.gold for item in load_oolong_official(path)] == ["location", "7", "human being"]


# --- errors ----------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_oolong_official(tmp_path / "absent.jsonl")


def test_folder_without_record_files(tmp_path: Path) -> None:
    (tmp_path / "train_5500.label").write_text("DESC:def What is a glacier ?\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no OOLONG-synth files"):
        load_oolong_official(tmp_path)


def test_file_of_other_records_names_the_expected_fields(tmp_path: Path) -> None:
    ruler = {"index": 0, "input": "haystack", "outputs": ["123"], "length": 8192}
    path = write_jsonl(tmp_path / "niah_single_1.jsonl", [ruler])
    with pytest.raises(ConfigError) as caught:
        load_oolong_official(path)
    message = str(caught.value)
    assert "niah_single_1.jsonl line 1 is not an OOLONG-synth record" in message
    assert "lacks id, context_len, dataset, context_window_text" in message
    for name in REQUIRED_FIELDS:
        assert name in message


def test_non_object_records(tmp_path: Path) -> None:
    path = tmp_path / "numbers.json"
    path.write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(ConfigError, match="record 0 is not a JSON object"):
        load_oolong_official(path)
    path.write_text('"text"', encoding="utf-8")
    with pytest.raises(ConfigError, match="holds a JSON str"):
        load_oolong_official(path)


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(MIXED[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("broken.jsonl line 2 is not valid JSON")):
        load_oolong_official(path)
    other = tmp_path / "broken.json"
    other.write_text("[{", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("broken.json is not valid JSON")):
        load_oolong_official(other)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no OOLONG-synth records"):
        load_oolong_official(path)


def test_no_match_lists_what_the_file_has(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "oolong.jsonl", MIXED)
    with pytest.raises(ConfigError) as caught:
        load_oolong_official(path, context_len=131072)
    message = str(caught.value)
    assert "no record with dataset 'trec_coarse' and context_len 131072" in message
    assert "spam at 1024 (1); trec_coarse at 1024 (2), 2048 (1)" in message
    with pytest.raises(ConfigError, match="no record with dataset 'agnews';"):
        load_oolong_official(path, dataset="agnews")


def test_bad_field_values(tmp_path: Path) -> None:
    cases = {
        "type": (record(1, answer_type="ANSWER_TYPE.COLOUR"), "Unknown OOLONG answer_type"),
        "number": (
            record(1, answer="['many']", answer_type="ANSWER_TYPE.NUMERIC"),
            "NUMERIC question is not an integer",
        ),
        "date": (record(1, answer="['soon']", answer_type="ANSWER_TYPE.DATE"), "not a date"),
        "month": (
            record(1, answer="['Smarch 2024']", answer_type="ANSWER_TYPE.MONTH_YEAR"),
            "not a month",
        ),
        "empty": (record(1, answer="[]"), "empty list"),
        "length": (record(1, context_len=-5), "context_len must be a positive token count"),
        "text": (record(1, question=None, context_window_text=3), "lacks question"),
    }
    for name, (row, pattern) in cases.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", [row])
        with pytest.raises(ConfigError, match=pattern):
            load_oolong_official(path, dataset=None)


def test_repeated_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "twice.jsonl", [MIXED[0], MIXED[0]])
    with pytest.raises(
        ConfigError, match=re.escape("line 2 repeats the id 10200001 of twice.jsonl line 1")
    ):
        load_oolong_official(path)


# --- gold answers and scoring ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind", "gold"),
    [
        ("['entity']", "label", "entity"),
        ("['description and abstract concept']", "label", "description and abstract concept"),
        ("['abbreviation', 'location']", "label", "abbreviation"),  # ties: the first one counts
        ("[12]", "number", "12"),
        ("[0]", "number", "0"),
        ("[44106]", "user", "44106"),
        ("['44106']", "user", "44106"),
        ("['more common than']", "comparison", "more common than"),
        ("['the same frequency']", "comparison", "the same frequency"),
        ("['June 2024']", "month_year", "June 2024"),
        ("[datetime.date(2024, 6, 16)]", "date", "06/16/2024"),
        ("[datetime.date(2023, 11, 2)]", "date", "11/02/2023"),
        ("['True']", "label", "True"),
        (["Sci/Tech"], "label", "Sci/Tech"),
        (3.0, "number", "3"),
        ("2024-06-16", "date", "06/16/2024"),
    ],
)
def test_official_gold(answer: object, kind: str, gold: str) -> None:
    assert official_gold(answer, kind) == gold


def test_official_kind() -> None:
    assert official_kind("ANSWER_TYPE.NUMERIC") == "number"
    assert official_kind("month_year") == "month_year"
    with pytest.raises(ConfigError, match=re.escape("ANSWER_TYPE.LABEL")):
        official_kind("ANSWER_TYPE.FREE_TEXT")


@pytest.mark.parametrize(
    ("answer", "answer_type", "output", "score"),
    [
        ("['entity']", "LABEL", "Label: entity", 1.0),
        ("['entity']", "LABEL", "**Label:** location", 0.0),
        ("['abbreviation', 'location']", "LABEL", "Label: location", 0.0),
        ("[12]", "NUMERIC", "Answer: 12", 1.0),
        ("[12]", "NUMERIC", "Answer: 10", 0.75**2),
        ("[12]", "NUMERIC", "Answer: about a dozen", 0.0),
        ("[44106]", "USER", "User: 44106", 1.0),
        ("[44106]", "USER", "User: [44107]", 0.0),
        ("['less common than']", "COMPARISON", "Answer: entity is less common than location", 1.0),
        ("['less common than']", "COMPARISON", "Answer: more common than", 0.0),
        ("['the same frequency']", "COMPARISON", "Answer: the same frequency", 1.0),
        ("['more common']", "COMPARISON", "Answer: entity is more common before 2023-05-01", 1.0),
        ("[datetime.date(2024, 6, 16)]", "DATE", "Date: 06/16/2024", 1.0),
        ("[datetime.date(2024, 6, 16)]", "DATE", "Date: June 16, 2024", 1.0),
        ("[datetime.date(2024, 6, 16)]", "DATE", "Date: 06/17/2024", 0.0),
        ("['June 2024']", "MONTH_YEAR", "Answer: June 2024", 1.0),
        ("['June 2024']", "MONTH_YEAR", "Answer: July 2024", 0.0),
    ],
)
def test_scores_of_official_golds(
    tmp_path: Path, answer: str, answer_type: str, output: str, score: float
) -> None:
    row = record(1, answer=answer, answer_type=f"ANSWER_TYPE.{answer_type}")
    (item,) = load_oolong_official(write_jsonl(tmp_path / "one.jsonl", [row]))
    assert score_official(item, output) == pytest.approx(score)
    assert OolongOfficialTask(tmp_path / "one.jsonl").score(item, output) == pytest.approx(score)
    # the generated task's scorer reads the same gold and kind
    assert OolongTask().score(item, output) == pytest.approx(score)


# --- the task --------------------------------------------------------------------------------


def test_task_returns_the_first_records_of_a_length(tmp_path: Path) -> None:
    rows = [record(100 + index, window=index // 3) for index in range(7)]
    rows.insert(2, record(999, context_len=2048))
    path = write_jsonl(tmp_path / "oolong.jsonl", rows)
    task = OolongOfficialTask(path)
    assert isinstance(task, Task)
    assert task.name == "oolong"
    items = task.items(1024, 5, seed=0)
    assert [item.meta["record_id"] for item in items] == [100, 101, 102, 103, 104]
    assert task.items(1024, 5, seed=7) == items  # the seed is unused
    assert task.items(1024, 0, seed=0) == []
    assert [item.meta["record_id"] for item in task.items(2048, 1, seed=0)] == [999]
    with pytest.raises(ConfigError, match="has 7 trec_coarse records of length 1024, fewer than"):
        task.items(1024, 8, seed=0)
    with pytest.raises(ConfigError, match="0 or more"):
        task.items(1024, -1, seed=0)
    with pytest.raises(ConfigError, match="it has: trec_coarse at 1024 \\(7\\), 2048 \\(1\\)"):
        task.items(4096, 1, seed=0)


def test_task_dataset_choice(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "oolong.jsonl", MIXED)
    items = OolongOfficialTask(path, dataset="spam").items(1024, 1, seed=0)
    assert [item.gold for item in items] == ["spam"]
    assert isinstance(items[0], BenchItem)


def test_is_official_data(tmp_path: Path) -> None:
    assert is_official_data(tmp_path / "oolong-synth.jsonl")
    assert is_official_data(tmp_path / "validation-00000-of-00001.PARQUET")
    assert not is_official_data(tmp_path / "train_5500.label")
    folder = tmp_path / "trec"
    folder.mkdir()
    (folder / "train_5500.label").write_text("", encoding="utf-8")
    assert not is_official_data(folder)
    (folder / "validation.parquet").write_bytes(b"")
    assert is_official_data(folder)


# --- Parquet ---------------------------------------------------------------------------------


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "validation.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match="needs pyarrow"):
        load_oolong_official(path)


def test_parquet_with_pyarrow(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    rows = [dict(row, answer=str(row["answer"])) for row in MIXED]
    path = tmp_path / "validation-00000-of-00001.parquet"
    parquet.write_table(pa.Table.from_pylist(rows), path)
    items = load_oolong_official(path, context_len=1024)
    assert [item.meta["record_id"] for item in items] == [10_200_001, 10_200_002]
    assert [item.gold for item in items] == ["entity", "12"]
    with pytest.raises(ConfigError, match="spam at 1024 \\(1\\); trec_coarse at 1024 \\(2\\)"):
        load_oolong_official(path, context_len=4096)
    bare = tmp_path / "bare.parquet"
    parquet.write_table(pa.Table.from_pylist([{"id": 1, "question": "?"}]), bare)
    with pytest.raises(ConfigError, match="has no column context_len, dataset"):
        load_oolong_official(bare)
