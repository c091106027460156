"""Tests for rlmx.bench.oolong and rlmx.bench.trec: seeded OOLONG windows, their questions and
gold answers (recomputed here independently from the labelled rendering), and TREC loading.

Everything runs on the built-in made-up TREC sample; nothing reads the network or shared data.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from rlmx.bench.base import BenchItem, Task
from rlmx.bench.oolong import (
    FIRST_DATE,
    LAST_DATE,
    MIN_ROWS,
    OolongRow,
    OolongTask,
    OolongWindow,
    _label_mix,
    build_window,
    format_row_date,
    min_length,
    render_window,
    rows_for_length,
    window_questions,
    window_rng,
)
from rlmx.bench.trec import (
    COARSE_TO_LABEL,
    OOLONG_LABELS,
    TREC_PATH_ENV,
    TREC_URLS,
    TrecQuestion,
    builtin_trec,
    default_trec_cache,
    load_trec,
    parse_trec,
    parse_trec_line,
)
from rlmx.exceptions import ConfigError

ROW = re.compile(
    r"Date: (\w{3} \d{2}, \d{4}) \|\| User: (\d{5}) \|\| Instance: (.+?) \|\| Label: (.+)"
)
ALL_QUESTION_TYPES = {
    "most_common_label",
    "least_common_label",
    "label_comparison",
    "label_count",
    "most_frequent_user",
    "second_most_frequent_user",
    "subset_most_frequent_user",
    "subset_most_common_label",
    "subset_label_comparison",
    "subset_label_count",
    "user_most_label",
    "user_vs_user_label",
    "most_frequent_date",
    "dates_with_exact_count",
    "label_before_after",
    "month_label_count",
    "range_label_count",
    "months_label_beats_label",
    "first_month_label_beats_label",
}
MONTHS = [
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
]


@pytest.fixture(scope="module")
def task() -> OolongTask:
    return OolongTask(builtin_trec())


@pytest.fixture(scope="module")
def many_items(task: OolongTask) -> list[BenchItem]:
    """Enough windows, at two lengths, for every question type to appear."""
    return (
        task.items(4096, 25, seed=0) + task.items(8192, 100, seed=3) + task.items(32768, 50, seed=5)
    )


def item_json(items: list[BenchItem]) -> str:
    return json.dumps([dataclasses.asdict(item) for item in items], sort_keys=True)


# --- the independent oracle ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    day: date
    user: int
    label: str


def parse_labelled(text: str) -> list[Row]:
    rows = []
    for line in text.splitlines():
        found = ROW.fullmatch(line)
        if found:
            day = datetime.strptime(found.group(1), "%b %d, %Y").date()
            rows.append(Row(day, int(found.group(2)), found.group(4)))
    return rows


def parse_day(text: str) -> date:
    return datetime.strptime(text, "%b %d, %Y").date()


def relation(first: int, second: int) -> str:
    if first == second:
        return "same frequency as"
    return "more common than" if first > second else "less common than"


def top(counts: Counter[Any]) -> Any:
    ranked = counts.most_common()
    assert len(ranked) == 1 or ranked[0][1] > ranked[1][1], "gold asked for a tied maximum"
    return ranked[0][0]


def label_counter(rows: list[Row]) -> Counter[str]:
    counts = Counter(dict.fromkeys(OOLONG_LABELS, 0))
    counts.update(row.label for row in rows)
    return counts


def every_month() -> list[tuple[int, int]]:
    return sorted(
        {
            (day.year, day.month)
            for day in (
                date.fromordinal(ordinal)
                for ordinal in range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1)
            )
        }
    )


def months_beating(rows: list[Row], winner: str, loser: str) -> list[tuple[int, int]]:
    def in_month(label: str, month: tuple[int, int]) -> int:
        return sum(
            1 for row in rows if row.label == label and (row.day.year, row.day.month) == month
        )

    return [month for month in every_month() if in_month(winner, month) > in_month(loser, month)]


def recompute_gold(question_type: str, question: str, rows: list[Row]) -> str:
    """The gold answer, computed from the labelled rows and the question's own words."""
    subset = re.search(r"associated with user IDs ([\d, ]+)\. Among", question)
    if subset:
        chosen = {int(user) for user in subset.group(1).split(", ")}
        rows = [row for row in rows if row.user in chosen]
    labels = re.findall(r"label '([^']+)'", question)
    if question_type in {"most_common_label", "subset_most_common_label"}:
        return str(top(label_counter(rows)))
    if question_type == "least_common_label":
        ranked = sorted(label_counter(rows).items(), key=lambda entry: entry[1])
        assert ranked[0][1] < ranked[1][1]
        return ranked[0][0]
    if question_type in {"label_comparison", "subset_label_comparison"}:
        counts = label_counter(rows)
        return relation(counts[labels[0]], counts[labels[1]])
    if question_type in {"label_count", "subset_label_count"}:
        return str(label_counter(rows)[labels[0]])
    if question_type in {"most_frequent_user", "subset_most_frequent_user"}:
        return str(top(Counter(row.user for row in rows)))
    if question_type == "second_most_frequent_user":
        users = Counter(row.user for row in rows).most_common(3)
        assert users[0][1] > users[1][1] > users[2][1]
        return str(users[1][0])
    if question_type == "user_most_label":
        return str(top(Counter(row.user for row in rows if row.label == labels[0])))
    if question_type == "user_vs_user_label":
        found = re.search(r"is user (\d+) more common.* as user (\d+)\?", question)
        assert found
        first, second = int(found.group(1)), int(found.group(2))
        per_user = Counter(row.user for row in rows if row.label == labels[0])
        return relation(per_user[first], per_user[second])
    if question_type == "most_frequent_date":
        return top(Counter(row.day for row in rows)).strftime("%m/%d/%Y")  # type: ignore[no-any-return]
    if question_type == "dates_with_exact_count":
        found = re.search(r"exactly (\d+) instances?\?", question)
        assert found
        times = int(found.group(1))
        return str(sum(1 for count in Counter(row.day for row in rows).values() if count == times))
    if question_type == "label_before_after":
        found = re.search(r"before (\w{3} \d{2}, \d{4}) as after", question)
        assert found
        pivot = parse_day(found.group(1))
        days = [row.day for row in rows if row.label == labels[0]]
        return relation(sum(day < pivot for day in days), sum(day > pivot for day in days))
    if question_type == "month_label_count":
        found = re.search(r"dated in (\w+) (\d{4})\?", question)
        assert found
        month = (int(found.group(2)), MONTHS.index(found.group(1)) + 1)
        return str(
            sum(
                1
                for row in rows
                if row.label == labels[0] and (row.day.year, row.day.month) == month
            )
        )
    if question_type == "range_label_count":
        found = re.search(r"between (\w{3} \d{2}, \d{4}) and (\w{3} \d{2}, \d{4}), both", question)
        assert found
        start, end = parse_day(found.group(1)), parse_day(found.group(2))
        return str(sum(1 for row in rows if row.label == labels[0] and start <= row.day <= end))
    if question_type == "months_label_beats_label":
        return str(len(months_beating(rows, labels[0], labels[1])))
    if question_type == "first_month_label_beats_label":
        first_year, first_month = months_beating(rows, labels[0], labels[1])[0]
        return f"{MONTHS[first_month - 1]} {first_year}"
    raise AssertionError(f"no oracle for {question_type}")


def oracle_answer(item: BenchItem) -> str:
    kind = item.meta["kind"]
    prefix = {"label": "Label", "user": "User", "date": "Date"}.get(kind, "Answer")
    if kind == "comparison":
        return f"Answer: the first is **{item.gold}** the second"
    return f"{prefix}: {item.gold}"


# --- windows ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "rows"), [(1024, 14), (8192, 188), (32768, 787), (131072, 3182)]
)
def test_rows_follow_the_published_formula(length: int, rows: int) -> None:
    assert rows_for_length(length) == rows == int((0.95 * length - 168 - 250) // 39)


def test_window_text_holds_exactly_its_rows(task: OolongTask) -> None:
    window = task.window(8192, 0, 0)
    text = render_window(window)
    lines = text.splitlines()
    assert lines[0].startswith("The following lines contain 188 general-knowledge questions")
    assert all(label in lines[0] for label in OOLONG_LABELS)
    rows = [line for line in lines if line.startswith("Date: ")]
    assert len(rows) == len(window.rows) == 188
    assert rows == lines[1:189]
    assert all(
        re.fullmatch(r"Date: \w{3} \d{2}, \d{4} \|\| User: \d{5} \|\| Instance: .+", row)
        for row in rows
    )
    assert lines[189].startswith("Recall: the preceding lines contain 188")
    assert "Label:" not in "\n".join(rows)
    labelled = render_window(window, with_labels=True).splitlines()
    assert [line.rsplit(" || Label: ", 1)[0] for line in labelled[1:189]] == rows
    assert labelled[0] == lines[0]


def test_rows_are_dated_in_range_and_users_have_five_digits(task: OolongTask) -> None:
    window = task.window(32768, 1, 0)
    days = [row.day for row in window.rows]
    assert min(days) >= FIRST_DATE and max(days) <= LAST_DATE
    # 787 uniform draws over ~1220 days reach both ends of the range.
    assert min(days) < date(2022, 4, 1) and max(days) > date(2025, 4, 1)
    assert all(10_000 <= row.user <= 99_999 for row in window.rows)
    assert format_row_date(date(2024, 6, 6)) == "Jun 06, 2024"


def test_a_small_pool_of_users_writes_most_rows(task: OolongTask) -> None:
    window = task.window(32768, 2, 0)
    rows = len(window.rows)
    counts = Counter(row.user for row in window.rows)
    pool = round(0.1 * rows)
    frequent = sum(count for _, count in counts.most_common(pool))
    assert frequent >= 0.78 * rows
    # the other ~20% are mostly one-off ids
    assert len(counts) >= pool + 0.15 * rows


def test_label_mix_covers_the_rows_and_reuses_questions(task: OolongTask) -> None:
    window = task.window(8192, 4, 0)
    assert sum(window.label_counts.values()) == len(window.rows)
    assert set(window.label_counts) == set(OOLONG_LABELS)
    assert Counter(row.label for row in window.rows) == Counter(
        {label: count for label, count in window.label_counts.items() if count}
    )
    assert 2.0 <= window.temperature <= 6.0
    # 188 rows from 60 built-in questions: questions come back once a label runs out
    assert len({row.text for row in window.rows}) < len(window.rows)
    by_text = {question.text: question.label for question in builtin_trec()}
    assert all(by_text[row.text] == row.label for row in window.rows)


def test_label_mix_keeps_counts_non_negative_in_tiny_windows() -> None:
    # This stream asks the first label to absorb -1 after rounding.
    counts, _ = _label_mix(MIN_ROWS, random.Random(168))
    assert sum(counts.values()) == MIN_ROWS
    assert min(counts.values()) >= 0


def test_windows_need_enough_rows_and_all_labels() -> None:
    with pytest.raises(ConfigError, match=f"at least {min_length()} tokens"):
        build_window(builtin_trec(), 512, random.Random(0))
    assert rows_for_length(min_length()) >= MIN_ROWS > rows_for_length(min_length() - 1)
    no_abbreviations = [q for q in builtin_trec() if q.label != "abbreviation"]
    with pytest.raises(ConfigError, match="no question labelled abbreviation"):
        build_window(no_abbreviations, 4096, random.Random(0))
    with pytest.raises(ConfigError, match="has label 'ABBR'"):
        build_window([TrecQuestion("What is NASA ?", "ABBR")], 4096, random.Random(0))


# --- items --------------------------------------------------------------------------------


def test_items_are_byte_identical_for_a_seed_and_differ_for_another() -> None:
    first = OolongTask(builtin_trec()).items(4096, 30, seed=11)
    again = OolongTask(builtin_trec()).items(4096, 30, seed=11)
    other = OolongTask(builtin_trec()).items(4096, 30, seed=12)
    assert item_json(first) == item_json(again)
    assert first[0].context != other[0].context
    assert [item.question for item in first] != [item.question for item in other]


def test_items_fill_windows_of_25(task: OolongTask) -> None:
    items = task.items(4096, 30, seed=1)
    assert [item.item_id for item in items[:2]] == [
        "oolong-L4096-s1-w0-q0",
        "oolong-L4096-s1-w0-q1",
    ]
    assert items[24].item_id == "oolong-L4096-s1-w0-q24"
    assert items[25].item_id == "oolong-L4096-s1-w1-q0"
    assert items[-1].item_id == "oolong-L4096-s1-w1-q4"
    assert len({item.item_id for item in items}) == 30
    assert items[0].context is items[24].context
    assert items[0].context != items[25].context
    assert all(item.task == "oolong" and item.length == 4096 for item in items)
    assert {item.meta["family"] for item in items[:25]} == {"counting", "user", "timeline"}
    assert all(item.meta["rows"] == rows_for_length(4096) for item in items)
    assert all("|| Label:" not in item.context for item in items)
    assert task.items(4096, 0, seed=1) == []
    with pytest.raises(ConfigError, match="0 or more"):
        task.items(4096, -1, seed=1)


def test_gold_answers_match_an_independent_recount(
    task: OolongTask, many_items: list[BenchItem]
) -> None:
    labelled: dict[str, list[Row]] = {}
    seen_types = set()
    for item in many_items:
        key = f"{item.length}-{item.meta['seed']}-{item.meta['window']}"
        if key not in labelled:
            labelled[key] = parse_labelled(task.labelled_context(item))
            assert len(labelled[key]) == item.meta["rows"]
        expected = recompute_gold(item.meta["question_type"], item.question, labelled[key])
        assert item.gold == expected, item.question
        seen_types.add(item.meta["question_type"])
    assert seen_types == ALL_QUESTION_TYPES


FORMAT_ENDINGS: dict[str, Callable[[str], bool]] = {
    "label": lambda q: q.endswith(
        "Give your final answer in the form 'Label: answer' where answer is one of the labels: "
        + ", ".join(OOLONG_LABELS)
        + "."
    ),
    "number": lambda q: q.endswith("Give your final answer in the form 'Answer: number'."),
    "comparison": lambda q: bool(
        re.search(
            r"Give your final answer in the form 'Answer: [^']+ is \[X\] [^']+', where \[X\] is "
            r"'more common than', 'less common than', or 'same frequency as'\.$",
            q,
        )
    ),
    "user": lambda q: q.endswith(
        "Give your final answer in the form 'User: [X]', where [X] is the user ID."
    ),
    "date": lambda q: q.endswith("Give your final answer in the form 'Date: MM/DD/YYYY'."),
    "month_year": lambda q: q.endswith(
        "Give your final answer in the form 'Answer: [month] [year]'."
    ),
}


def test_every_question_ends_with_its_answer_format(many_items: list[BenchItem]) -> None:
    kinds = set()
    for item in many_items:
        kinds.add(item.meta["kind"])
        assert FORMAT_ENDINGS[item.meta["kind"]](item.question), item.question
        assert item.question.startswith(("In the above data, ", "For the following question, "))
    assert kinds == set(FORMAT_ENDINGS)


def test_oracle_answers_score_one_and_wrong_answers_zero(
    task: OolongTask, many_items: list[BenchItem]
) -> None:
    for item in many_items:
        assert task.score(item, oracle_answer(item)) == 1.0, item.question
        assert task.score(item, "Answer: I could not tell") == 0.0
    counts = [item for item in many_items if item.meta["kind"] == "number"]
    assert task.score(counts[0], f"Answer: {int(counts[0].gold) + 1}") == 0.75


def test_questions_are_spread_over_families_and_types(task: OolongTask) -> None:
    window = task.window(32768, 0, 0)
    questions = window_questions(window, window_rng("test", 32768, 0, 0))
    assert len(questions) == 25
    families = Counter(question.family for question in questions)
    assert min(families.values()) >= 8
    assert len({question.question_type for question in questions}) >= 14
    assert len({question.question for question in questions}) == 25
    assert len(window_questions(window, window_rng("test", 32768, 0, 0), count=5)) == 5


def test_degenerate_windows_get_only_the_questions_they_can_answer() -> None:
    rng = random.Random(0)
    empty = OolongWindow(length=2048, rows=(), temperature=2.0)
    asked = {q.question_type for q in window_questions(empty, rng)}
    assert asked == {
        "label_comparison",
        "label_count",
        "label_before_after",
        "month_label_count",
        "range_label_count",
        "months_label_beats_label",
    }
    one_user = OolongWindow(
        length=2048,
        rows=tuple(OolongRow(FIRST_DATE, 12345, "Who ?", "human being") for _ in range(12)),
        temperature=2.0,
    )
    questions = window_questions(one_user, rng)
    assert "user_vs_user_label" not in {q.question_type for q in questions}
    most_common = next(q for q in questions if q.question_type == "most_common_label")
    assert most_common.gold == "human being"
    assert all(q.gold == "12345" for q in questions if q.kind == "user")
    first_months = [q for q in questions if q.question_type == "first_month_label_beats_label"]
    assert all("'human being' than" in q.question for q in first_months)


def test_questions_per_window_is_configurable() -> None:
    items = OolongTask(builtin_trec(), questions_per_window=10).items(4096, 12, seed=0)
    assert items[10].item_id == "oolong-L4096-s0-w1-q0"
    with pytest.raises(ConfigError, match="at least 1"):
        OolongTask(builtin_trec(), questions_per_window=0)


def test_window_cache_stays_small(task: OolongTask) -> None:
    windows = [task.window(2048, 9, index) for index in range(6)]
    assert len(task._windows) <= 4
    assert task.window(2048, 9, 0).rows == windows[0].rows
    assert isinstance(windows[0], OolongWindow)


def test_the_task_follows_the_protocol(task: OolongTask) -> None:
    assert isinstance(task, Task)
    assert task.name == "oolong"


# --- TREC -----------------------------------------------------------------------------------


LABEL_TO_COARSE = {label: coarse for coarse, label in COARSE_TO_LABEL.items()}


def trec_text(questions: list[TrecQuestion]) -> str:
    return "".join(f"{LABEL_TO_COARSE[q.label]}:other {q.text}\n" for q in questions)


def test_builtin_trec_has_every_label() -> None:
    questions = builtin_trec()
    counts = Counter(question.label for question in questions)
    assert set(counts) == set(OOLONG_LABELS)
    assert min(counts.values()) >= 6
    assert len(questions) >= 60
    assert len({question.text for question in questions}) == len(questions)


def test_parse_trec_lines() -> None:
    assert parse_trec_line("LOC:city Where is   Glasgow ?") == TrecQuestion(
        "Where is Glasgow ?", "location"
    )
    assert parse_trec_line("NUM:date When did it happen ?\r\n").label == "numeric value"  # type: ignore[union-attr]
    assert parse_trec_line("   ") is None
    with pytest.raises(ConfigError, match="COARSE one of ABBR, DESC"):
        parse_trec_line("FOO:bar What ?")
    with pytest.raises(ConfigError, match="line 2"):
        parse_trec("HUM:ind Who ?\nnot a TREC line\n", "sample")
    with pytest.raises(ConfigError, match="holds no TREC questions"):
        parse_trec("\n\n", "empty.label")


def test_load_trec_from_a_file_or_folder(tmp_path: Path) -> None:
    questions = builtin_trec()
    train = tmp_path / "train_5500.label"
    train.write_text(trec_text(questions[:40]))
    (tmp_path / "TREC_10.label").write_bytes(b"DESC:def What is a caf\xe9 ?\n")
    assert load_trec(train) == questions[:40]
    from_folder = load_trec(str(tmp_path))
    assert from_folder[:40] == questions[:40]
    assert from_folder[40] == TrecQuestion("What is a café ?", "description and abstract concept")
    only_test_set = tmp_path / "only-test"
    only_test_set.mkdir()
    (only_test_set / "TREC_10.label").write_text("HUM:ind Who ?\n")
    with pytest.raises(ConfigError, match=r"does not hold train_5500\.label"):
        load_trec(only_test_set)


def test_load_trec_reads_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "train_5500.label").write_text(trec_text(builtin_trec()))
    monkeypatch.setenv(TREC_PATH_ENV, str(tmp_path))
    assert load_trec(None) == builtin_trec()
    # a task without explicit data loads it on first use
    lazy = OolongTask()
    assert lazy.items(2048, 1, seed=0)[0].item_id == "oolong-L2048-s0-w0-q0"
    assert lazy.trec == builtin_trec()


class FakeServer:
    """Stands in for urllib.request.urlopen: serves bytes per URL, or fails."""

    def __init__(self, pages: dict[str, bytes | Exception]) -> None:
        self.pages = pages
        self.requests: list[str] = []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.requests.append(url)
        page = self.pages.get(url, urllib.error.HTTPError(url, 404, "Not Found", None, None))  # type: ignore[arg-type]
        if isinstance(page, Exception):
            raise page
        return io.BytesIO(page)


def test_load_trec_downloads_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TREC_PATH_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    server = FakeServer(
        {
            TREC_URLS["train_5500.label"]: trec_text(builtin_trec()[:30]).encode(),
            TREC_URLS["TREC_10.label"]: trec_text(builtin_trec()[30:]).encode(),
        }
    )
    monkeypatch.setattr(urllib.request, "urlopen", server)
    assert default_trec_cache() == tmp_path / ".cache" / "rlmx" / "trec"
    assert load_trec() == builtin_trec()
    assert sorted(path.name for path in default_trec_cache().iterdir()) == [
        "TREC_10.label",
        "train_5500.label",
    ]
    assert load_trec() == builtin_trec()
    assert len(server.requests) == 2


def test_load_trec_tolerates_a_missing_test_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TREC_PATH_ENV, raising=False)
    server = FakeServer({TREC_URLS["train_5500.label"]: trec_text(builtin_trec()).encode()})
    monkeypatch.setattr(urllib.request, "urlopen", server)
    assert load_trec(cache_dir=tmp_path / "cache") == builtin_trec()
    assert not (tmp_path / "cache" / "TREC_10.label").exists()


def test_load_trec_says_when_the_cache_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TREC_PATH_ENV, raising=False)
    server = FakeServer({TREC_URLS["train_5500.label"]: trec_text(builtin_trec()).encode()})
    monkeypatch.setattr(urllib.request, "urlopen", server)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="Could not save the downloaded TREC questions"):
        load_trec(cache_dir=blocker / "trec")


@pytest.mark.parametrize(
    "failure",
    [urllib.error.URLError("Temporary failure in name resolution"), TimeoutError("timed out")],
)
def test_load_trec_offline_says_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    monkeypatch.delenv(TREC_PATH_ENV, raising=False)
    server = FakeServer({TREC_URLS["train_5500.label"]: failure})
    monkeypatch.setattr(urllib.request, "urlopen", server)
    with pytest.raises(ConfigError, match=f"Could not download.*{TREC_PATH_ENV}") as raised:
        load_trec(cache_dir=tmp_path)
    assert "train_5500.label" in str(raised.value)
    assert not (tmp_path / "train_5500.label").exists()


def test_load_trec_rejects_a_download_that_is_not_trec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TREC_PATH_ENV, raising=False)
    server = FakeServer({TREC_URLS["train_5500.label"]: b"<html>Moved</html>"})
    monkeypatch.setattr(urllib.request, "urlopen", server)
    with pytest.raises(ConfigError, match="Could not download"):
        load_trec(cache_dir=tmp_path)


def test_load_trec_names_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TREC data not found"):
        load_trec(tmp_path / "missing.label")
