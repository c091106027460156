"""OOLONG-Pairs (Recursive Language Models, arXiv 2512.24601, Appendix D.1): 20 questions
asking for every pair of users meeting a condition over the gold labels of an OOLONG
``trec_coarse`` window.

The wording and machine-readable conditions ship in ``data/oolong_pairs_tasks.json``:

- ``both_any``: both users have an instance labelled with one of ``labels``; with ``all_of``,
  every instance of that label of both users is strictly before / after a date;
- ``asym``: one user meets every count rule of ``one`` and the other every rule of ``other``
  (``{"min": k}`` at least k instances of the label, ``{"eq": k}`` exactly k).

The gold is the sorted list of ``[lower id, higher id]`` pairs; the score is
:func:`rlmx.bench.scoring.pair_f1`. The paper uses 32K-token windows; any length works.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from itertools import combinations
from typing import Any

from rlmx.bench.base import BenchItem
from rlmx.bench.oolong import OolongRow, TrecWindows, render_window
from rlmx.bench.scoring import pair_f1
from rlmx.bench.trec import OOLONG_LABELS
from rlmx.exceptions import ConfigError

__all__ = [
    "CountRule",
    "DateRule",
    "OolongPairsTask",
    "PairsTaskSpec",
    "gold_pairs",
    "load_pairs_tasks",
    "pairs_question",
    "parse_pairs_tasks",
]

_TASKS_FILE = "oolong_pairs_tasks.json"
_KINDS = ("both_any", "asym")


@dataclass(frozen=True, slots=True)
class CountRule:
    """A user has at least ``minimum`` or exactly ``exactly`` instances of ``label``."""

    label: str
    minimum: int | None = None
    exactly: int | None = None

    def holds(self, counts: Mapping[str, int]) -> bool:
        count = counts.get(self.label, 0)
        if self.exactly is not None:
            return count == self.exactly
        return self.minimum is not None and count >= self.minimum


@dataclass(frozen=True, slots=True)
class DateRule:
    """Every instance of ``label`` is strictly before ``before`` / strictly after ``after``."""

    label: str
    before: date | None = None
    after: date | None = None

    def holds(self, days: Sequence[date]) -> bool:
        if self.before is not None and any(day >= self.before for day in days):
            return False
        return self.after is None or all(day > self.after for day in days)


@dataclass(frozen=True, slots=True)
class PairsTaskSpec:
    """One of the 20 tasks: its id, condition wording and rules."""

    task_id: int
    kind: str
    condition: str
    any_labels: tuple[str, ...] = ()
    date_rule: DateRule | None = None
    one: tuple[CountRule, ...] = ()
    other: tuple[CountRule, ...] = ()


def _label(value: Any, task_id: object) -> str:
    if value not in OOLONG_LABELS:
        raise ConfigError(
            f"OOLONG-Pairs task {task_id}: unknown label {value!r}; use one of "
            f"{', '.join(OOLONG_LABELS)}."
        )
    return str(value)


def _count_rules(rules: Any, task_id: object) -> tuple[CountRule, ...]:
    if not isinstance(rules, dict) or not rules:
        raise ConfigError(f"OOLONG-Pairs task {task_id}: 'one'/'other' must map labels to rules.")
    parsed = []
    for label, rule in rules.items():
        if not isinstance(rule, dict) or len(rule) != 1 or not rule.keys() <= {"min", "eq"}:
            raise ConfigError(
                f"OOLONG-Pairs task {task_id}: rule {rule!r} for {label!r} must be "
                '{"min": k} or {"eq": k}.'
            )
        (operator, value), *_ = rule.items()
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"OOLONG-Pairs task {task_id}: count {value!r} must be an int >= 0.")
        parsed.append(
            CountRule(
                _label(label, task_id),
                minimum=value if operator == "min" else None,
                exactly=value if operator == "eq" else None,
            )
        )
    return tuple(parsed)


def _date_rule(rule: Any, task_id: object) -> DateRule | None:
    if rule is None:
        return None
    try:
        before = rule.get("before")
        after = rule.get("after")
        return DateRule(
            _label(rule["label"], task_id),
            before=date.fromisoformat(before) if before else None,
            after=date.fromisoformat(after) if after else None,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"OOLONG-Pairs task {task_id}: 'all_of' must be like "
            f'{{"label": ..., "after": "YYYY-MM-DD"}}, not {rule!r}.'
        ) from error


def _spec(raw: Any) -> PairsTaskSpec:
    task_id = raw.get("id") if isinstance(raw, dict) else raw
    if not isinstance(raw, dict) or not isinstance(task_id, int) or raw.get("kind") not in _KINDS:
        raise ConfigError(
            f"OOLONG-Pairs task {task_id!r} needs an integer 'id' and a 'kind' in {_KINDS}."
        )
    condition = raw.get("condition")
    if not isinstance(condition, str) or not condition:
        raise ConfigError(f"OOLONG-Pairs task {task_id} has no 'condition' text.")
    if raw["kind"] == "both_any":
        labels = raw.get("labels")
        if not isinstance(labels, list) or not labels:
            raise ConfigError(f"OOLONG-Pairs task {task_id}: 'labels' must be a non-empty list.")
        return PairsTaskSpec(
            task_id,
            "both_any",
            condition,
            any_labels=tuple(_label(label, task_id) for label in labels),
            date_rule=_date_rule(raw.get("all_of"), task_id),
        )
    return PairsTaskSpec(
        task_id,
        "asym",
        condition,
        one=_count_rules(raw.get("one"), task_id),
        other=_count_rules(raw.get("other"), task_id),
    )


def parse_pairs_tasks(document: Any) -> tuple[str, tuple[PairsTaskSpec, ...]]:
    """The question template and the task specs of an ``oolong_pairs_tasks.json`` document."""
    if not isinstance(document, dict):
        raise ConfigError("The OOLONG-Pairs task file must hold a JSON object.")
    template = document.get("question_template")
    if not isinstance(template, str) or "{condition}" not in template:
        raise ConfigError("The OOLONG-Pairs 'question_template' must contain '{condition}'.")
    tasks = document.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError("The OOLONG-Pairs task file must list its 'tasks'.")
    return template, tuple(_spec(task) for task in tasks)


@cache
def load_pairs_tasks() -> tuple[str, tuple[PairsTaskSpec, ...]]:
    """The packaged question template and the 20 task specs, in id order."""
    text = resources.files("rlmx.bench").joinpath("data", _TASKS_FILE).read_text("utf-8")
    return parse_pairs_tasks(json.loads(text))


def pairs_question(template: str, spec: PairsTaskSpec) -> str:
    """The question of one task: the template with its condition."""
    return template.replace("{condition}", spec.condition)


def gold_pairs(spec: PairsTaskSpec, rows: Sequence[OolongRow]) -> list[list[int]]:
    """Every pair of distinct users meeting ``spec`` over the rows' gold labels, each pair
    ``[lower, higher]``, sorted."""
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    days: dict[int, dict[str, list[date]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        counts[row.user][row.label] += 1
        days[row.user][row.label].append(row.day)
    users = sorted(counts)
    pairs: set[tuple[int, int]]
    if spec.kind == "both_any":
        rule = spec.date_rule
        qualifying = [
            user
            for user in users
            if any(counts[user][label] for label in spec.any_labels)
            and (rule is None or rule.holds(days[user][rule.label]))
        ]
        pairs = set(combinations(qualifying, 2))
    else:
        ones = [user for user in users if all(rule.holds(counts[user]) for rule in spec.one)]
        others = [user for user in users if all(rule.holds(counts[user]) for rule in spec.other)]
        pairs = {
            (min(first, second), max(first, second))
            for first in ones
            for second in others
            if first != second
        }
    return [list(pair) for pair in sorted(pairs)]


class OolongPairsTask(TrecWindows):
    """The ``oolong-pairs`` benchmark: item ``k`` of ``items(length, n, seed)`` is task
    ``k % 20 + 1`` over window ``k // 20`` (each window its own seeded draw of TREC rows).

    ``trec`` is the labelled question pool (default: :func:`rlmx.bench.trec.load_trec` on
    first use).
    """

    name = "oolong-pairs"

    def items(self, length: int, n: int, seed: int) -> list[BenchItem]:
        """``n`` questions, cycling through the 20 tasks with a new window every 20."""
        if n < 0:
            raise ConfigError(f"The number of items must be 0 or more, not {n}.")
        template, specs = load_pairs_tasks()
        items = []
        contexts: dict[int, str] = {}
        for position in range(n):
            index = position // len(specs)
            spec = specs[position % len(specs)]
            window = self.window(length, seed, index)
            if index not in contexts:
                contexts = {index: render_window(window)}
            gold = gold_pairs(spec, window.rows)
            items.append(
                BenchItem(
                    task=self.name,
                    item_id=f"oolong-pairs-L{length}-s{seed}-w{index}-t{spec.task_id}",
                    context=contexts[index],
                    question=pairs_question(template, spec),
                    gold=gold,
                    length=length,
                    meta={
                        "dataset": "trec_coarse",
                        "task_id": spec.task_id,
                        "kind": spec.kind,
                        "seed": seed,
                        "window": index,
                        "rows": len(window.rows),
                        "gold_pairs": len(gold),
                    },
                )
            )
        return items

    def score(self, item: BenchItem, answer: str) -> float:
        """F1 between the pairs in ``answer`` and the gold pairs."""
        gold: list[list[int]] = item.gold
        return pair_f1(answer, gold)
