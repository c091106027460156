"""Token counting for the benchmark generators, and fitting generated text to a token budget.

Lengths in the benchmarks are token counts. When the ``bpe-openai`` package is installed its Rust
tokenizer (which ships the ``o200k_base`` merge table, so it works offline and counts exactly
what tiktoken counts) is used; otherwise the count is a documented estimate of one token per four
characters, rounded up. :data:`TOKENIZER_NAME` says which one is in force, so a report can state
how its lengths were measured.

:func:`fit_to_budget` finds how many units of text (words, sentence groups, files...) fit under a
token budget with a handful of exact counts, instead of re-tokenising a growing text once per unit.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from rlmx.exceptions import ConfigError

__all__ = [
    "ESTIMATE_NAME",
    "TOKENIZER_NAME",
    "chars_per_token",
    "count_tokens",
    "estimate_tokens",
    "fit_to_budget",
]

ENCODING = "o200k_base"
"""The encoding used when ``bpe-openai`` is available (GPT-4o / GPT-5 family)."""

ESTIMATE_NAME = "chars/4 estimate"
""":data:`TOKENIZER_NAME` when no tokenizer package is installed."""

_MAX_PROBES = 64


def estimate_tokens(text: str) -> int:
    """One token per four characters, rounded up: the fallback when no tokenizer is installed."""
    return (len(text) + 3) // 4


def _load_bindings(package: str) -> ModuleType | None:
    """The Rust extension module of ``bpe-openai``, loaded without running its package.

    The package's ``__init__`` decodes every merge table in Python (most of a second, with a
    DeprecationWarning) and its public ``Encoding`` refuses inputs over 1M characters or 200K
    tokens; the extension alone counts any length and carries its own tables.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_bindings{suffix}"
            extension = importlib.util.spec_from_file_location(f"{package}._bindings", path)
            if not path.is_file() or extension is None or extension.loader is None:
                continue
            module = importlib.util.module_from_spec(extension)
            extension.loader.exec_module(module)
            return module
    return None


def _load_counter(package: str = "bpe_openai") -> tuple[str, Callable[[str], int]]:
    """The best offline counter available: ``(name, count function)``."""
    bindings = _load_bindings(package)
    if bindings is None:
        return ESTIMATE_NAME, estimate_tokens
    tokenizer = bindings.tokenizer_for_encoding(ENCODING)

    def count(text: str) -> int:
        return int(tokenizer.count(text))

    return ENCODING, count


TOKENIZER_NAME, _counter = _load_counter()


def count_tokens(text: str) -> int:
    """The number of tokens in ``text`` under :data:`TOKENIZER_NAME`."""
    return _counter(text)


def chars_per_token(sample: str) -> float:
    """Characters per token measured on ``sample`` (4.0 for an empty sample)."""
    tokens = count_tokens(sample)
    if not sample or tokens == 0:
        return 4.0
    return len(sample) / tokens


def fit_to_budget(
    measure: Callable[[int], int],
    budget: int,
    *,
    guess: int,
    lower: int = 0,
    upper: int | None = None,
) -> tuple[int, int]:
    """The largest unit count ``k`` in ``[lower, upper]`` whose ``measure(k)`` is ``<= budget``.

    ``measure(k)`` is the exact token count of the text built from ``k`` units; it must grow
    with ``k`` (small wobbles are tolerated: the answer is always a measured fit). ``guess`` is
    the caller's estimate, e.g. from :func:`chars_per_token`. Counts are nearly linear in ``k``,
    so interpolating between a fitting and an overflowing count lands within a unit or two of the
    answer; a bisection step whenever interpolation stops halving the interval bounds the worst
    case. Returns ``(k, measure(k))``.
    """
    base_tokens = measure(lower)
    if base_tokens > budget:
        raise ConfigError(
            f"a target of {budget} tokens is too small: the fixed parts alone take "
            f"{base_tokens} tokens; ask for a larger length"
        )
    if upper is not None and upper <= lower:
        return lower, base_tokens
    fit, fit_tokens = lower, base_tokens
    over: int | None = None
    over_tokens = 0
    probe = max(guess, lower + 1)
    for _ in range(_MAX_PROBES):
        if upper is not None:
            probe = min(probe, upper)
        if over is not None and over - fit <= 1:
            break
        previous_gap = None if over is None else over - fit
        tokens = measure(probe)
        if tokens <= budget:
            fit, fit_tokens = probe, tokens
            if tokens == budget or probe == upper:
                break
        else:
            over, over_tokens = probe, tokens
        if over is None:
            probe = _extrapolate(fit, fit_tokens, lower, base_tokens, budget)
            continue
        gap = over - fit
        if previous_gap is not None and gap * 2 > previous_gap:
            probe = fit + gap // 2
        else:
            step = (budget - fit_tokens) * gap / max(over_tokens - fit_tokens, 1)
            probe = fit + int(step)
        probe = min(max(probe, fit + 1), over - 1)
    return fit, fit_tokens


def _extrapolate(fit: int, fit_tokens: int, lower: int, base_tokens: int, budget: int) -> int:
    """The next probe beyond ``fit`` while no overflowing count is known yet."""
    grown = fit - lower
    if grown <= 0 or fit_tokens <= base_tokens:
        # No growth measured yet (or units without tokens): double to find an upper bound.
        return max(2 * fit, fit + 1)
    per_unit = (fit_tokens - base_tokens) / grown
    # Aim a little past the budget so the next count brackets the answer.
    return fit + max(1, math.ceil((budget - fit_tokens) / per_unit * 1.02) + 1)
