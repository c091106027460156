"""Tests for rlmx.pricing: the price table, model-name resolution and cost arithmetic."""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from importlib.resources import files
from typing import Any

import pytest

from rlmx.pricing import (
    ModelPrice,
    context_window,
    cost_of,
    known_models,
    price_for,
    prices_updated,
)
from rlmx.usage import RequestUsage


def _raw() -> dict[str, Any]:
    resource = files("rlmx.pricing").joinpath("prices.json")
    data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return data


# --- the data file -------------------------------------------------------------------


def test_package_resource_is_found() -> None:
    resource = files("rlmx.pricing").joinpath("prices.json")
    assert resource.is_file()
    assert _raw()["models"]


def test_top_level_fields() -> None:
    raw = _raw()
    assert raw["currency"] == "USD"
    assert raw["unit"] == "per 1M tokens"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw["updated"])
    date.fromisoformat(raw["updated"])
    assert prices_updated() == raw["updated"]


def _price_fields(entry: dict[str, Any]) -> list[str]:
    return [k for k in ("input", "output", "cached_input", "cache_write") if k in entry]


@pytest.mark.parametrize("model", sorted(_raw()["models"]))
def test_every_entry_is_complete(model: str) -> None:
    entry = _raw()["models"][model]
    assert entry["provider"] in {"openai", "anthropic", "google"}
    for key in ("input", "output", "source", "date"):
        assert key in entry, f"{model} lacks {key}"
    assert entry["source"].startswith("https://")
    date.fromisoformat(entry["date"])
    for key in _price_fields(entry):
        value = entry[key]
        assert isinstance(value, str), f"{model}.{key} must be a string, not a float"
        assert Decimal(value) >= 0
    assert Decimal(entry["output"]) >= Decimal(entry["input"])
    if "cached_input" in entry:
        assert Decimal(entry["cached_input"]) <= Decimal(entry["input"])
    window = entry.get("context_window")
    assert window is None or (isinstance(window, int) and window > 0)
    long = entry.get("long_context")
    if long is not None:
        assert isinstance(long["threshold_tokens"], int)
        assert "input" in long
        assert "output" in long
        for key in _price_fields(long):
            assert isinstance(long[key], str)
        assert Decimal(long["input"]) >= Decimal(entry["input"])
        assert Decimal(long["output"]) >= Decimal(entry["output"])


def test_required_models_are_covered() -> None:
    required = {
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4o",
        "gpt-4o-mini",
        "o3",
        "o4-mini",
        "claude-opus-4-5",
        "claude-opus-4-1",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-5-haiku",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    }
    assert required <= set(known_models())


def test_known_models_sorted_and_match_file() -> None:
    models = known_models()
    assert models == sorted(models)
    assert set(models) == set(_raw()["models"])


def test_price_for_parses_decimals() -> None:
    p = price_for("gpt-5-mini")
    assert isinstance(p, ModelPrice)
    assert p.model == "gpt-5-mini"
    assert p.provider == "openai"
    assert p.input == Decimal("0.25")
    assert p.output == Decimal("2.00")
    assert p.cached_input == Decimal("0.025")
    assert p.long_context_threshold is None
    assert p.long_input is p.long_output is p.long_cached_input is None
    assert p.context_window == 400000
    assert p.source.startswith("https://")

    g = price_for("gemini-2.5-pro")
    assert g is not None
    assert g.long_context_threshold == 200000
    assert g.long_input == Decimal("2.50")
    assert g.long_output == Decimal("15.00")
    assert g.long_cached_input == Decimal("0.25")


def test_every_known_model_resolves_to_itself() -> None:
    for model in known_models():
        price = price_for(model)
        assert price is not None
        assert price.model == model


# --- name resolution -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # exact
        ("gpt-5-mini", "gpt-5-mini"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        # lowercase / whitespace
        ("GPT-5-Mini", "gpt-5-mini"),
        ("  Gemini-2.5-Pro ", "gemini-2.5-pro"),
        # provider prefix
        ("openai:gpt-5", "gpt-5"),
        ("anthropic:claude-haiku-4-5", "claude-haiku-4-5"),
        ("google-gla:gemini-2.5-flash", "gemini-2.5-flash"),
        # OpenRouter-style vendor prefix
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("anthropic/claude-opus-4-1", "claude-opus-4-1"),
        ("google/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("openrouter/openai/o4-mini", "o4-mini"),
        # dated snapshot suffixes
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("o3-2025-04-16", "o3"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        # Anthropic dot style
        ("claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("claude-opus-4.5", "claude-opus-4-5"),
        ("claude-3.5-haiku", "claude-3-5-haiku"),
        # rules combined
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("OpenAI:GPT-5-Nano-2025-08-07", "gpt-5-nano"),
        # aliases listed in the data file
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        # an exact entry beats snapshot stripping
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
    ],
)
def test_name_resolution(name: str, expected: str) -> None:
    price = price_for(name)
    assert price is not None, name
    assert price.model == expected


@pytest.mark.parametrize(
    "name",
    [
        "gpt-5-mini-foo",  # never a loose prefix match to gpt-5-mini or gpt-5
        "gpt-5-foo",
        "gpt-5x",
        "o3-pro",
        "claude-sonnet",
        "gemini-2.5",
        "gpt-5-chat-latest",
        "some-local-model",
        "",
        "openai:",
        "openai/",
    ],
)
def test_unknown_names(name: str) -> None:
    assert price_for(name) is None
    assert context_window(name) is None
    assert cost_of(name, RequestUsage(input_tokens=1000, output_tokens=10)) is None


def test_dots_only_normalised_for_claude() -> None:
    # gpt-4.1 contains a dot that must be kept, and gpt-4-1 is not a model name
    assert price_for("gpt-4-1") is None
    p = price_for("gpt-4.1")
    assert p is not None
    assert p.model == "gpt-4.1"


def test_context_window() -> None:
    assert context_window("gpt-4.1") == 1047576
    assert context_window("openai/gpt-4o-mini-2024-07-18") == 128000
    assert context_window("gemini-2.5-flash") == 1048576
    assert context_window("claude-haiku-4-5-20251001") == 200000


# --- cost arithmetic -----------------------------------------------------------------


def test_cost_plain() -> None:
    # gpt-5-mini: $0.25 in, $2.00 out per 1M.
    # 1,000,000 * 0.25 + 200,000 * 2.00 = 250,000 + 400,000 -> / 1M = 0.65
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=200_000)
    assert cost_of("gpt-5-mini", usage) == Decimal("0.65")


def test_cost_small_is_exact() -> None:
    # gpt-5-nano: 1 input token at $0.05/M plus 1 output token at $0.40/M = $0.00000045
    cost = cost_of("gpt-5-nano", RequestUsage(input_tokens=1, output_tokens=1))
    assert cost == Decimal("0.00000045")
    assert isinstance(cost, Decimal)


def test_cost_cached_discount() -> None:
    # claude-sonnet-4-5: $3 in, $0.30 cached, $15 out.
    # 10,000 input of which 8,000 cached, 1,000 output:
    # 2,000 * 3 + 8,000 * 0.30 + 1,000 * 15 = 6,000 + 2,400 + 15,000 = 23,400 -> 0.0234
    usage = RequestUsage(input_tokens=10_000, output_tokens=1_000, cached_input_tokens=8_000)
    assert cost_of("claude-sonnet-4-5", usage) == Decimal("0.0234")


def test_cost_reasoning_tokens_are_part_of_output() -> None:
    # o3: $2 in, $8 out. Reasoning tokens are already in output_tokens: no extra charge.
    plain = RequestUsage(input_tokens=1_000, output_tokens=5_000)
    reasoning = RequestUsage(input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_000)
    assert cost_of("o3", plain) == cost_of("o3", reasoning) == Decimal("0.042")


def test_cost_without_cached_price_charges_input_price() -> None:
    # gpt-4o-2024-05-13 has no cached-input price: cached tokens cost the full $5/M.
    usage = RequestUsage(input_tokens=100_000, output_tokens=0, cached_input_tokens=60_000)
    assert cost_of("gpt-4o-2024-05-13", usage) == Decimal("0.5")


def test_cost_long_context_tier() -> None:
    # gemini-2.5-pro above 200K input: $2.50 in, $0.25 cached, $15 out for the whole request.
    # 300,000 input (100,000 cached), 10,000 output:
    # 200,000 * 2.50 + 100,000 * 0.25 + 10,000 * 15 = 500,000 + 25,000 + 150,000 -> 0.675
    usage = RequestUsage(input_tokens=300_000, output_tokens=10_000, cached_input_tokens=100_000)
    assert cost_of("gemini-2.5-pro", usage) == Decimal("0.675")


def test_cost_long_context_threshold_is_exclusive() -> None:
    # exactly 200,000 input tokens is still the standard tier: 200,000 * 1.25 -> 0.25
    at = RequestUsage(input_tokens=200_000)
    assert cost_of("gemini-2.5-pro", at) == Decimal("0.25")
    # one more token switches the whole request: 200,001 * 2.50 -> 0.5000025
    above = RequestUsage(input_tokens=200_001)
    assert cost_of("gemini-2.5-pro", above) == Decimal("0.5000025")


def test_cost_long_context_anthropic() -> None:
    # claude-sonnet-4-5 above 200K: $6 in, $0.60 cached, $22.50 out.
    # 250,000 input (50,000 cached), 2,000 output:
    # 200,000 * 6 + 50,000 * 0.60 + 2,000 * 22.50 = 1,200,000 + 30,000 + 45,000 -> 1.275
    usage = RequestUsage(input_tokens=250_000, output_tokens=2_000, cached_input_tokens=50_000)
    assert cost_of("anthropic/claude-sonnet-4.5", usage) == Decimal("1.275")


def test_cost_model_without_long_tier_ignores_size() -> None:
    # gpt-4.1 has one price for its whole 1M window: 900,000 * 2.00 -> 1.8
    assert cost_of("gpt-4.1", RequestUsage(input_tokens=900_000)) == Decimal("1.8")


def test_cost_cached_response_is_free() -> None:
    usage = RequestUsage(input_tokens=50_000, output_tokens=5_000, cached_response=True)
    cost = cost_of("claude-opus-4-5", usage)
    assert cost == Decimal(0)
    assert isinstance(cost, Decimal)


def test_cost_unknown_model_is_none_and_silent(recwarn: pytest.WarningsRecorder) -> None:
    assert cost_of("mystery-model-9000", RequestUsage(input_tokens=10, output_tokens=10)) is None
    assert len(recwarn) == 0


def test_cost_zero_usage() -> None:
    assert cost_of("gpt-4o", RequestUsage()) == Decimal(0)


def test_cost_never_negative_when_cached_exceeds_input() -> None:
    # A provider reporting more cached than total input tokens must not yield a negative cost.
    usage = RequestUsage(input_tokens=100, cached_input_tokens=200)
    cost = cost_of("gpt-4o-mini", usage)
    assert cost is not None
    assert cost >= 0


def test_cost_resolves_names_like_price_for() -> None:
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    # claude-haiku-4-5: $1 + $5
    assert cost_of("claude-haiku-4-5-20251001", usage) == Decimal("6")
    assert cost_of("anthropic/claude-haiku-4.5", usage) == Decimal("6")


def test_malformed_entries_are_rejected() -> None:
    from rlmx.pricing import _parse

    base = {"provider": "openai", "source": "https://example.com", "date": "2025-01-01"}
    with pytest.raises(ValueError, match="no 'output' price"):
        _parse("m", {**base, "input": "1.00"})
    with pytest.raises(ValueError, match="decimal string"):
        _parse("m", {**base, "input": 1.0, "output": "2.00"})
    with pytest.raises(ValueError, match="no 'input' price"):
        _parse("m", {**base, "input": "1", "output": "2", "long_context": {"output": "3"}})
    parsed = _parse("m", {**base, "input": "1", "output": "2"})
    assert parsed.cached_input is None
    assert parsed.context_window is None


def test_cache_writes_are_charged_at_the_cache_write_price() -> None:
    # claude-opus-4-5: input 5.00, cached 0.50, cache write 6.25, output 25.00 per 1M.
    usage = RequestUsage(
        input_tokens=1_000_000 + 200_000 + 300_000,
        cached_input_tokens=200_000,
        cache_write_tokens=300_000,
        output_tokens=100_000,
    )
    expected = Decimal("5.00") + Decimal("0.10") + Decimal("1.875") + Decimal("2.50")
    assert cost_of("claude-opus-4-5", usage) == expected


def test_cache_writes_without_a_listed_price_cost_the_input_price() -> None:
    usage = RequestUsage(input_tokens=1_000_000, cache_write_tokens=1_000_000)
    assert cost_of("gpt-4.1", usage) == cost_of("gpt-4.1", RequestUsage(input_tokens=1_000_000))
