"""Model prices, so a run's token usage can be turned into US dollars.

The prices live in ``prices.json`` next to this module (USD per 1M tokens, decimal
strings, each with the pricing page it came from and the date it was valid). They are
read once, on first use. All arithmetic is :class:`decimal.Decimal`; no float is
involved anywhere, so costs add up exactly.

Model names are resolved leniently but never by loose prefix, in this order:

1. the name exactly as given;
2. lowercased (and stripped of surrounding whitespace);
3. without a provider prefix: ``openai:gpt-5``, ``openai/gpt-5``, ``models/gemini-2.5-pro``;
4. without a dated snapshot suffix: ``gpt-5-mini-2025-08-07``,
   ``claude-sonnet-4-5-20250929``, ``claude-sonnet-4-5@20250929``, or ``-latest``;
5. Anthropic's dot style: ``claude-sonnet-4.5`` -> ``claude-sonnet-4-5``.

Each step builds on the previous one, and the first name found in the table wins.
``gpt-5`` never prices ``gpt-5-mini-foo``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import cache
from importlib.resources import files
from typing import Any

from rlmx.usage import RequestUsage

__all__ = [
    "ModelPrice",
    "context_window",
    "cost_of",
    "known_models",
    "price_for",
    "prices_updated",
]

_PER_TOKENS = 1_000_000
_PROVIDER_PREFIX = re.compile(r"^[a-z0-9_.-]+:(?=.)")
_SNAPSHOT_SUFFIX = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest)$")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs, in USD per 1M tokens."""

    model: str
    """Canonical model id, as the provider names it (the key in ``prices.json``)."""
    provider: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    """Price of input tokens served from the provider's prompt cache; ``None`` if no discount."""
    cache_write: Decimal | None
    """Price of input tokens written to the prompt cache; ``None``: the input price."""
    long_context_threshold: int | None
    """Above this many input tokens in one request, the ``long_*`` prices apply."""
    long_input: Decimal | None
    long_output: Decimal | None
    long_cached_input: Decimal | None
    long_cache_write: Decimal | None
    source: str
    """The pricing page the numbers came from."""
    date: str
    """When the price was published or known to be valid (``YYYY-MM-DD``)."""
    context_window: int | None


def _price(entry: Mapping[str, Any], key: str, model: str, *, required: bool) -> Decimal | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise ValueError(f"prices.json: {model!r} has no {key!r} price")
        return None
    if not isinstance(value, str):
        raise ValueError(f"prices.json: {model!r} {key!r} must be a decimal string, not {value!r}")
    return Decimal(value)


def _required(entry: Mapping[str, Any], key: str, model: str) -> Decimal:
    value = _price(entry, key, model, required=True)
    assert value is not None
    return value


def _parse(model: str, entry: Mapping[str, Any]) -> ModelPrice:
    long: Mapping[str, Any] = entry.get("long_context") or {}
    threshold = long.get("threshold_tokens")
    window = entry.get("context_window")
    return ModelPrice(
        model=model,
        provider=str(entry["provider"]),
        input=_required(entry, "input", model),
        output=_required(entry, "output", model),
        cached_input=_price(entry, "cached_input", model, required=False),
        cache_write=_price(entry, "cache_write", model, required=False),
        long_context_threshold=None if threshold is None else int(threshold),
        long_input=_price(long, "input", model, required=bool(long)),
        long_output=_price(long, "output", model, required=bool(long)),
        long_cached_input=_price(long, "cached_input", model, required=False),
        long_cache_write=_price(long, "cache_write", model, required=False),
        source=str(entry["source"]),
        date=str(entry["date"]),
        context_window=None if window is None else int(window),
    )


@dataclass(frozen=True, slots=True)
class _Table:
    updated: str
    prices: dict[str, ModelPrice]
    """By canonical id."""
    index: dict[str, ModelPrice]
    """By canonical id, its lowercase form, and any listed aliases."""


@cache
def _table() -> _Table:
    text = files("rlmx.pricing").joinpath("prices.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    prices = {name: _parse(name, entry) for name, entry in raw["models"].items()}
    index: dict[str, ModelPrice] = {}
    for name, price in prices.items():
        index[name] = price
        index.setdefault(name.lower(), price)
        for alias in raw["models"][name].get("aliases", ()):
            index.setdefault(str(alias).lower(), price)
    return _Table(updated=str(raw["updated"]), prices=prices, index=index)


def _candidates(model_name: str) -> Iterator[str]:
    """Names to look up for ``model_name``, most literal first (see the module docstring)."""
    yield model_name
    name = model_name.strip().lower()
    yield name
    while True:  # provider prefixes can nest: "openrouter/openai/gpt-5", "litellm:openai/gpt-5"
        stripped = _PROVIDER_PREFIX.sub("", name.rsplit("/", 1)[-1])
        if stripped == name:
            break
        name = stripped
        yield name
    name = _SNAPSHOT_SUFFIX.sub("", name)
    yield name
    if name.startswith("claude"):
        yield name.replace(".", "-")


def price_for(model_name: str) -> ModelPrice | None:
    """The price of ``model_name``, or ``None`` if it is not in the table."""
    index = _table().index
    for candidate in _candidates(model_name):
        price = index.get(candidate)
        if price is not None:
            return price
    return None


def cost_of(model_name: str, usage: RequestUsage) -> Decimal | None:
    """What one request cost in USD, exactly; ``None`` if the model's price is unknown.

    Cached input tokens (part of ``usage.input_tokens``) are charged at the cached-input
    price, or at the input price when the model has no cache discount; cache-write tokens
    (also part of it) at the cache-write price, or the input price when none is listed.
    When the request's input exceeds the model's long-context threshold, the long-context
    prices apply to the whole request. A response served from the local response cache cost nothing.
    """
    price = price_for(model_name)
    if price is None:
        return None
    if usage.cached_response:
        return Decimal(0)
    in_price, out_price, cached_price = price.input, price.output, price.cached_input
    write_price = price.cache_write
    threshold = price.long_context_threshold
    if threshold is not None and usage.input_tokens > threshold:
        in_price = price.long_input if price.long_input is not None else in_price
        out_price = price.long_output if price.long_output is not None else out_price
        cached_price = price.long_cached_input
        write_price = price.long_cache_write
    if cached_price is None:
        cached_price = in_price
    if write_price is None:
        write_price = in_price
    cached = usage.cached_input_tokens
    written = usage.cache_write_tokens
    plain = max(usage.input_tokens - cached - written, 0)
    with localcontext() as ctx:
        ctx.prec = 60  # far beyond any real token count, so nothing is ever rounded
        total = (
            plain * in_price
            + cached * cached_price
            + written * write_price
            + usage.output_tokens * out_price
        )
        return total / _PER_TOKENS


def prices_updated() -> str:
    """When ``prices.json`` was last revised (``YYYY-MM-DD``)."""
    return _table().updated


def known_models() -> list[str]:
    """Canonical ids of every priced model, sorted."""
    return sorted(_table().prices)


def context_window(model_name: str) -> int | None:
    """The model's context window in tokens, if known."""
    price = price_for(model_name)
    return None if price is None else price.context_window
