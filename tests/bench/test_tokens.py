"""Token counting and fitting text to a token budget."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from rlmx.bench import tokens
from rlmx.exceptions import ConfigError


def test_estimate_is_chars_over_four_rounded_up() -> None:
    assert tokens.estimate_tokens("") == 0
    assert tokens.estimate_tokens("abcd") == 1
    assert tokens.estimate_tokens("abcde") == 2


def test_count_tokens_uses_the_counter_in_force() -> None:
    if tokens.TOKENIZER_NAME == tokens.ENCODING:
        # o200k_base: "hello world" is two tokens, as tiktoken counts it.
        assert tokens.count_tokens("hello world") == 2
    else:  # pragma: no cover - only without bpe-openai
        assert tokens.TOKENIZER_NAME == tokens.ESTIMATE_NAME
        assert tokens.count_tokens("hello world") == 3
    assert tokens.count_tokens("") == 0


def test_bpe_openai_counter_counts_long_texts() -> None:
    if tokens._load_bindings("bpe_openai") is None:  # pragma: no cover - package missing
        pytest.skip("bpe-openai is not installed")
    name, count = tokens._load_counter()
    assert name == "o200k_base"
    # Past the package's public 1M-character limit.
    assert count("word" + " word" * 249_999) == 250_000


def test_falls_back_to_the_estimate_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    name, count = tokens._load_counter("rlmx_tests_no_such_tokenizer")
    assert name == tokens.ESTIMATE_NAME
    assert count("abcdefgh") == 2
    monkeypatch.setattr(tokens, "_counter", count)
    assert tokens.count_tokens("abcdefghi") == 3
    assert tokens.chars_per_token("abcdefgh") == 4.0


def test_falls_back_when_the_package_is_blocked_or_lacks_its_binding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "rlmx_tests_blocked", None)
    assert tokens._load_counter("rlmx_tests_blocked")[0] == tokens.ESTIMATE_NAME
    package = tmp_path / "rlmx_tests_hollow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert tokens._load_counter("rlmx_tests_hollow")[0] == tokens.ESTIMATE_NAME
    assert tokens._load_counter("json")[0] == tokens.ESTIMATE_NAME  # a plain module
    assert tokens._load_counter("rlmx_tests_absent.sub")[0] == tokens.ESTIMATE_NAME


def test_chars_per_token() -> None:
    assert tokens.chars_per_token("") == 4.0
    sample = "The quick brown fox jumps over the lazy dog. " * 20
    assert tokens.chars_per_token(sample) == len(sample) / tokens.count_tokens(sample)


def test_fit_linear_measure_in_few_probes() -> None:
    calls: list[int] = []

    def measure(k: int) -> int:
        calls.append(k)
        return 10 + 3 * k

    assert tokens.fit_to_budget(measure, 100, guess=5) == (30, 100)
    assert tokens.fit_to_budget(measure, 101, guess=1000) == (30, 100)
    assert tokens.fit_to_budget(measure, 102, guess=31) == (30, 100)
    assert len(calls) < 20


def test_fit_matches_brute_force_on_monotone_measures() -> None:
    rng = random.Random(7)
    for _ in range(300):
        steps = [rng.randint(0, 9) for _ in range(400)]
        base = rng.randint(0, 50)
        cumulative = [base]
        for step in steps:
            cumulative.append(cumulative[-1] + step)

        def measure(k: int, table: list[int] = cumulative) -> int:
            return table[min(k, len(table) - 1)] + max(0, k - len(table) + 1) * 5

        budget = rng.randint(base, cumulative[-1] + 100)
        guess = rng.randint(1, 600)
        k, used = tokens.fit_to_budget(measure, budget, guess=guess)
        assert used == measure(k) <= budget
        assert measure(k + 1) > budget


def test_fit_respects_upper_and_lower_bounds() -> None:
    assert tokens.fit_to_budget(lambda k: k, 1000, guess=5, upper=50) == (50, 50)
    assert tokens.fit_to_budget(lambda k: k, 1000, guess=5, lower=7, upper=7) == (7, 7)
    assert tokens.fit_to_budget(lambda k: k, 40, guess=500, lower=3, upper=60) == (40, 40)


def test_fit_rejects_a_budget_below_the_fixed_part() -> None:
    with pytest.raises(ConfigError, match="too small"):
        tokens.fit_to_budget(lambda k: 100 + k, 50, guess=1)


def test_fit_stops_on_units_without_tokens() -> None:
    k, used = tokens.fit_to_budget(lambda k: 5, 10, guess=1)
    assert used == 5
    assert k >= 1
