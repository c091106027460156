"""The published benchmarks' scorers as pure functions, shared by every task.

- :func:`oolong_score`: OOLONG-synth's per-question score (exact match, comparison phrase,
  ``0.75 ** |gold - pred|`` for numbers, parsed dates and months).
- :func:`string_match_all`: RULER's S-NIAH score, the fraction of gold strings in the output.
- :func:`parse_pairs` and :func:`pair_f1`: OOLONG-Pairs' F1 over sets of user-id pairs.
- :func:`multiple_choice`: the chosen option letter of a multiple-choice answer against the gold.

Every function returns a score in ``[0, 1]``; reports show the mean x100.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date

from rlmx.exceptions import ConfigError

__all__ = [
    "COMPARISON_PHRASES",
    "OOLONG_KINDS",
    "chosen_option",
    "multiple_choice",
    "oolong_candidate",
    "oolong_score",
    "pair_f1",
    "parse_date",
    "parse_month_year",
    "parse_pairs",
    "string_match_all",
]

COMPARISON_PHRASES = ("more common than", "less common than", "same frequency as")
"""The three relations OOLONG's comparison questions ask for, as they appear in the gold."""

OOLONG_KINDS = frozenset({"label", "user", "number", "comparison", "date", "month_year"})
"""Answer kinds :func:`oolong_score` knows; see its docstring."""

# The prefix each kind's answer format asks for ("Give your final answer in the form 'User: ...'").
_ANSWER_MARKERS = {
    "label": "Label",
    "user": "User",
    "number": "Answer",
    "comparison": "Answer",
    "date": "Date",
    "month_year": "Answer",
}

# The official parser maps any answer mentioning a relation to these short forms, which are then
# looked up in the gold ("more common than" contains "more common").
_SHORT_COMPARISONS = ("more common", "less common", "same frequency")

_EDGE_PUNCTUATION = " \t\"'.,;:!?“”‘’"

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}

_WEEKDAY_PREFIX = re.compile(
    r"^(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(?:day|nesday|sday|urday|rsday)?\.?,?\s+",
    re.IGNORECASE,
)
_US_NUMERIC_DATE = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")
_ISO_DATE = re.compile(r"(\d{4})[/.-](\d{1,2})[/.-](\d{1,2})")
_MONTH_NAME_FIRST = re.compile(r"([a-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})")
_DAY_FIRST = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?([a-z]+)\.?,?\s+(\d{4})")
_MONTH_NAME_YEAR = re.compile(r"([a-z]+)\.?,?\s+(\d{4})")
_NUMERIC_MONTH_YEAR = re.compile(r"(\d{1,2})[/.-](\d{4})")
_ISO_MONTH_YEAR = re.compile(r"(\d{4})[/.-](\d{1,2})")


def oolong_score(output: str, gold: str, kind: str) -> float:
    """Score one OOLONG-synth answer the way the benchmark's official scorer does.

    The candidate answer is taken from ``output`` by :func:`oolong_candidate`. Then, in order:
    a case-insensitive exact match with ``gold`` scores 1; a candidate naming a comparison
    relation scores 1 when that relation is in the gold (and 0 otherwise); the rest depends on
    ``kind``:

    - ``"label"``: one of the six label names; exact match only.
    - ``"user"``: a user id; also accepts ``"user 12345"`` or ``"#12345"``.
    - ``"number"``: a count; ``0.75 ** abs(gold - pred)``, or 0 when the candidate is not an
      integer (``"1,234"`` and ``"12 instances"`` are read as integers).
    - ``"comparison"``: gold is one of :data:`COMPARISON_PHRASES`; the relation rule above.
    - ``"date"``: gold ``MM/DD/YYYY``; 1 when the candidate parses (:func:`parse_date`) to the
      same day.
    - ``"month_year"``: gold like ``"June 2024"``; 1 when the candidate names the same month
      (:func:`parse_month_year`).

    Anything else scores 0. An unknown ``kind``, or a gold of the wrong shape for its kind,
    raises :class:`~rlmx.exceptions.ConfigError`.
    """
    if kind not in OOLONG_KINDS:
        raise ConfigError(
            f"Unknown OOLONG answer kind {kind!r}; use one of: {', '.join(sorted(OOLONG_KINDS))}."
        )
    candidate = oolong_candidate(output, _ANSWER_MARKERS[kind])
    if _folded(candidate) == _folded(gold):
        return 1.0
    relation = _short_comparison(candidate)
    if relation is not None:
        return 1.0 if relation in gold.lower() else 0.0
    if kind == "number":
        return _number_score(candidate, gold)
    if kind == "date":
        return _date_score(candidate, gold)
    if kind == "month_year":
        return _month_year_score(candidate, gold)
    if kind == "user":
        return _user_score(candidate, gold)
    return 0.0


def oolong_candidate(output: str, marker: str = "Answer") -> str:
    """The answer part of a model's output, cleaned for comparison.

    Like the official parser, it takes the text after the last ``:`` (the whole output when it
    has no ``:`` and is under 20 characters, else its last whitespace-separated token), and
    removes ``*``, ``[`` and ``]``. Two tolerances on top: when the output contains
    ``{marker}:`` (markdown allowed, e.g. ``**Answer:**``) the text after the last such marker
    is used, so a later "Note: ..." line does not hide the answer; and only the first line of
    the answer is kept, without enclosing parentheses, surrounding quotes or punctuation, or a
    trailing parenthetical remark.
    """
    text = output.strip()
    markers = list(re.finditer(rf"\b{re.escape(marker)}\s*\**\s*:", text, re.IGNORECASE))
    if markers:
        answer = text[markers[-1].end() :]
    elif ":" in text:
        answer = text.rsplit(":", 1)[1]
    elif len(text) < 20:
        answer = text
    else:
        answer = text.split()[-1]
    lines = answer.strip().splitlines()
    first_line = lines[0] if lines else ""
    cleaned = re.sub(r"[*\[\]`]", "", first_line).strip()
    enclosed = re.fullmatch(r"\((.*)\)", cleaned)
    if enclosed:
        cleaned = enclosed.group(1)
    without_remark = re.sub(r"\s*\([^()]*\)$", "", cleaned)
    if without_remark.strip(_EDGE_PUNCTUATION):
        cleaned = without_remark
    return " ".join(cleaned.strip(_EDGE_PUNCTUATION).split())


def _folded(text: str) -> str:
    return " ".join(text.split()).casefold()


def _short_comparison(candidate: str) -> str | None:
    lowered = candidate.lower()
    for relation in _SHORT_COMPARISONS:
        if relation in lowered:
            return relation
    return None


def _as_integer(candidate: str) -> int | None:
    text = candidate.strip()
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+", text):
        text = text.replace(",", "")
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    # "12 instances", "3 dates": a count followed only by words naming what was counted.
    counted = re.fullmatch(r"([+-]?\d+)\s+[A-Za-z][A-Za-z ]*", text)
    return int(counted.group(1)) if counted else None


def _number_score(candidate: str, gold: str) -> float:
    expected = _as_integer(gold)
    if expected is None:
        raise ConfigError(f"The gold of a 'number' OOLONG item must be an integer, not {gold!r}.")
    predicted = _as_integer(candidate)
    if predicted is None:
        return 0.0
    return float(0.75 ** abs(expected - predicted))


def _date_score(candidate: str, gold: str) -> float:
    expected = parse_date(gold)
    if expected is None:
        raise ConfigError(f"The gold of a 'date' OOLONG item must be a date, not {gold!r}.")
    return 1.0 if parse_date(candidate) == expected else 0.0


def _month_year_score(candidate: str, gold: str) -> float:
    expected = parse_month_year(gold)
    if expected is None:
        raise ConfigError(
            f"The gold of a 'month_year' OOLONG item must be like 'June 2024', not {gold!r}."
        )
    return 1.0 if parse_month_year(candidate) == expected else 0.0


def _user_score(candidate: str, gold: str) -> float:
    found = re.fullmatch(r"(?:user(?:\s*id)?\s*)?#?\s*(\d+)", candidate.strip(), re.IGNORECASE)
    return 1.0 if found is not None and found.group(1) == gold.strip() else 0.0


def _make_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def parse_date(text: str) -> date | None:
    """The date ``text`` names, or None.

    Accepts ``06/16/2024`` (month first, as the questions ask), ``2024-06-16``,
    ``Jun 16, 2024``, ``June 16th 2024``, ``16 June 2024`` and a leading weekday name.
    """
    cleaned = _WEEKDAY_PREFIX.sub("", " ".join(text.strip().strip(_EDGE_PUNCTUATION).split()))
    lowered = cleaned.lower()
    if found := _US_NUMERIC_DATE.fullmatch(lowered):
        return _make_date(int(found.group(3)), int(found.group(1)), int(found.group(2)))
    if found := _ISO_DATE.fullmatch(lowered):
        return _make_date(int(found.group(1)), int(found.group(2)), int(found.group(3)))
    if (found := _MONTH_NAME_FIRST.fullmatch(lowered)) and found.group(1) in _MONTHS:
        month = _MONTHS[found.group(1)]
        return _make_date(int(found.group(3)), month, int(found.group(2)))
    if (found := _DAY_FIRST.fullmatch(lowered)) and found.group(2) in _MONTHS:
        month = _MONTHS[found.group(2)]
        return _make_date(int(found.group(3)), month, int(found.group(1)))
    return None


def parse_month_year(text: str) -> tuple[int, int] | None:
    """The ``(year, month)`` that ``text`` names (``June 2024``, ``Jun 2024``, ``06/2024``,
    ``2024-06``), or None."""
    lowered = " ".join(text.strip().strip(_EDGE_PUNCTUATION).lower().split())
    year: int
    month: int
    if (found := _MONTH_NAME_YEAR.fullmatch(lowered)) and found.group(1) in _MONTHS:
        year, month = int(found.group(2)), _MONTHS[found.group(1)]
    elif found := _NUMERIC_MONTH_YEAR.fullmatch(lowered):
        year, month = int(found.group(2)), int(found.group(1))
    elif found := _ISO_MONTH_YEAR.fullmatch(lowered):
        year, month = int(found.group(1)), int(found.group(2))
    else:
        return None
    return (year, month) if 1 <= month <= 12 else None


def string_match_all(output: str, golds: Sequence[str]) -> float:
    """RULER's ``string_match_all``: the fraction of ``golds`` found, case-insensitively, in
    ``output`` (0..1; RULER reports it x100)."""
    expected = [golds] if isinstance(golds, str) else list(golds)
    if not expected:
        raise ConfigError("string_match_all needs at least one gold string to look for.")
    lowered = output.lower()
    return sum(1 for gold in expected if gold.lower() in lowered) / len(expected)


# "(12, 34)", "[12, 34]", "(user 12, user 34)"; markdown is removed before matching.
_BRACKETED_PAIR = re.compile(
    r"[(\[{<]\s*(?:user\s*(?:id\s*)?)?#?(\d+)\s*[,;]\s*(?:user\s*(?:id\s*)?)?#?(\d+)\s*[)\]}>]",
    re.IGNORECASE,
)
# A line holding nothing but "12, 34", optionally as a list item ("- 12, 34", "3. 12, 34").
_BARE_PAIR_LINE = re.compile(
    r"^\s*(?:[-+•]\s*|\d+[.)]\s+)?(\d+)\s*,\s*(\d+)\s*[.,;]?\s*$", re.MULTILINE
)


def parse_pairs(output: str) -> set[tuple[int, int]]:
    """Every pair of integers in ``output``, each sorted (lower first), without duplicates.

    Reads ``(a, b)`` and ``[a, b]`` anywhere (spaces, markdown emphasis and ``user`` words
    allowed), and lines consisting of just ``a, b``.
    """
    text = re.sub(r"[*`_]", "", output)
    found = [*_BRACKETED_PAIR.findall(text), *_BARE_PAIR_LINE.findall(text)]
    return {_sorted_pair(int(first), int(second)) for first, second in found}


def _sorted_pair(first: int, second: int) -> tuple[int, int]:
    return (first, second) if first <= second else (second, first)


def _gold_pair_set(gold: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    for pair in gold:
        try:
            first, second = (int(value) for value in pair)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"Gold pairs must be pairs of integers like [12, 34]; got {pair!r}."
            ) from error
        pairs.add(_sorted_pair(first, second))
    return pairs


def pair_f1(output: str, gold: Iterable[Sequence[int]]) -> float:
    """OOLONG-Pairs' score: F1 between the pairs parsed from ``output`` (:func:`parse_pairs`)
    and the gold pairs (any order within a pair). Empty gold and empty prediction score 1."""
    predicted = parse_pairs(output)
    expected = _gold_pair_set(gold)
    if not expected and not predicted:
        return 1.0
    hits = len(predicted & expected)
    if hits == 0:
        return 0.0
    precision = hits / len(predicted)
    recall = hits / len(expected)
    return 2 * precision * recall / (precision + recall)


def _option_letters(options: str) -> str:
    letters = options.upper()
    if not letters or not letters.isalpha() or len(set(letters)) != len(letters):
        raise ConfigError(
            f"Multiple-choice options must be distinct letters like 'ABCD', not {options!r}."
        )
    return letters


def chosen_option(output: str, options: str = "ABCD") -> str | None:
    """The option letter ``output`` chooses, or None when it names none or several.

    In order: the last explicit statement (``Answer: B``, ``the answer is (B)``,
    ``**Final answer:** B) foo``, ``Option B``); else the single letter marked as a choice (``(B)``,
    ``**B**``, ``[B]``, a line starting ``B)`` or holding only ``B``), several different ones
    being ambiguous; else a lone letter as the output's last word.
    """
    letters = _option_letters(options)
    letter = f"[{re.escape(letters)}]"
    explicit = re.findall(
        rf"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is))?(?:\s+(?i:option))?[\s:*\[(\-]*"
        rf"({letter})(?![A-Za-z0-9])",
        output,
    )
    if explicit:
        return str(explicit[-1])
    unstarred = output.replace("*", "")
    marked = {
        *re.findall(rf"\(({letter})\)", output),
        *re.findall(rf"\[({letter})\]", output),
        *re.findall(rf"\*\*({letter})\*\*", output),
        *re.findall(rf"^\s*({letter})[).:](?=\s|$)", unstarred, re.MULTILINE),
        *re.findall(rf"^\s*({letter})\s*$", unstarred, re.MULTILINE),
    }
    if len(marked) == 1:
        return str(marked.pop())
    if marked:
        return None
    words = unstarred.split()
    last_word = words[-1].strip("\"'.,;:!?()[]") if words else ""
    return last_word if len(last_word) == 1 and last_word in letters else None


def multiple_choice(output: str, gold: str, options: str = "ABCD") -> float:
    """1 when the option ``output`` chooses (:func:`chosen_option`) is ``gold``, else 0
    (also when the choice is missing or ambiguous)."""
    letters = _option_letters(options)
    expected = gold.strip().upper()
    if len(expected) != 1 or expected not in letters:
        raise ConfigError(f"The gold option {gold!r} is not one of the options {letters!r}.")
    return 1.0 if chosen_option(output, letters) == expected else 0.0
