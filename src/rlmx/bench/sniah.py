"""S-NIAH: RULER's single-needle-in-a-haystack task, generated offline, plus a loader for RULER's
own jsonl files.

One needle sentence, ``One of the special magic numbers for {key} is: {value}.`` (or ``uuids``),
hides in a haystack grown until the prompt (context plus question) reaches the requested token
count. Three variants follow RULER's ``niah_single_*`` configurations:

- ``single_1``: the noise haystack, RULER's sentence group repeated one group per line; the needle
  is its own line at a random position.
- ``single_2``: an essay haystack and a 7-digit number.
- ``single_3``: an essay haystack and a UUID4 (drawn from the seeded generator).

The essay haystack is CPython's ``pydoc_data.topics`` (the language reference, ~95K tokens once
whitespace is collapsed, cycled for longer contexts) or every ``.txt`` file of a folder the user
names. As in RULER, whitespace is collapsed to single spaces, the haystack grows word by word, and
the needle goes at one of 40 evenly spaced depths, on a sentence boundary found by a regex
splitter. Depths are spread over the items of a set with a golden-ratio sequence, so any prefix of
a set covers the depths evenly and item ``i`` does not depend on how many items were asked for.

The context starts with RULER's instruction line ("Some special magic numbers are hidden within
the following text...") because RULER's prompt does; the question is RULER's query sentence. The
prompt is sized as ``count_tokens(context) + count_tokens(question)``, the largest that stays
within the requested length (RULER also keeps a 128-token answer allowance out of the length;
the benchmark spec asks for the prompt itself to reach the target, so none is reserved).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from rlmx.bench.base import BenchItem
from rlmx.bench.scoring import string_match_all
from rlmx.bench.tokens import TOKENIZER_NAME, count_tokens, fit_to_budget
from rlmx.exceptions import ConfigError

__all__ = [
    "DEPTHS",
    "NOISE_GROUP",
    "VARIANTS",
    "WORD_LIST_SOURCE",
    "SniahTask",
    "load_ruler_jsonl",
]

Variant = Literal["single_1", "single_2", "single_3"]
VARIANTS: Final[tuple[Variant, ...]] = ("single_1", "single_2", "single_3")

NOISE_GROUP: Final = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
"""RULER's noise haystack: one repetition of this group per line."""

DEPTHS: Final[tuple[int, ...]] = tuple(round(i * 100 / 39) for i in range(40))
"""Needle depths in percent: RULER's ``np.round(np.linspace(0, 100, 40))``."""

_GOLDEN_FRACTION: Final = 0.6180339887498949

_NEEDLE = "One of the special magic {kind} for {key} is: {value}."
_INTRO = (
    "Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {kind} afterwards."
)
_QUESTION = "What is the special magic {singular} for {key} mentioned in the provided text?"

# A sentence ends at a word ending in . ! or ? (closing quotes and brackets allowed) when the
# next word opens like a sentence: a capital, a digit, or an opening quote or bracket.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_SENTENCE_START = re.compile(r"^[\"'(\[]?[A-Z0-9]")

# Used only when the ``wonderwords`` package (RULER's source of key words) is not installed.
_BUILTIN_ADJECTIVES: Final = (
    "abundant adorable agreeable ancient brave bright calm careful clever curious damp "
    "delightful eager elegant fancy fierce gentle gigantic glorious graceful handsome helpful "
    "hollow humble jolly kind lively lucky mellow modern nimble obedient odd plain polite proud "
    "quaint quiet rapid rich shiny silent sleepy smooth sturdy swift tame tender tidy vast "
    "wandering witty young zealous"
)
_BUILTIN_NOUNS: Final = (
    "anchor apple badge balloon basket beacon bicycle blanket bottle bridge button candle "
    "canyon carpet castle cherry compass cottage crystal curtain desert diamond engine feather "
    "forest fountain garden glacier hammer harbor helmet island jacket kettle ladder lantern "
    "meadow mirror needle orchard oven pebble pepper pillow planet pocket puzzle ribbon saddle "
    "shovel spoon statue thunder tunnel violin wagon whistle window"
)


def _load_word_lists() -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``(source, adjectives, nouns)``: wonderwords' bundled lists, or the built-in fallback.

    Only all-lowercase single words are kept (the lists also hold acronyms and hyphenated
    compounds, which would make keys such as ``quizzical-arch-rival``).
    """
    try:
        assets = resources.files("wonderwords") / "assets"
        adjectives = (assets / "adjectivelist.txt").read_text(encoding="utf-8")
        nouns = (assets / "nounlist.txt").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return "builtin", tuple(_BUILTIN_ADJECTIVES.split()), tuple(_BUILTIN_NOUNS.split())

    def clean(text: str) -> tuple[str, ...]:
        return tuple(sorted({w for w in text.split() if re.fullmatch(r"[a-z]+", w)}))

    return "wonderwords", clean(adjectives), clean(nouns)


WORD_LIST_SOURCE, _ADJECTIVES, _NOUNS = _load_word_lists()
"""Where the key words come from: ``"wonderwords"`` or ``"builtin"``."""


@dataclass(frozen=True, slots=True)
class _Essay:
    """A haystack corpus: one pass of words, cycled as often as a length needs."""

    label: str
    words: tuple[str, ...]
    text: str
    """``" ".join(words)``: one pass."""
    offsets: tuple[int, ...]
    """Character offset of each word in ``text``, plus ``len(text) + 1`` at the end."""
    starts: tuple[int, ...]
    """Word indices after index 0 where a sentence starts within one pass."""
    wraps_on_boundary: bool
    """Whether a pass's first word starts a sentence when it follows the previous pass."""
    tokens_per_word: float

    @classmethod
    def from_text(cls, label: str, raw: str) -> _Essay:
        words = tuple(raw.split())
        if not words:
            raise ConfigError(f"the haystack source {label} holds no text; give it some prose")
        text = " ".join(words)
        offsets: list[int] = []
        position = 0
        for word in words:
            offsets.append(position)
            position += len(word) + 1
        offsets.append(position)
        starts = tuple(i for i in range(1, len(words)) if _is_boundary(words[i - 1], words[i]))
        return cls(
            label=label,
            words=words,
            text=text,
            offsets=tuple(offsets),
            starts=starts,
            wraps_on_boundary=_is_boundary(words[-1], words[0]),
            tokens_per_word=max(count_tokens(text), 1) / len(words),
        )

    def span(self, first: int, last: int) -> str:
        """Words ``first`` to ``last`` (exclusive) of the endless cycle, joined by spaces."""
        size = len(self.words)
        pieces: list[str] = []
        while first < last:
            lap, index = divmod(first, size)
            stop = min(size, index + last - first)
            pieces.append(self.text[self.offsets[index] : self.offsets[stop] - 1])
            first = lap * size + stop
        return " ".join(pieces)

    def sentence_starts(self, count: int) -> list[int]:
        """Word indices below ``count`` where a sentence starts (always including 0)."""
        size = len(self.words)
        result = [0]
        lap = 0
        while lap * size < count:
            base = lap * size
            if lap and self.wraps_on_boundary:
                result.append(base)
            for start in self.starts:
                if base + start >= count:
                    break
                result.append(base + start)
            lap += 1
        return result


def _is_boundary(previous: str, following: str) -> bool:
    return bool(_SENTENCE_END.search(previous) and _SENTENCE_START.match(following))


@cache
def _pydoc_essay() -> _Essay:
    from pydoc_data import topics

    raw = "\n\n".join(topics.topics[name] for name in sorted(topics.topics))
    return _Essay.from_text("pydoc_data.topics", raw)


def _folder_essay(folder: Path) -> _Essay:
    if not folder.is_dir():
        raise ConfigError(
            f"haystack_dir {str(folder)!r} is not a folder; give a folder of .txt files"
        )
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise ConfigError(
            f"haystack_dir {str(folder)!r} holds no .txt files; add plain-text prose files"
        )
    raw = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    return _Essay.from_text(str(folder), raw)


@dataclass(frozen=True, slots=True)
class _Needle:
    key: str
    value: str
    kind: str
    """``numbers`` or ``uuids``, as in the needle and intro sentences."""

    @property
    def sentence(self) -> str:
        return _NEEDLE.format(kind=self.kind, key=self.key, value=self.value)

    @property
    def intro(self) -> str:
        return _INTRO.format(kind=self.kind)

    @property
    def question(self) -> str:
        return _QUESTION.format(singular=self.kind[:-1], key=self.key)


class SniahTask:
    """RULER single-needle S-NIAH: ``SniahTask("single_2").items(8192, n=50, seed=0)``.

    ``haystack_dir`` replaces the default essay text (``pydoc_data.topics``) with every ``.txt``
    file under that folder, read in path order and cycled as needed; it applies to the essay
    variants ``single_2`` and ``single_3``.
    """

    name = "sniah"

    def __init__(self, variant: str = "single_1", haystack_dir: str | Path | None = None) -> None:
        if variant not in VARIANTS:
            raise ConfigError(
                f"unknown S-NIAH variant {variant!r}; choose one of {', '.join(VARIANTS)}"
            )
        if haystack_dir is not None and variant == "single_1":
            raise ConfigError(
                "haystack_dir applies to the essay variants single_2 and single_3; "
                "single_1 always uses RULER's noise sentences"
            )
        self.variant: Variant = variant
        self.haystack_dir = None if haystack_dir is None else Path(haystack_dir)
        self._essay: _Essay | None = None

    def _haystack(self) -> _Essay:
        if self._essay is None:
            if self.haystack_dir is None:
                self._essay = _pydoc_essay()
            else:
                self._essay = _folder_essay(self.haystack_dir)
        return self._essay

    def items(self, length: int, n: int, seed: int) -> list[BenchItem]:
        """``n`` items whose prompts are as close to ``length`` tokens as fits, never above."""
        if length < 1:
            raise ConfigError(f"length must be a positive token count, not {length}")
        if n < 0:
            raise ConfigError(f"n must be zero or more items, not {n}")
        depth_offset = random.Random(f"sniah|{self.variant}|{length}|{seed}|depths").random()
        guess: int | None = None
        items: list[BenchItem] = []
        for index in range(n):
            rng = random.Random(f"sniah|{self.variant}|{length}|{seed}|{index}")
            depth = DEPTHS[int((depth_offset + index * _GOLDEN_FRACTION) % 1.0 * len(DEPTHS))]
            item, guess = self._build(rng, length, seed, index, depth, guess)
            items.append(item)
        return items

    def score(self, item: BenchItem, answer: str) -> float:
        """RULER's ``string_match_all`` over the item's gold values, in ``[0, 1]``."""
        return string_match_all(answer, list(item.gold))

    def _draw_needle(self, rng: random.Random, haystack_text: str) -> _Needle:
        while True:
            key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
            if self.variant == "single_3":
                value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                kind = "uuids"
            else:
                value = str(rng.randint(1_000_000, 9_999_999))
                kind = "numbers"
            # The needle must be the only place its key and value occur.
            if key not in haystack_text and value not in haystack_text:
                return _Needle(key=key, value=value, kind=kind)

    def _build(
        self,
        rng: random.Random,
        length: int,
        seed: int,
        index: int,
        depth: int,
        guess: int | None,
    ) -> tuple[BenchItem, int]:
        if self.variant == "single_1":
            needle = self._draw_needle(rng, NOISE_GROUP)
            position_fraction = rng.random()
            context, offset, units, tokens, depth_fraction = _fit_noise(
                needle, position_fraction, length, guess
            )
            source = "noise"
        else:
            essay = self._haystack()
            needle = self._draw_needle(rng, essay.text)
            context, offset, units, tokens, depth_fraction = _fit_essay(
                essay, needle, depth, length, guess
            )
            source = essay.label
        item = BenchItem(
            task=self.name,
            item_id=f"sniah-{self.variant}-L{length}-s{seed}-i{index}",
            context=context,
            question=needle.question,
            gold=[needle.value],
            length=length,
            meta={
                "variant": self.variant,
                "depth": depth_fraction,
                "needle_offset": offset,
                "key": needle.key,
                "haystack": source,
                "prompt_tokens": tokens,
                "tokenizer": TOKENIZER_NAME,
            },
        )
        return item, units


def _fit_noise(
    needle: _Needle, position_fraction: float, length: int, guess: int | None
) -> tuple[str, int, int, int, float]:
    """``(context, needle offset, groups, prompt tokens, depth)`` for the noise haystack."""
    question_tokens = count_tokens(needle.question)
    head = needle.intro + "\n"

    def render(groups: int) -> tuple[str, int, float]:
        slot = int(position_fraction * groups)
        before = (NOISE_GROUP + "\n") * slot
        after = ("\n" + NOISE_GROUP) * (groups - slot)
        return (
            head + before + needle.sentence + after,
            len(head) + len(before),
            slot / max(groups, 1),
        )

    def measure(groups: int) -> int:
        return count_tokens(render(groups)[0]) + question_tokens

    if guess is None:
        per_group = count_tokens(NOISE_GROUP + "\n")
        guess = max(1, (length - measure(0)) // per_group)
    groups, tokens = fit_to_budget(measure, length, guess=guess)
    context, offset, depth = render(groups)
    return context, offset, groups, tokens, depth


def _fit_essay(
    essay: _Essay, needle: _Needle, depth: int, length: int, guess: int | None
) -> tuple[str, int, int, int, float]:
    """``(context, needle offset, words, prompt tokens, depth)`` for an essay haystack."""
    question_tokens = count_tokens(needle.question)
    head = needle.intro + "\n"

    def render(words: int) -> tuple[str, int]:
        starts = essay.sentence_starts(words)
        slot = int(len(starts) * depth / 100)
        cut = starts[slot] if slot < len(starts) else words
        before = essay.span(0, cut)
        after = essay.span(cut, words)
        prefix = head + before + (" " if before else "")
        return prefix + needle.sentence + (" " if after else "") + after, len(prefix)

    def measure(words: int) -> int:
        return count_tokens(render(words)[0]) + question_tokens

    if guess is None:
        guess = max(1, int((length - measure(0)) / essay.tokens_per_word))
    words, tokens = fit_to_budget(measure, length, guess=guess)
    context, offset = render(words)
    return context, offset, words, tokens, depth / 100


_QUESTION_LINE = re.compile(r"\?\s*$")


def load_ruler_jsonl(path: str | Path) -> list[BenchItem]:
    """Items from a RULER ``niah_*`` jsonl file (rows with ``index``, ``input``, ``outputs``,
    ``length``).

    RULER's ``input`` is the whole prompt: instruction, haystack and query. It is kept verbatim
    as the context, so nothing a model would have seen is lost. The question is the query
    sentence: the last of the final three non-empty lines that ends with ``?`` (RULER's templates
    end with the query, sometimes followed by an answer prefix); when no such line exists the
    question is empty and the context alone carries the task. ``length`` is RULER's token count
    of the input; ``gold`` is ``outputs``; other row fields go to ``meta``.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(
            f"cannot read RULER file {str(file)!r}: {error}; check the path"
        ) from None
    items: list[BenchItem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _parse_ruler_row(file, number, line)
        prompt: str = row["input"]
        tail = [text.strip() for text in prompt.splitlines() if text.strip()][-3:]
        question = next((text for text in reversed(tail) if _QUESTION_LINE.search(text)), "")
        extra = {k: v for k, v in row.items() if k not in ("index", "input", "outputs", "length")}
        items.append(
            BenchItem(
                task="sniah",
                item_id=f"sniah-ruler-{file.stem}-{row['index']}",
                context=prompt,
                question=question,
                gold=list(row["outputs"]),
                length=int(row["length"]),
                meta={"source": "ruler", "file": file.name, "index": row["index"], **extra},
            )
        )
    return items


def _parse_ruler_row(file: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{file.name} line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where} is not valid JSON ({error}); is this a RULER jsonl?") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{where} is not a JSON object; RULER rows are objects")
    missing = [k for k in ("index", "input", "outputs", "length") if k not in row]
    if missing:
        raise ConfigError(
            f"{where} lacks {', '.join(missing)}; RULER rows have index, input, outputs, length"
        )
    outputs = row["outputs"]
    if not isinstance(row["input"], str) or not (
        isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)
    ):
        raise ConfigError(f"{where}: input must be a string and outputs a list of strings")
    if not isinstance(row["length"], int):
        raise ConfigError(f"{where}: length must be an integer token count")
    return row
