"""Tests for rlmx.bench.scoring: the published scorers on hand-made, awkward outputs."""

from __future__ import annotations

from datetime import date

import pytest

from rlmx.bench.scoring import (
    COMPARISON_PHRASES,
    OOLONG_KINDS,
    chosen_option,
    multiple_choice,
    oolong_candidate,
    oolong_score,
    pair_f1,
    parse_date,
    parse_month_year,
    parse_pairs,
    string_match_all,
)
from rlmx.exceptions import ConfigError

# --- OOLONG --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Label: entity", "entity"),
        ("Answer: **5**", "5"),
        ("**Answer:** 5", "5"),
        ("Answer: [12]", "12"),
        ("Answer: 5.", "5"),
        ("Answer: 5\n\nI counted every row twice.", "5"),
        ("Answer: 5\nNote: the rows are sorted.", "5"),
        ("Label: location (it appears 40 times)", "location"),
        ("  'entity'  ", "entity"),
        ("I think that the correct count here is 17", "17"),
        ("Reasoning... so: 12", "12"),
        ("", ""),
        ("Answer:", ""),
        ("Answer: (5)", "5"),
        ("Answer: ()", ""),
    ],
)
def test_oolong_candidate(output: str, expected: str) -> None:
    assert oolong_candidate(output) == expected


@pytest.mark.parametrize(
    ("output", "gold", "kind", "expected"),
    [
        # labels: exact, case-insensitive, markdown, trailing punctuation
        ("Label: entity", "entity", "label", 1.0),
        ("Label: **Human Being**.", "human being", "label", 1.0),
        ("label: [location]", "location", "label", 1.0),
        ("The answer is\nLabel: numeric value\nNote: counted twice", "numeric value", "label", 1.0),
        ("Label: entity, location", "entity", "label", 0.0),
        ("Label: location", "entity", "label", 0.0),
        ("entity", "entity", "label", 1.0),
        ("After counting every row, I believe it is entity", "entity", "label", 1.0),
        # numbers: exact, partial credit, non-integers
        ("Answer: 12", "12", "number", 1.0),
        ("Answer: **13**", "12", "number", 0.75),
        ("Answer: 10", "12", "number", 0.5625),
        ("Answer: 14 instances", "12", "number", 0.5625),
        ("Answer: 1,234", "1234", "number", 1.0),
        ("Answer: 12.5", "12", "number", 0.0),
        ("Answer: twelve", "12", "number", 0.0),
        ("Answer: about 12", "12", "number", 0.0),
        ("Answer: 0", "40", "number", 0.75**40),
        # comparisons: the phrase in the gold decides
        ("Answer: entity is more common than location", "more common than", "comparison", 1.0),
        ("Answer: entity is **less common than** location", "less common than", "comparison", 1.0),
        ("Answer: same frequency as", "same frequency as", "comparison", 1.0),
        ("Answer: more common", "more common than", "comparison", 1.0),
        ("Answer: entity is more common than location", "less common than", "comparison", 0.0),
        ("Answer: entity is as frequent as location", "same frequency as", "comparison", 0.0),
        # users
        ("User: 98779", "98779", "user", 1.0),
        ("User: **98779**", "98779", "user", 1.0),
        ("User: user 98779.", "98779", "user", 1.0),
        ("User: #98779", "98779", "user", 1.0),
        ("User: 98780", "98779", "user", 0.0),
        ("User: 987790", "98779", "user", 0.0),
        ("User: nobody", "98779", "user", 0.0),
        # dates in several forms
        ("Date: 06/16/2024", "06/16/2024", "date", 1.0),
        ("Date: 6/16/2024", "06/16/2024", "date", 1.0),
        ("Date: Jun 16, 2024", "06/16/2024", "date", 1.0),
        ("Date: June 16th, 2024.", "06/16/2024", "date", 1.0),
        ("Date: 2024-06-16", "06/16/2024", "date", 1.0),
        ("Date: 16 June 2024", "06/16/2024", "date", 1.0),
        ("Date: Sunday, June 16, 2024", "06/16/2024", "date", 1.0),
        ("Date: **[06/16/2024]**", "06/16/2024", "date", 1.0),
        ("Date: 06/17/2024", "06/16/2024", "date", 0.0),
        ("Date: 16/06/2024", "06/16/2024", "date", 0.0),
        ("Date: soon", "06/16/2024", "date", 0.0),
        # months
        ("Answer: June 2024", "June 2024", "month_year", 1.0),
        ("Answer: june, 2024", "June 2024", "month_year", 1.0),
        ("Answer: Jun 2024", "June 2024", "month_year", 1.0),
        ("Answer: 06/2024", "June 2024", "month_year", 1.0),
        ("Answer: 2024-06", "June 2024", "month_year", 1.0),
        ("Answer: [June] [2024]", "June 2024", "month_year", 1.0),
        ("Answer: July 2024", "June 2024", "month_year", 0.0),
        ("Answer: 13/2024", "June 2024", "month_year", 0.0),
        ("Answer: Juny 2024", "June 2024", "month_year", 0.0),
    ],
)
def test_oolong_score(output: str, gold: str, kind: str, expected: float) -> None:
    assert oolong_score(output, gold, kind) == pytest.approx(expected)


def test_oolong_score_rejects_unknown_kinds_and_malformed_golds() -> None:
    assert {"label", "number", "comparison", "user", "date", "month_year"} == OOLONG_KINDS
    with pytest.raises(ConfigError, match="Unknown OOLONG answer kind 'labels'"):
        oolong_score("Label: entity", "entity", "labels")
    with pytest.raises(ConfigError, match="must be an integer"):
        oolong_score("Answer: 3", "three", "number")
    with pytest.raises(ConfigError, match="must be a date"):
        oolong_score("Date: 01/02/2024", "yesterday", "date")
    with pytest.raises(ConfigError, match="like 'June 2024'"):
        oolong_score("Answer: June 2024", "summer", "month_year")


def test_comparison_phrases_are_the_published_ones() -> None:
    assert COMPARISON_PHRASES == ("more common than", "less common than", "same frequency as")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("02/29/2024", date(2024, 2, 29)),
        ("02/30/2024", None),
        ("2024/6/1", date(2024, 6, 1)),
        ("Sept 3, 2023", date(2023, 9, 3)),
        ("3rd of March 2023", date(2023, 3, 3)),
        ("Smarch 3, 2023", None),
        ("3 Smarch 2023", None),
        ("Jun 16", None),
    ],
)
def test_parse_date(text: str, expected: date | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("December 2022", (2022, 12)), ("12-2022", (2022, 12)), ("2022-00", None), ("soon", None)],
)
def test_parse_month_year(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_month_year(text) == expected


# --- RULER ---------------------------------------------------------------------------------


def test_string_match_all() -> None:
    assert string_match_all("The magic number is 1234567.", ["1234567"]) == 1.0
    assert string_match_all("Numbers: 1234567", ["1234567", "7654321"]) == 0.5
    assert string_match_all("nothing here", ["1234567"]) == 0.0
    uuid = "0F8FAD5B-D9CB-469F-A165-70867728950E"
    assert string_match_all(f"it is {uuid.lower()}", [uuid]) == 1.0
    assert string_match_all("abc", "abc") == 1.0
    with pytest.raises(ConfigError, match="at least one gold"):
        string_match_all("abc", [])


# --- OOLONG-Pairs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("(1, 2)\n(3, 4)", {(1, 2), (3, 4)}),
        ("(1,2) (3 ,4)", {(1, 2), (3, 4)}),
        ("( 2 , 1 )", {(1, 2)}),
        ("[(5, 6), (7, 8)]", {(5, 6), (7, 8)}),
        ("[[5, 6], [8, 7]]", {(5, 6), (7, 8)}),
        ("- **(10, 20)**\n- `(30, 40)`", {(10, 20), (30, 40)}),
        ("(**10**, **20**)", {(10, 20)}),
        ("(user 10, user 20)\n(User ID 30; User ID 40)", {(10, 20), (30, 40)}),
        ("(1, 2)\n(2, 1)\n(1, 2)", {(1, 2)}),
        ("10, 20\n1. 30, 40\n- 50, 60.", {(10, 20), (30, 40), (50, 60)}),
        ("There are 3 pairs, 5 users and (1, 2).", {(1, 2)}),
        ("No pairs qualify.", set()),
        ("", set()),
        ("(1, 2, 3)", set()),
    ],
)
def test_parse_pairs(output: str, expected: set[tuple[int, int]]) -> None:
    assert parse_pairs(output) == expected


def test_pair_f1() -> None:
    gold = [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert pair_f1("(1, 2)\n(3, 4)\n(5, 6)\n(7, 8)", gold) == 1.0
    assert pair_f1("(2, 1)\n(4, 3)\n(6, 5)\n(8, 7)", {(1, 2), (3, 4), (5, 6), (7, 8)}) == 1.0
    # half the gold found, nothing wrong: precision 1, recall 0.5
    assert pair_f1("(1, 2)\n(3, 4)", gold) == pytest.approx(2 / 3)
    # duplicates are counted once
    assert pair_f1("(1, 2)\n(1, 2)\n(2, 1)\n(3, 4)", gold) == pytest.approx(2 / 3)
    # one right, one wrong: precision 0.5, recall 0.25
    assert pair_f1("(1, 2)\n(9, 10)", gold) == pytest.approx(1 / 3)
    assert pair_f1("(9, 10)", gold) == 0.0
    assert pair_f1("", gold) == 0.0
    assert pair_f1("(1, 2)", []) == 0.0
    assert pair_f1("", []) == 1.0
    assert pair_f1("No pairs.", set()) == 1.0
    assert pair_f1("(1, 2)", [("2", "1")]) == 1.0  # type: ignore[list-item]


def test_pair_f1_rejects_malformed_gold() -> None:
    with pytest.raises(ConfigError, match="pairs of integers"):
        pair_f1("(1, 2)", [[1, 2, 3]])
    with pytest.raises(ConfigError, match="pairs of integers"):
        pair_f1("(1, 2)", [["a", "b"]])  # type: ignore[list-item]


# --- multiple choice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Answer: B", "B"),
        ("answer: (C)", "C"),
        ("The answer is D.", "D"),
        ("**Final Answer:** B) the parser", "B"),
        ("The correct answer is **A**", "A"),
        ("Answer is option C", "C"),
        ("I first thought Answer: A, but the Answer: D", "D"),
        ("(B)", "B"),
        ("I pick (C) because it raises.", "C"),
        ("**B**", "B"),
        ("B) foo", "B"),
        ("C. It overrides the method.", "C"),
        ("[A]", "A"),
        ("After reading every file, my choice is B", "B"),
        ("Thinking...\n\nD", "D"),
        ("(A) is wrong and (B) is right", None),
        ("A) foo\nB) bar", None),
        ("It raises ValueError.", None),
        ("The answer is E", None),
        ("", None),
        ("Answer: Because the code raises.", None),
    ],
)
def test_chosen_option(output: str, expected: str | None) -> None:
    assert chosen_option(output) == expected


def test_multiple_choice() -> None:
    assert multiple_choice("Answer: B", "B") == 1.0
    assert multiple_choice("Answer: B", "b") == 1.0
    assert multiple_choice("Answer: C", "B") == 0.0
    assert multiple_choice("(A) or (B)", "B") == 0.0
    assert multiple_choice("Answer: E", "E", options="ABCDE") == 1.0
    with pytest.raises(ConfigError, match="not one of the options"):
        multiple_choice("Answer: E", "E")
    with pytest.raises(ConfigError, match="distinct letters"):
        multiple_choice("Answer: A", "A", options="AAB")
    with pytest.raises(ConfigError, match="distinct letters"):
        multiple_choice("Answer: A", "A", options="")
