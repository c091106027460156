"""S-NIAH generation (RULER single needle), scoring and the RULER jsonl loader."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import sys
from pathlib import Path

import pytest

from rlmx.bench import sniah
from rlmx.bench.base import BenchItem, Task
from rlmx.bench.sniah import DEPTHS, NOISE_GROUP, SniahTask, load_ruler_jsonl
from rlmx.bench.tokens import count_tokens
from rlmx.exceptions import ConfigError

SMALL = 2**13


def _bytes(items: list[BenchItem]) -> bytes:
    return json.dumps([dataclasses.asdict(i) for i in items], sort_keys=True).encode()


def _prompt_tokens(item: BenchItem) -> int:
    assert isinstance(item.context, str)
    return count_tokens(item.context) + count_tokens(item.question)


def _needle(item: BenchItem) -> str:
    kind = "uuids" if item.meta["variant"] == "single_3" else "numbers"
    return f"One of the special magic {kind} for {item.meta['key']} is: {item.gold[0]}."


def test_implements_the_task_protocol() -> None:
    task = SniahTask()
    assert isinstance(task, Task)
    assert task.name == "sniah"


@pytest.mark.parametrize("variant", sniah.VARIANTS)
def test_same_arguments_give_identical_bytes(variant: str) -> None:
    first = SniahTask(variant).items(SMALL, 3, seed=4)
    second = SniahTask(variant).items(SMALL, 3, seed=4)
    assert _bytes(first) == _bytes(second)
    assert [i.item_id for i in first] == [f"sniah-{variant}-L8192-s4-i{k}" for k in range(3)]
    # Item i does not depend on how many items were asked for.
    assert _bytes(SniahTask(variant).items(SMALL, 2, seed=4)) == _bytes(first[:2])


@pytest.mark.parametrize("variant", sniah.VARIANTS)
def test_another_seed_gives_other_items(variant: str) -> None:
    one = SniahTask(variant).items(SMALL, 2, seed=0)
    two = SniahTask(variant).items(SMALL, 2, seed=1)
    assert [i.gold for i in one] != [i.gold for i in two]
    assert [i.context for i in one] != [i.context for i in two]


@pytest.mark.parametrize("variant", sniah.VARIANTS)
@pytest.mark.parametrize("length", [2**13, 2**15])
def test_prompt_length_is_close_to_the_target(variant: str, length: int) -> None:
    for item in SniahTask(variant).items(length, 2, seed=0):
        tokens = _prompt_tokens(item)
        assert 0.97 * length <= tokens <= length
        assert item.meta["prompt_tokens"] == tokens
        assert item.length == length


@pytest.mark.parametrize("variant", sniah.VARIANTS)
def test_needle_once_on_a_sentence_boundary(variant: str) -> None:
    for item in SniahTask(variant).items(SMALL, 6, seed=2):
        context = item.context
        assert isinstance(context, str)
        needle = _needle(item)
        offset = item.meta["needle_offset"]
        assert context.count(needle) == 1
        assert context.index(needle) == offset
        assert context.count(item.gold[0]) == 1
        assert context.count(item.meta["key"]) == 1
        before, after = context[:offset], context[offset + len(needle) :]
        if variant == "single_1":
            assert before.endswith("\n")
            assert after == "" or after.startswith("\n" + NOISE_GROUP)
        else:
            assert before.endswith("\n") or re.search(r"[.!?][\"')\]]* $", before)
            assert after == "" or re.match(r" [\"'(\[]?[A-Z0-9]", after)
        assert context.startswith("Some special magic ")
        assert item.question == (
            f"What is the special magic {'uuid' if variant == 'single_3' else 'number'} for "
            f"{item.meta['key']} mentioned in the provided text?"
        )


def test_values_keys_and_variants() -> None:
    number = SniahTask("single_2").items(SMALL, 1, seed=0)[0]
    assert re.fullmatch(r"[1-9]\d{6}", number.gold[0])
    assert re.fullmatch(r"[a-z]+-[a-z]+", number.meta["key"])
    uuid_item = SniahTask("single_3").items(SMALL, 1, seed=0)[0]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uuid_item.gold[0]
    )
    noise = SniahTask("single_1").items(SMALL, 1, seed=0)[0]
    assert noise.meta["haystack"] == "noise"
    assert isinstance(noise.context, str)
    assert noise.context.count(NOISE_GROUP) > 100
    assert number.meta["haystack"] == "pydoc_data.topics"


def test_essay_depths_are_spread_over_the_grid() -> None:
    items = SniahTask("single_2").items(SMALL, 20, seed=3)
    depths = [i.meta["depth"] for i in items]
    assert all(round(d * 100) in DEPTHS for d in depths)
    assert len(set(depths)) >= 15
    assert min(depths) < 0.15 and max(depths) > 0.85
    offsets = [i.meta["needle_offset"] / len(i.context) for i in items]
    assert min(offsets) < 0.2 and max(offsets) > 0.8


def test_noise_positions_are_random_sentences() -> None:
    items = SniahTask("single_1").items(SMALL, 20, seed=3)
    depths = [i.meta["depth"] for i in items]
    assert len(set(depths)) >= 15
    assert min(depths) < 0.2 and max(depths) > 0.8


def test_scores_follow_string_match_all() -> None:
    task = SniahTask("single_3")
    item = task.items(SMALL, 1, seed=0)[0]
    value = item.gold[0]
    assert task.score(item, f"The special magic uuid is {value.upper()}.") == 1.0
    assert task.score(item, "I could not find it.") == 0.0
    both = dataclasses.replace(item, gold=[value, "1234567"])
    assert task.score(both, f"{value}") == 0.5
    assert task.score(both, f"{value} and 1234567") == 1.0


def test_needle_is_redrawn_when_its_key_or_value_is_in_the_haystack() -> None:
    task = SniahTask("single_2")
    first = task._draw_needle(random.Random(5), "")
    again = task._draw_needle(random.Random(5), f"text mentioning {first.key} already")
    assert again.key != first.key


def test_user_haystack_folder(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("Zebras graze quietly at dawn. " * 40)
    nested = tmp_path / "more"
    nested.mkdir()
    (nested / "a.txt").write_text("Lanterns glow over the harbour. Boats drift home! " * 40)
    task = SniahTask("single_2", haystack_dir=tmp_path)
    items = task.items(2048, 3, seed=0)
    for item in items:
        assert isinstance(item.context, str)
        assert "Lanterns glow" in item.context and "Zebras graze" in item.context
        assert item.meta["haystack"] == str(tmp_path)
        assert 0.95 * 2048 <= _prompt_tokens(item) <= 2048
        assert item.context.count(_needle(item)) == 1
    # The folder's text is read in path order: b.txt before more/a.txt.
    first = items[0].context
    assert isinstance(first, str)
    assert first.index("Zebras") < first.index("Lanterns")


def test_haystack_that_is_one_run_on_sentence(tmp_path: Path) -> None:
    # No sentence boundary anywhere, not even where the text wraps around: the needle can
    # only go at the start or the end of the haystack.
    (tmp_path / "a.txt").write_text("and then it went on " * 30)
    items = SniahTask("single_3", haystack_dir=tmp_path).items(1024, 8, seed=0)
    for item in items:
        assert isinstance(item.context, str)
        head = item.context.split("\n", 1)[1]
        needle = _needle(item)
        assert head.startswith(needle) or head.endswith(needle)


@pytest.mark.parametrize(
    ("files", "message"),
    [({}, "no .txt files"), ({"a.txt": "   \n"}, "holds no text")],
)
def test_bad_haystack_folders(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        SniahTask("single_2", haystack_dir=tmp_path).items(SMALL, 1, seed=0)
    with pytest.raises(ConfigError, match="not a folder"):
        SniahTask("single_2", haystack_dir=tmp_path / "missing").items(SMALL, 1, seed=0)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown S-NIAH variant"):
        SniahTask("multi_1")
    with pytest.raises(ConfigError, match="essay variants"):
        SniahTask("single_1", haystack_dir=".")
    task = SniahTask("single_2")
    with pytest.raises(ConfigError, match="positive token count"):
        task.items(0, 1, seed=0)
    with pytest.raises(ConfigError, match="zero or more"):
        task.items(SMALL, -1, seed=0)
    with pytest.raises(ConfigError, match="too small"):
        task.items(40, 1, seed=0)
    assert task.items(SMALL, 0, seed=0) == []


def test_word_lists_fall_back_without_wonderwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wonderwords", None)
    source, adjectives, nouns = sniah._load_word_lists()
    assert source == "builtin"
    assert len(adjectives) >= 40 and len(nouns) >= 40
    assert all(re.fullmatch(r"[a-z]+", w) for w in adjectives + nouns)


def test_word_lists_come_from_wonderwords_when_installed() -> None:
    if sniah.WORD_LIST_SOURCE != "wonderwords":  # pragma: no cover - package missing
        pytest.skip("wonderwords is not installed")
    assert len(sniah._ADJECTIVES) > 500 and len(sniah._NOUNS) > 5000
    assert all(re.fullmatch(r"[a-z]+", w) for w in sniah._ADJECTIVES + sniah._NOUNS)


def _ruler_row(index: int, prompt: str, outputs: list[str], **extra: object) -> str:
    return json.dumps(
        {"index": index, "input": prompt, "outputs": outputs, "length": 4000, **extra}
    )


def test_ruler_jsonl_loader(tmp_path: Path) -> None:
    query = "What are all the special magic numbers for tame-ox mentioned in the provided text?"
    with_prefix = (
        "Some special magic numbers are hidden within the following text. Make sure to "
        "memorize it.\nThe grass is green. One of the special magic numbers for tame-ox is: "
        f"1234567.\n{query}\n The special magic numbers for tame-ox mentioned in the text are"
    )
    no_question = "Remember this text. The grass is green.\nTell me the number."
    path = tmp_path / "niah_single_1.jsonl"
    path.write_text(
        _ruler_row(0, with_prefix, ["1234567"], answer_prefix=" The special magic")
        + "\n\n"
        + _ruler_row(1, no_question, ["7654321", "1111111"])
        + "\n"
    )
    first, second = load_ruler_jsonl(path)
    assert first.context == with_prefix
    assert first.question == query
    assert first.gold == ["1234567"]
    assert first.length == 4000
    assert first.item_id == "sniah-ruler-niah_single_1-0"
    assert first.meta["answer_prefix"] == " The special magic"
    assert second.question == ""
    assert SniahTask().score(second, "7654321") == 0.5
    assert load_ruler_jsonl(str(path))[0] == first


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"index": 0, "input": "x"}', "lacks outputs, length"),
        ('{"index": 0, "input": 5, "outputs": ["1"], "length": 9}', "input must be a string"),
        ('{"index": 0, "input": "x", "outputs": "1", "length": 9}', "outputs a list"),
        ('{"index": 0, "input": "x", "outputs": ["1"], "length": "9"}', "length must be"),
    ],
)
def test_ruler_jsonl_rejects_bad_rows(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_ruler_row(0, "fine?", ["1"]) + "\n" + line + "\n")
    with pytest.raises(ConfigError, match=f"bad.jsonl line 2.*{message}"):
        load_ruler_jsonl(path)


def test_ruler_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read RULER file"):
        load_ruler_jsonl(tmp_path / "absent.jsonl")
