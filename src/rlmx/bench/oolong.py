"""OOLONG-synth, ``trec_coarse`` split (Bertsch et al., arXiv 2511.02817), rebuilt offline.

A window of nominal length ``L`` tokens lists ``floor((0.95*L - 168 - 250) / 39)`` TREC
questions, one per line with a date and a user id; the model never sees their labels. Over each
window 25 questions are asked, from three families, with gold answers computed from the labels:

- counting: most / least common label, label X vs label Y, how many of label X;
- user: most / second most frequent user, the same questions over a listed subset of users,
  which user has the most of label X, user A vs user B on label X;
- timeline: most frequent date, how many dates appear exactly k times, label X before vs after a
  date, label X in one month or date range, months in which label X beats label Y.

:class:`OolongTask` is the ``oolong`` benchmark (score: :func:`rlmx.bench.scoring.oolong_score`).
:func:`build_window` and :func:`render_window` are shared with OOLONG-Pairs; the labelled
rendering (``render_window(window, with_labels=True)``) is for checking gold answers only.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TypeVar

from rlmx.bench.base import BenchItem
from rlmx.bench.scoring import COMPARISON_PHRASES, oolong_score
from rlmx.bench.trec import OOLONG_LABELS, TrecQuestion, load_trec
from rlmx.exceptions import ConfigError

__all__ = [
    "ANSWER_RESERVE_TOKENS",
    "FIRST_DATE",
    "HEADER_TOKENS",
    "LAST_DATE",
    "MIN_ROWS",
    "QUESTIONS_PER_WINDOW",
    "ROW_TOKENS",
    "OolongQuestion",
    "OolongRow",
    "OolongTask",
    "OolongWindow",
    "TrecWindows",
    "build_window",
    "format_row_date",
    "min_length",
    "render_window",
    "rows_for_length",
    "window_questions",
    "window_rng",
]

ROW_TOKENS = 39
"""OOLONG's per-row token estimate for TREC."""
HEADER_TOKENS = 168
"""OOLONG's estimate for the header and footer."""
ANSWER_RESERVE_TOKENS = 250
"""Room left for the question and answer."""
QUESTIONS_PER_WINDOW = 25
"""Questions asked over each window, as in the published split."""
FIRST_DATE = date(2022, 2, 16)
LAST_DATE = date(2025, 6, 21)
"""Rows are dated uniformly between these two days, both included."""
MIN_ROWS = 10
"""Fewer rows than this make a window too small to ask the question families over."""

_USER_POOL_SHARE = 0.1  # the frequent users are 10% of the rows' count...
_POOLED_ROW_SHARE = 0.8  # ...and write 80% of the rows
_MAJORITY_MARGIN = 2  # "most common" is asked only when it leads the next label by more
_VARIANTS_PER_TYPE = 3  # parameterised question types are drawn this many times
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_ABBREVIATIONS = tuple(name[:3] for name in _MONTH_NAMES)
_RELATION_FORMAT = "', '".join(COMPARISON_PHRASES[:2]) + f"', or '{COMPARISON_PHRASES[2]}"
_LABEL_FORMAT = (
    "Give your final answer in the form 'Label: answer' where answer is one of the labels: "
    + ", ".join(OOLONG_LABELS)
    + "."
)
_NUMBER_FORMAT = "Give your final answer in the form 'Answer: number'."
_USER_FORMAT = "Give your final answer in the form 'User: [X]', where [X] is the user ID."
_DATE_FORMAT = "Give your final answer in the form 'Date: MM/DD/YYYY'."
_MONTH_FORMAT = "Give your final answer in the form 'Answer: [month] [year]'."


_Key = TypeVar("_Key")


def _comparison_format(left: str, right: str) -> str:
    return (
        f"Give your final answer in the form 'Answer: {left} is [X] {right}', "
        f"where [X] is '{_RELATION_FORMAT}'."
    )


def rows_for_length(length: int) -> int:
    """How many rows a window of nominal ``length`` tokens holds (OOLONG's formula)."""
    # 0.95 * length is inexact in binary; the epsilon keeps an exact quotient from flooring down.
    return math.floor((0.95 * length - HEADER_TOKENS - ANSWER_RESERVE_TOKENS) / ROW_TOKENS + 1e-9)


def min_length() -> int:
    """The smallest nominal length whose window holds :data:`MIN_ROWS` rows."""
    length = math.ceil((MIN_ROWS * ROW_TOKENS + HEADER_TOKENS + ANSWER_RESERVE_TOKENS) / 0.95)
    while rows_for_length(length) < MIN_ROWS:  # pragma: no cover - guards float rounding
        length += 1
    return length


def format_row_date(day: date) -> str:
    """``Jun 16, 2024``: the rows' date format (``%b %d, %Y`` in English, whatever the locale)."""
    return f"{_MONTH_ABBREVIATIONS[day.month - 1]} {day.day:02d}, {day.year}"


def _month_name(year: int, month: int) -> str:
    return f"{_MONTH_NAMES[month - 1]} {year}"


@dataclass(frozen=True, slots=True)
class OolongRow:
    """One line of a window: a dated question by a user, with its gold label."""

    day: date
    user: int
    text: str
    label: str


@dataclass(frozen=True, slots=True)
class OolongWindow:
    """The rows of one context window, and how its label mix was drawn."""

    length: int
    rows: tuple[OolongRow, ...]
    temperature: float
    label_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OolongQuestion:
    """A question over a window with its gold answer and the answer kind it is scored as."""

    family: str
    question_type: str
    kind: str
    question: str
    gold: str


def window_rng(task: str, length: int, seed: int, window: int) -> random.Random:
    """The random stream of one window of one task (string seeds hash the same on every run)."""
    return random.Random(f"{task}|L{length}|s{seed}|w{window}")


def _label_mix(rows: int, rng: random.Random) -> tuple[dict[str, int], float]:
    """Rows per label: shuffled labels, softmax weights over ``randint(1, 30) ** (1/T)`` with
    the temperature ``T`` drawn uniformly from [2, 6]; the first label absorbs the rounding."""
    labels = list(OOLONG_LABELS)
    rng.shuffle(labels)
    temperature = rng.uniform(2.0, 6.0)
    scores = [rng.randint(1, 30) ** (1 / temperature) for _ in labels]
    exponentials = [math.exp(score) for score in scores]
    total = sum(exponentials)
    counts = [round(rows * value / total) for value in exponentials]
    counts[0] += rows - sum(counts)
    # In very small windows the first label can be asked to absorb more than it has.
    while counts[0] < 0:
        counts[0] += 1
        counts[counts.index(max(counts))] -= 1
    return dict(zip(labels, counts, strict=True)), temperature


def build_window(
    questions: Sequence[TrecQuestion], length: int, rng: random.Random
) -> OolongWindow:
    """A window of ``rows_for_length(length)`` rows drawn from ``questions`` with ``rng``.

    Each label gets its share of the rows (:func:`_label_mix`); its questions are sampled
    without replacement and reused once they run out. Rows are shuffled, dated uniformly in
    :data:`FIRST_DATE`..:data:`LAST_DATE`, and 80% of them get a user from a pool of
    ``round(0.1 * rows)`` five-digit ids; the others a uniformly drawn five-digit id.
    """
    rows = rows_for_length(length)
    if rows < MIN_ROWS:
        raise ConfigError(
            f"A {length}-token OOLONG window holds only {max(rows, 0)} rows; "
            f"use a length of at least {min_length()} tokens."
        )
    by_label: dict[str, list[TrecQuestion]] = {label: [] for label in OOLONG_LABELS}
    for question in questions:
        if question.label not in by_label:
            raise ConfigError(
                f"TREC question {question.text!r} has label {question.label!r}, not one of "
                f"{', '.join(OOLONG_LABELS)}; load the data with rlmx.bench.trec.load_trec."
            )
        by_label[question.label].append(question)
    missing = [label for label, pool in by_label.items() if not pool]
    if missing:
        raise ConfigError(
            f"The TREC data has no question labelled {', '.join(missing)}; pass the full "
            "train_5500.label set (or rlmx.bench.trec.builtin_trec() for tests)."
        )
    counts, temperature = _label_mix(rows, rng)
    drawn: list[TrecQuestion] = []
    for label, count in counts.items():
        pool = by_label[label]
        picked: list[TrecQuestion] = []
        while len(picked) < count:
            picked.extend(rng.sample(pool, min(len(pool), count - len(picked))))
        drawn.extend(picked)
    rng.shuffle(drawn)
    span = (LAST_DATE - FIRST_DATE).days
    days = [FIRST_DATE + timedelta(days=rng.randint(0, span)) for _ in drawn]
    user_pool = rng.sample(range(10_000, 100_000), max(1, round(_USER_POOL_SHARE * rows)))
    pooled = set(rng.sample(range(rows), round(_POOLED_ROW_SHARE * rows)))
    users = [
        rng.choice(user_pool) if index in pooled else rng.randint(10_000, 99_999)
        for index in range(rows)
    ]
    return OolongWindow(
        length=length,
        rows=tuple(
            OolongRow(day, user, question.text, question.label)
            for day, user, question in zip(days, users, drawn, strict=True)
        ),
        temperature=temperature,
        label_counts=counts,
    )


def render_window(window: OolongWindow, *, with_labels: bool = False) -> str:
    """The window as the model sees it: header, one row per line, footer.

    ``with_labels=True`` appends `` || Label: ...`` to each row (gold; never show it to a
    method).
    """
    count = len(window.rows)
    labels = ", ".join(OOLONG_LABELS)
    header = (
        f"The following lines contain {count} general-knowledge questions, one per line. Each "
        "line has a date, a user id and a question; each question's answer falls in one of "
        f"{len(OOLONG_LABELS)} categories: {labels}."
    )
    footer = (
        f"Recall: the preceding lines contain {count} general-knowledge questions, one per "
        "line, each with a date and a user id. Each question can be labelled with the category "
        f"of its answer, one of: {labels}. The labels are not given; infer each from the "
        "question's meaning.\n\n"
        f"You will be asked about the aggregate label statistics across all {count} questions. "
        "Do not guess, estimate or approximate: compute the exact answer from the lines above."
    )
    lines = [header]
    for row in window.rows:
        line = f"Date: {format_row_date(row.day)} || User: {row.user} || Instance: {row.text}"
        lines.append(f"{line} || Label: {row.label}" if with_labels else line)
    lines.append(footer)
    return "\n".join(lines) + "\n"


def _relation(first: int, second: int) -> str:
    if first > second:
        return COMPARISON_PHRASES[0]
    if first < second:
        return COMPARISON_PHRASES[1]
    return COMPARISON_PHRASES[2]


def _unique_leader(counts: Iterable[tuple[_Key, int]], margin: int = 0) -> _Key | None:
    """The key with the largest count when it beats every other by more than ``margin``."""
    ranked = sorted(counts, key=lambda entry: -entry[1])
    if not ranked:
        return None
    if len(ranked) > 1 and ranked[0][1] - ranked[1][1] <= margin:
        return None
    return ranked[0][0]


def _user_list(users: Sequence[int]) -> str:
    return ", ".join(str(user) for user in users)


class _WindowFacts:
    """Counts over one window's gold labels, and the question generators built on them."""

    def __init__(self, window: OolongWindow, rng: random.Random) -> None:
        self.rows = window.rows
        self.rng = rng
        self.label_counts = Counter(dict.fromkeys(OOLONG_LABELS, 0))
        self.label_counts.update(row.label for row in self.rows)
        self.user_counts = Counter(row.user for row in self.rows)
        self.users = sorted(self.user_counts)
        self.frequent_users = [user for user in self.users if self.user_counts[user] >= 2]
        self.date_counts = Counter(row.day for row in self.rows)
        self.months = self._months()

    @staticmethod
    def _months() -> list[tuple[int, int]]:
        months = []
        year, month = FIRST_DATE.year, FIRST_DATE.month
        while (year, month) <= (LAST_DATE.year, LAST_DATE.month):
            months.append((year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return months

    def _random_day(self) -> date:
        return FIRST_DATE + timedelta(days=self.rng.randint(0, (LAST_DATE - FIRST_DATE).days))

    def _subset(self, smallest: int) -> list[int]:
        choices = self.frequent_users if len(self.frequent_users) >= smallest else self.users
        if len(choices) < smallest:
            return []
        return sorted(self.rng.sample(choices, self.rng.randint(smallest, min(4, len(choices)))))

    @staticmethod
    def _labels_of(rows: Iterable[OolongRow]) -> Counter[str]:
        counts = Counter(dict.fromkeys(OOLONG_LABELS, 0))
        counts.update(row.label for row in rows)
        return counts

    # --- counting -------------------------------------------------------------------------
    def most_common_label(self) -> list[OolongQuestion]:
        leader = _unique_leader(self.label_counts.items(), _MAJORITY_MARGIN)
        if leader is None:
            return []
        question = "In the above data, which of the labels is the most common? " + _LABEL_FORMAT
        return [OolongQuestion("counting", "most_common_label", "label", question, leader)]

    def least_common_label(self) -> list[OolongQuestion]:
        trailer = _unique_leader((label, -count) for label, count in self.label_counts.items())
        if trailer is None:
            return []
        question = "In the above data, which of the labels is the least common? " + _LABEL_FORMAT
        return [OolongQuestion("counting", "least_common_label", "label", question, trailer)]

    def label_comparison(self) -> list[OolongQuestion]:
        first, second = self.rng.sample(OOLONG_LABELS, 2)
        question = (
            f"In the above data, is label '{first}' more common, less common, or the same "
            f"frequency as label '{second}'? " + _comparison_format(first, second)
        )
        gold = _relation(self.label_counts[first], self.label_counts[second])
        return [OolongQuestion("counting", "label_comparison", "comparison", question, gold)]

    def label_count(self) -> list[OolongQuestion]:
        label = self.rng.choice(OOLONG_LABELS)
        question = (
            f"In the above data, how many data points should be classified as label "
            f"'{label}'? " + _NUMBER_FORMAT
        )
        gold = str(self.label_counts[label])
        return [OolongQuestion("counting", "label_count", "number", question, gold)]

    # --- user -----------------------------------------------------------------------------
    def most_frequent_user(self) -> list[OolongQuestion]:
        leader = _unique_leader(self.user_counts.items())
        if leader is None:
            return []
        question = "In the above data, which user is represented most often? " + _USER_FORMAT
        return [OolongQuestion("user", "most_frequent_user", "user", question, str(leader))]

    def second_most_frequent_user(self) -> list[OolongQuestion]:
        ranked = [*sorted(self.user_counts.values(), reverse=True), 0, 0]
        if not ranked[0] > ranked[1] > ranked[2]:
            return []
        second = next(user for user in self.users if self.user_counts[user] == ranked[1])
        question = (
            "In the above data, which user is represented the second most often? " + _USER_FORMAT
        )
        return [OolongQuestion("user", "second_most_frequent_user", "user", question, str(second))]

    def _subset_prefix(self, users: Sequence[int]) -> str:
        return (
            "For the following question, only consider the subset of instances that are "
            f"associated with user IDs {_user_list(users)}. Among instances associated with "
            "these users, "
        )

    def subset_most_frequent_user(self) -> list[OolongQuestion]:
        users = self._subset(2)
        if not users:
            return []
        leader = _unique_leader((user, self.user_counts[user]) for user in users)
        if leader is None:
            return []
        question = (
            self._subset_prefix(users) + "which user is represented most often? " + _USER_FORMAT
        )
        return [OolongQuestion("user", "subset_most_frequent_user", "user", question, str(leader))]

    def _subset_label_counts(self, users: Sequence[int]) -> Counter[str]:
        chosen = set(users)
        return self._labels_of(row for row in self.rows if row.user in chosen)

    def subset_most_common_label(self) -> list[OolongQuestion]:
        users = self._subset(1)
        if not users:
            return []
        leader = _unique_leader(self._subset_label_counts(users).items(), _MAJORITY_MARGIN)
        if leader is None:
            return []
        question = (
            self._subset_prefix(users) + "which of the labels is the most common? " + _LABEL_FORMAT
        )
        return [OolongQuestion("user", "subset_most_common_label", "label", question, leader)]

    def subset_label_comparison(self) -> list[OolongQuestion]:
        users = self._subset(1)
        if not users:
            return []
        first, second = self.rng.sample(OOLONG_LABELS, 2)
        counts = self._subset_label_counts(users)
        question = (
            self._subset_prefix(users)
            + f"is label '{first}' more common, less common, or the same frequency as label "
            f"'{second}'? " + _comparison_format(first, second)
        )
        gold = _relation(counts[first], counts[second])
        return [OolongQuestion("user", "subset_label_comparison", "comparison", question, gold)]

    def subset_label_count(self) -> list[OolongQuestion]:
        users = self._subset(1)
        if not users:
            return []
        label = self.rng.choice(OOLONG_LABELS)
        question = (
            self._subset_prefix(users)
            + f"how many data points should be classified as label '{label}'? "
            + _NUMBER_FORMAT
        )
        gold = str(self._subset_label_counts(users)[label])
        return [OolongQuestion("user", "subset_label_count", "number", question, gold)]

    def user_most_label(self) -> list[OolongQuestion]:
        label = self.rng.choice(OOLONG_LABELS)
        per_user = Counter(row.user for row in self.rows if row.label == label)
        leader = _unique_leader(sorted(per_user.items()))
        if leader is None:
            return []
        question = (
            f"In the above data, which user has the most instances with label '{label}'? "
            + _USER_FORMAT
        )
        return [OolongQuestion("user", "user_most_label", "user", question, str(leader))]

    def user_vs_user_label(self) -> list[OolongQuestion]:
        choices = self.frequent_users if len(self.frequent_users) >= 2 else self.users
        if len(choices) < 2:
            return []
        first, second = self.rng.sample(choices, 2)
        label = self.rng.choice(OOLONG_LABELS)
        per_user = Counter(row.user for row in self.rows if row.label == label)
        question = (
            f"In the above data, considering only instances with label '{label}', is user "
            f"{first} more common, less common, or the same frequency as user {second}? "
            + _comparison_format(str(first), str(second))
        )
        gold = _relation(per_user[first], per_user[second])
        return [OolongQuestion("user", "user_vs_user_label", "comparison", question, gold)]

    # --- timeline -------------------------------------------------------------------------
    def most_frequent_date(self) -> list[OolongQuestion]:
        leader = _unique_leader(sorted(self.date_counts.items()))
        if leader is None or self.date_counts[leader] < 2:
            return []
        question = "In the above data, which date has the most instances? " + _DATE_FORMAT
        gold = f"{leader.month:02d}/{leader.day:02d}/{leader.year}"
        return [OolongQuestion("timeline", "most_frequent_date", "date", question, gold)]

    def dates_with_exact_count(self) -> list[OolongQuestion]:
        multiplicities = Counter(self.date_counts.values())
        if not multiplicities:
            return []
        times = self.rng.choice(sorted(multiplicities))
        plural = "instance" if times == 1 else "instances"
        question = (
            f"In the above data, how many distinct dates have exactly {times} {plural}? "
            + _NUMBER_FORMAT
        )
        gold = str(multiplicities[times])
        return [OolongQuestion("timeline", "dates_with_exact_count", "number", question, gold)]

    def label_before_after(self) -> list[OolongQuestion]:
        label = self.rng.choice(OOLONG_LABELS)
        pivot = self._random_day()
        days = [row.day for row in self.rows if row.label == label]
        before = sum(1 for day in days if day < pivot)
        after = sum(1 for day in days if day > pivot)
        shown = format_row_date(pivot)
        question = (
            f"In the above data, are instances with label '{label}' more common, less common, "
            f"or the same frequency before {shown} as after {shown}? Instances dated {shown} "
            "count for neither. " + _comparison_format(f"before {shown}", f"after {shown}")
        )
        gold = _relation(before, after)
        return [OolongQuestion("timeline", "label_before_after", "comparison", question, gold)]

    def month_label_count(self) -> list[OolongQuestion]:
        label = self.rng.choice(OOLONG_LABELS)
        year, month = self.rng.choice(self.months)
        count = sum(
            1
            for row in self.rows
            if row.label == label and (row.day.year, row.day.month) == (year, month)
        )
        question = (
            f"In the above data, how many instances with label '{label}' are dated in "
            f"{_month_name(year, month)}? " + _NUMBER_FORMAT
        )
        return [OolongQuestion("timeline", "month_label_count", "number", question, str(count))]

    def range_label_count(self) -> list[OolongQuestion]:
        label = self.rng.choice(OOLONG_LABELS)
        start, end = sorted((self._random_day(), self._random_day()))
        count = sum(1 for row in self.rows if row.label == label and start <= row.day <= end)
        question = (
            f"In the above data, how many instances with label '{label}' are dated between "
            f"{format_row_date(start)} and {format_row_date(end)}, both included? " + _NUMBER_FORMAT
        )
        return [OolongQuestion("timeline", "range_label_count", "number", question, str(count))]

    def _months_beating(self) -> tuple[str, str, list[tuple[int, int]]]:
        winner, loser = self.rng.sample(OOLONG_LABELS, 2)
        per_month = {
            label: Counter((row.day.year, row.day.month) for row in self.rows if row.label == label)
            for label in (winner, loser)
        }
        beating = [
            month for month in self.months if per_month[winner][month] > per_month[loser][month]
        ]
        return winner, loser, beating

    def months_label_beats_label(self) -> list[OolongQuestion]:
        winner, loser, beating = self._months_beating()
        question = (
            f"In the above data, in how many calendar months are there more instances with label "
            f"'{winner}' than with label '{loser}'? " + _NUMBER_FORMAT
        )
        gold = str(len(beating))
        return [OolongQuestion("timeline", "months_label_beats_label", "number", question, gold)]

    def first_month_label_beats_label(self) -> list[OolongQuestion]:
        winner, loser, beating = self._months_beating()
        if not beating:
            return []
        question = (
            "In the above data, what is the first calendar month in which there are more "
            f"instances with label '{winner}' than with label '{loser}'? " + _MONTH_FORMAT
        )
        gold = _month_name(*beating[0])
        return [
            OolongQuestion(
                "timeline", "first_month_label_beats_label", "month_year", question, gold
            )
        ]

    def families(self) -> list[list[list[OolongQuestion]]]:
        """Every candidate question, by family and then by question type."""
        generators: list[list[tuple[Callable[[], list[OolongQuestion]], int]]] = [
            [
                (self.most_common_label, 1),
                (self.least_common_label, 1),
                (self.label_comparison, _VARIANTS_PER_TYPE),
                (self.label_count, _VARIANTS_PER_TYPE),
            ],
            [
                (self.most_frequent_user, 1),
                (self.second_most_frequent_user, 1),
                (self.subset_most_frequent_user, _VARIANTS_PER_TYPE),
                (self.subset_most_common_label, _VARIANTS_PER_TYPE),
                (self.subset_label_comparison, _VARIANTS_PER_TYPE),
                (self.subset_label_count, _VARIANTS_PER_TYPE),
                (self.user_most_label, _VARIANTS_PER_TYPE),
                (self.user_vs_user_label, _VARIANTS_PER_TYPE),
            ],
            [
                (self.most_frequent_date, 1),
                (self.dates_with_exact_count, _VARIANTS_PER_TYPE),
                (self.label_before_after, _VARIANTS_PER_TYPE),
                (self.month_label_count, _VARIANTS_PER_TYPE),
                (self.range_label_count, _VARIANTS_PER_TYPE),
                (self.months_label_beats_label, _VARIANTS_PER_TYPE),
                (self.first_month_label_beats_label, _VARIANTS_PER_TYPE),
            ],
        ]
        seen: set[str] = set()
        families = []
        for family in generators:
            types = []
            for generate, attempts in family:
                candidates = []
                for _ in range(attempts):
                    for candidate in generate():
                        if candidate.question not in seen:
                            seen.add(candidate.question)
                            candidates.append(candidate)
                types.append(candidates)
            families.append(types)
        return families


def _round_robin(queues: Sequence[Sequence[OolongQuestion]]) -> list[OolongQuestion]:
    merged: list[OolongQuestion] = []
    for depth in range(max((len(queue) for queue in queues), default=0)):
        merged.extend(queue[depth] for queue in queues if depth < len(queue))
    return merged


def window_questions(
    window: OolongWindow, rng: random.Random, count: int = QUESTIONS_PER_WINDOW
) -> list[OolongQuestion]:
    """Up to ``count`` questions over ``window``, spread evenly over the three families and,
    within a family, over its question types (in an order drawn from ``rng``)."""
    family_queues = []
    for types in _WindowFacts(window, rng).families():
        present = [candidates for candidates in types if candidates]
        rng.shuffle(present)
        family_queues.append(_round_robin(present))
    return _round_robin(family_queues)[:count]


class TrecWindows:
    """Seeded OOLONG windows drawn from a TREC pool (loaded on first use), the last few kept:
    what the ``oolong`` and ``oolong-pairs`` tasks share. Each task seeds its windows with its
    own ``name``, so the two never draw the same window for the same seed."""

    name: str

    def __init__(self, trec: Sequence[TrecQuestion] | None = None) -> None:
        self._trec = list(trec) if trec is not None else None
        self._windows: dict[tuple[int, int, int], OolongWindow] = {}

    @property
    def trec(self) -> list[TrecQuestion]:
        """The TREC questions windows are drawn from (loaded on first use)."""
        if self._trec is None:
            self._trec = load_trec(None)
        return self._trec

    def window(self, length: int, seed: int, index: int) -> OolongWindow:
        """Window ``index`` of ``items(length, ..., seed)``."""
        key = (length, seed, index)
        if key not in self._windows:
            if len(self._windows) >= 4:
                self._windows.pop(next(iter(self._windows)))
            self._windows[key] = build_window(
                self.trec, length, window_rng(self.name, length, seed, index)
            )
        return self._windows[key]

    def labelled_context(self, item: BenchItem) -> str:
        """The context of ``item`` with each row's gold label (for checking, never for a
        method)."""
        window = self.window(item.length, int(item.meta["seed"]), int(item.meta["window"]))
        return render_window(window, with_labels=True)


class OolongTask(TrecWindows):
    """The ``oolong`` benchmark: 25 questions per window of TREC rows, scored as OOLONG does.

    ``trec`` is the labelled question pool (default: :func:`rlmx.bench.trec.load_trec` on
    first use, which honours ``RLMX_TREC_PATH``). Item ``k`` of ``items(length, n, seed)`` is
    question ``k % 25`` of window ``k // 25``; every window and question comes from a random
    stream seeded by ``(length, seed, window)`` only.
    """

    name = "oolong"

    def __init__(
        self,
        trec: Sequence[TrecQuestion] | None = None,
        *,
        questions_per_window: int = QUESTIONS_PER_WINDOW,
    ) -> None:
        if questions_per_window < 1:
            raise ConfigError(
                f"questions_per_window must be at least 1, not {questions_per_window}."
            )
        super().__init__(trec)
        self.questions_per_window = questions_per_window

    def questions(self, length: int, seed: int, index: int) -> list[OolongQuestion]:
        """The questions asked over window ``index``."""
        rng = window_rng(f"{self.name}-questions", length, seed, index)
        return window_questions(self.window(length, seed, index), rng, self.questions_per_window)

    def items(self, length: int, n: int, seed: int) -> list[BenchItem]:
        """``n`` questions over as many windows of ``length`` tokens as they need."""
        if n < 0:
            raise ConfigError(f"The number of items must be 0 or more, not {n}.")
        items: list[BenchItem] = []
        index = 0
        while len(items) < n:
            window = self.window(length, seed, index)
            context = render_window(window)
            questions = self.questions(length, seed, index)
            if not questions:  # pragma: no cover - label counts are always askable
                raise ConfigError(
                    f"No OOLONG question could be asked over a {length}-token window."
                )
            for position, question in enumerate(questions):
                if len(items) == n:
                    break
                items.append(
                    BenchItem(
                        task=self.name,
                        item_id=f"oolong-L{length}-s{seed}-w{index}-q{position}",
                        context=context,
                        question=question.question,
                        gold=question.gold,
                        length=length,
                        meta={
                            "dataset": "trec_coarse",
                            "family": question.family,
                            "question_type": question.question_type,
                            "kind": question.kind,
                            "seed": seed,
                            "window": index,
                            "rows": len(window.rows),
                        },
                    )
                )
            index += 1
        return items

    def score(self, item: BenchItem, answer: str) -> float:
        """OOLONG's official per-question score of ``answer``."""
        return oolong_score(answer, str(item.gold), str(item.meta["kind"]))
