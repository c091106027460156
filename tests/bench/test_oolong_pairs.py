"""Tests for rlmx.bench.oolong_pairs: the 20 pair tasks over OOLONG windows, their gold pairs
(checked against a brute force written here from the tasks' wording) and the F1 score.

Everything runs on the built-in made-up TREC sample; nothing reads the network or shared data.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from datetime import date, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from rlmx.bench.base import BenchItem, Task
from rlmx.bench.oolong import OolongRow
from rlmx.bench.oolong_pairs import (
    CountRule,
    DateRule,
    OolongPairsTask,
    PairsTaskSpec,
    gold_pairs,
    load_pairs_tasks,
    pairs_question,
    parse_pairs_tasks,
)
from rlmx.bench.scoring import pair_f1
from rlmx.bench.trec import COARSE_TO_LABEL, OOLONG_LABELS, TREC_PATH_ENV, builtin_trec
from rlmx.exceptions import ConfigError

ROW = re.compile(
    r"Date: (\w{3} \d{2}, \d{4}) \|\| User: (\d{5}) \|\| Instance: .+? \|\| Label: (.+)"
)

NUM, LOC, HUM, ENT, DESC, ABBR = (
    "numeric value",
    "location",
    "human being",
    "entity",
    "description and abstract concept",
    "abbreviation",
)


@pytest.fixture(scope="module")
def task() -> OolongPairsTask:
    return OolongPairsTask(builtin_trec())


@pytest.fixture(scope="module")
def items(task: OolongPairsTask) -> list[BenchItem]:
    return task.items(8192, 20, seed=0)


def user_rows(labelled: str) -> dict[int, list[tuple[date, str]]]:
    by_user: dict[int, list[tuple[date, str]]] = {}
    for line in labelled.splitlines():
        found = ROW.fullmatch(line)
        if found:
            day = datetime.strptime(found.group(1), "%b %d, %Y").date()
            by_user.setdefault(int(found.group(2)), []).append((day, found.group(3)))
    return by_user


Rows = list[tuple[date, str]]


def count(rows: Rows, label: str) -> int:
    return sum(1 for _, row_label in rows if row_label == label)


def has_any(rows: Rows, *labels: str) -> bool:
    return any(row_label in labels for _, row_label in rows)


def all_dated(rows: Rows, label: str, test: Callable[[date], bool]) -> bool:
    return all(test(day) for day, row_label in rows if row_label == label)


# The conditions of a few tasks, written from their wording (not from the JSON rules).
EACH_USER: dict[int, Callable[[Rows], bool]] = {
    1: lambda rows: has_any(rows, NUM, LOC),
    4: lambda rows: (
        has_any(rows, HUM, LOC) and all_dated(rows, HUM, lambda day: day > date(2023, 1, 6))
    ),
    5: lambda rows: (
        has_any(rows, ENT, NUM) and all_dated(rows, ENT, lambda day: day < date(2023, 3, 15))
    ),
}
ONE_AND_OTHER: dict[int, tuple[Callable[[Rows], bool], Callable[[Rows], bool]]] = {
    11: (lambda r: count(r, ENT) >= 1 and count(r, ABBR) >= 1, lambda r: count(r, ENT) == 1),
    14: (lambda r: count(r, HUM) >= 1 and count(r, NUM) >= 1, lambda r: count(r, LOC) == 2),
    19: (
        lambda r: count(r, LOC) >= 2 and count(r, ENT) >= 1,
        lambda r: count(r, DESC) == 1 and count(r, ABBR) == 1,
    ),
}


def brute_force(task_id: int, by_user: dict[int, Rows]) -> list[list[int]]:
    pairs = []
    for first, second in combinations(sorted(by_user), 2):
        a, b = by_user[first], by_user[second]
        if task_id in EACH_USER:
            ok = EACH_USER[task_id](a) and EACH_USER[task_id](b)
        else:
            one, other = ONE_AND_OTHER[task_id]
            ok = (one(a) and other(b)) or (one(b) and other(a))
        if ok:
            pairs.append([first, second])
    return pairs


def as_answer(pairs: list[list[int]]) -> str:
    return "\n".join(f"({first}, {second})" for first, second in pairs)


def test_all_twenty_tasks_produce_questions(items: list[BenchItem]) -> None:
    template, specs = load_pairs_tasks()
    assert [spec.task_id for spec in specs] == list(range(1, 21))
    assert [item.meta["task_id"] for item in items] == list(range(1, 21))
    for item, spec in zip(items, specs, strict=True):
        assert item.task == "oolong-pairs"
        assert item.item_id == f"oolong-pairs-L8192-s0-w0-t{spec.task_id}"
        assert item.question == template.replace("{condition}", spec.condition)
        assert item.question.startswith("In the above data, list all pairs of user IDs")
        assert spec.condition in item.question
        assert item.question.endswith("separated by newlines.")
        assert item.meta["kind"] == spec.kind
        assert "|| Label:" not in item.context
        assert item.gold == sorted(item.gold)
        assert all(first < second for first, second in item.gold)
        assert len({tuple(pair) for pair in item.gold}) == len(item.gold)
        assert item.meta["gold_pairs"] == len(item.gold)
        json.dumps(item.gold)
    assert all(item.context is items[0].context for item in items)
    assert sum(1 for item in items if item.gold) >= 15


@pytest.mark.parametrize(("length", "seed"), [(4096, 0), (8192, 1), (16384, 2)])
def test_gold_matches_a_brute_force(task: OolongPairsTask, length: int, seed: int) -> None:
    items = task.items(length, 20, seed=seed)
    by_user = user_rows(task.labelled_context(items[0]))
    checked = 0
    for item in items:
        task_id = item.meta["task_id"]
        if task_id in EACH_USER or task_id in ONE_AND_OTHER:
            assert item.gold == brute_force(task_id, by_user), task_id
            checked += 1
    assert checked == 6


def test_gold_scores_one_against_itself(task: OolongPairsTask, items: list[BenchItem]) -> None:
    for item in items:
        assert task.score(item, as_answer(item.gold)) == 1.0
        reversed_markdown = "\n".join(f"- **({b}, {a})**" for a, b in item.gold)
        assert task.score(item, reversed_markdown) == 1.0
    non_empty = next(item for item in items if len(item.gold) >= 2)
    assert task.score(non_empty, "") == 0.0
    half = as_answer(non_empty.gold[: len(non_empty.gold) // 2])
    assert 0.0 < task.score(non_empty, half) < 1.0


def test_items_cycle_through_the_tasks_with_a_new_window_every_twenty(
    task: OolongPairsTask,
) -> None:
    items = task.items(4096, 45, seed=7)
    assert [item.meta["window"] for item in items] == [0] * 20 + [1] * 20 + [2] * 5
    assert items[20].item_id == "oolong-pairs-L4096-s7-w1-t1"
    assert items[44].item_id == "oolong-pairs-L4096-s7-w2-t5"
    assert items[0].context != items[20].context != items[40].context
    assert task.items(4096, 0, seed=7) == []
    with pytest.raises(ConfigError, match="0 or more"):
        task.items(4096, -2, seed=7)


def test_items_are_byte_identical_for_a_seed(task: OolongPairsTask) -> None:
    def as_json(items: list[BenchItem]) -> str:
        return json.dumps([dataclasses.asdict(item) for item in items], sort_keys=True)

    first = as_json(OolongPairsTask(builtin_trec()).items(4096, 20, seed=3))
    assert as_json(OolongPairsTask(builtin_trec()).items(4096, 20, seed=3)) == first
    assert as_json(OolongPairsTask(builtin_trec()).items(4096, 20, seed=4)) != first


def test_the_task_follows_the_protocol(task: OolongPairsTask) -> None:
    assert isinstance(task, Task)
    assert task.name == "oolong-pairs"


def test_the_window_cache_stays_small(task: OolongPairsTask) -> None:
    first = task.window(2048, 5, 0)
    for index in range(1, 6):
        task.window(2048, 5, index)
    assert len(task._windows) <= 4
    assert task.window(2048, 5, 0).rows == first.rows


def test_trec_data_is_loaded_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coarse = {label: prefix for prefix, label in COARSE_TO_LABEL.items()}
    lines = "".join(f"{coarse[q.label]}:other {q.text}\n" for q in builtin_trec())
    (tmp_path / "train_5500.label").write_text(lines)
    monkeypatch.setenv(TREC_PATH_ENV, str(tmp_path))
    lazy = OolongPairsTask()
    assert lazy.items(2048, 1, seed=0)[0].meta["task_id"] == 1
    assert lazy.trec == builtin_trec()


# --- rules and the task file ------------------------------------------------------------


def row(day: date, user: int, label: str) -> OolongRow:
    return OolongRow(day, user, "Question ?", label)


def test_rules() -> None:
    assert CountRule(ENT, minimum=2).holds({ENT: 2})
    assert not CountRule(ENT, minimum=2).holds({ENT: 1})
    assert CountRule(ENT, exactly=0).holds({})
    assert not CountRule(ENT, exactly=1).holds({ENT: 2})
    assert not CountRule(ENT).holds({ENT: 5})
    after = DateRule(HUM, after=date(2023, 1, 6))
    assert after.holds([date(2023, 1, 7)])
    assert not after.holds([date(2023, 1, 6)])
    assert after.holds([])
    before = DateRule(HUM, before=date(2023, 3, 15))
    assert before.holds([date(2023, 3, 14)])
    assert not before.holds([date(2023, 3, 14), date(2023, 3, 15)])


def test_gold_pairs_on_hand_made_rows() -> None:
    _, specs = load_pairs_tasks()
    by_id = {spec.task_id: spec for spec in specs}
    day = date(2024, 1, 1)
    rows = [
        row(day, 10, HUM),
        row(date(2022, 5, 1), 20, HUM),  # human being before Jan 6, 2023: fails task 4
        row(day, 30, LOC),
        row(day, 40, ABBR),
    ]
    assert gold_pairs(by_id[4], rows) == [[10, 30]]
    assert gold_pairs(by_id[1], rows) == []
    rows_11 = [row(day, 50, ENT), row(day, 50, ABBR), row(day, 60, ENT), row(day, 70, ENT)]
    # 50 qualifies as "one" and as "other"; 60 and 70 only as "other"
    assert gold_pairs(by_id[11], rows_11) == [[50, 60], [50, 70]]


def test_pairs_question_fills_the_condition() -> None:
    template, specs = load_pairs_tasks()
    assert pairs_question(template, specs[0]).count(specs[0].condition) == 1
    assert "{condition}" not in pairs_question(template, specs[0])


def document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "question_template": "List pairs {condition}.",
        "tasks": [{"id": 1, "kind": "both_any", "labels": [ENT], "condition": "c"}],
    }
    base.update(changes)
    return base


def task_document(**fields: Any) -> dict[str, Any]:
    raw = {"id": 1, "kind": "asym", "condition": "c", "one": {ENT: {"min": 1}}}
    raw["other"] = {ABBR: {"eq": 1}}
    raw.update(fields)
    return document(tasks=[raw])


def test_parse_pairs_tasks_reads_both_kinds() -> None:
    template, specs = parse_pairs_tasks(document())
    assert template == "List pairs {condition}."
    assert specs == (PairsTaskSpec(1, "both_any", "c", any_labels=(ENT,)),)
    _, (asym,) = parse_pairs_tasks(task_document())
    assert asym.one == (CountRule(ENT, minimum=1),)
    assert asym.other == (CountRule(ABBR, exactly=1),)
    dated = document(
        tasks=[
            {
                "id": 2,
                "kind": "both_any",
                "labels": [ENT],
                "all_of": {"label": ENT, "before": "2023-03-15"},
                "condition": "c",
            }
        ]
    )
    assert parse_pairs_tasks(dated)[1][0].date_rule == DateRule(ENT, before=date(2023, 3, 15))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "JSON object"),
        (document(question_template="no placeholder"), "must contain"),
        (document(tasks=[]), "list its 'tasks'"),
        (document(tasks=["x"]), "integer 'id'"),
        (document(tasks=[{"id": 1, "kind": "other", "condition": "c"}]), "integer 'id'"),
        (document(tasks=[{"id": 1, "kind": "both_any", "condition": ""}]), "no 'condition'"),
        (document(tasks=[{"id": 1, "kind": "both_any", "condition": "c"}]), "non-empty list"),
        (
            document(
                tasks=[{"id": 1, "kind": "both_any", "labels": ["vegetable"], "condition": "c"}]
            ),
            "unknown label 'vegetable'",
        ),
        (
            document(
                tasks=[
                    {
                        "id": 1,
                        "kind": "both_any",
                        "labels": [ENT],
                        "all_of": {"label": ENT, "after": "soon"},
                        "condition": "c",
                    }
                ]
            ),
            "'all_of' must be like",
        ),
        (task_document(one={}), "must map labels"),
        (task_document(one={ENT: {"max": 1}}), 'must be {"min": k}'),
        (task_document(one={ENT: {"min": -1}}), "must be an int >= 0"),
    ],
)
def test_parse_pairs_tasks_rejects_malformed_files(bad: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_pairs_tasks(bad)


def test_the_packaged_file_uses_known_labels_only() -> None:
    _, specs = load_pairs_tasks()
    for spec in specs:
        labels = {*spec.any_labels, *(rule.label for rule in (*spec.one, *spec.other))}
        assert labels <= set(OOLONG_LABELS)
        assert (spec.kind == "both_any") == bool(spec.any_labels)
    assert sum(1 for spec in specs if spec.date_rule is not None) == 5
    assert pair_f1("", []) == 1.0
