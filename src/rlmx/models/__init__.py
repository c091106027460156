"""Language models: the ``Model`` interface, the provider registry, the wrappers and the
test doubles.

``get_model("openai:gpt-5-mini")`` resolves a ``"provider:model"`` string through a
registry of factories; :func:`wrap_model` adds the resilience a long run needs (retries,
shared rate limits, fallbacks, a response cache). Set ``ALLOW_MODEL_REQUESTS = False`` to
make every real provider refuse to send a request (the test suite does), loopback servers excepted.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlmx.exceptions import ConfigError, UnknownProviderError
from rlmx.models.base import (
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    estimate_tokens,
)
from rlmx.models.cache import CachedModel, ResponseCache, default_cache_path
from rlmx.models.openai import PRESETS, OpenAIChatModel
from rlmx.models.ratelimit import RateLimit, RateLimitedModel, RateLimiter, shared_limiter
from rlmx.models.test import FunctionModel, ModelCall, ScriptedModel
from rlmx.models.wrappers import FallbackModel, RetryModel, RetryPolicy, WrapperModel, is_outage

__all__ = [
    "ALLOW_MODEL_REQUESTS",
    "CacheOption",
    "CachedModel",
    "FallbackModel",
    "FunctionModel",
    "Message",
    "Model",
    "ModelCall",
    "ModelResponse",
    "ModelSettings",
    "OpenAIChatModel",
    "RateLimit",
    "RateLimitedModel",
    "RateLimiter",
    "ResponseCache",
    "RetryModel",
    "RetryPolicy",
    "ScriptedModel",
    "WrapperModel",
    "default_cache_path",
    "estimate_tokens",
    "get_model",
    "is_outage",
    "known_providers",
    "register_provider",
    "resolve_cache",
    "shared_limiter",
    "wrap_model",
]

ALLOW_MODEL_REQUESTS = True
"""Switch off to make real providers refuse to send requests (loopback servers excepted)."""

ModelFactory = Callable[..., Model]
_REGISTRY: dict[str, ModelFactory] = {}


def register_provider(name: str, factory: ModelFactory) -> None:
    """Make ``"name:model"`` strings resolve through ``factory(model_name, **kwargs)``."""
    _REGISTRY[name] = factory


def known_providers() -> list[str]:
    return sorted(_REGISTRY)


def _openai_factory(provider: str) -> ModelFactory:
    def factory(model_name: str, **kwargs: Any) -> Model:
        return OpenAIChatModel(model_name, provider=provider, **kwargs)

    return factory


for _preset in PRESETS:
    register_provider(_preset, _openai_factory(_preset))


def _lazy_factory(module: str, class_name: str) -> ModelFactory:
    # The SDKs are optional extras: import them only when a model of theirs is asked for.
    def factory(model_name: str, **kwargs: Any) -> Model:
        import importlib

        cls: Callable[..., Model] = getattr(importlib.import_module(module), class_name)
        return cls(model_name, **kwargs)

    return factory


register_provider("anthropic", _lazy_factory("rlmx.models.anthropic", "AnthropicModel"))
register_provider("gemini", _lazy_factory("rlmx.models.gemini", "GeminiModel"))
register_provider("llamacpp", _lazy_factory("rlmx.models.llamacpp", "LlamaCppModel"))


def get_model(spec: str | Model, *, base_url: str | None = None, **kwargs: Any) -> Model:
    """Resolve ``"provider:model"`` (or return a ``Model`` unchanged).

    ``base_url`` points any OpenAI-compatible preset at another server. A bare model
    name with a ``base_url`` means "an OpenAI-compatible server at that URL".
    """
    if isinstance(spec, Model):
        return spec
    spec = spec.strip()
    provider, sep, model_name = spec.partition(":")
    if not sep:
        if base_url is not None and spec:
            provider, model_name = "openai", spec
        else:
            raise ConfigError(
                f"Model {spec!r} has no provider: write it as 'provider:model' "
                f"(e.g. 'openai:{spec or 'gpt-5-mini'}'), or give --base-url for an "
                "OpenAI-compatible server."
            )
    if not model_name:
        raise ConfigError(f"Model {spec!r} names no model after {provider!r}:.")
    factory = _REGISTRY.get(provider)
    if factory is None:
        known = known_providers()
        close = difflib.get_close_matches(provider, known, n=1, cutoff=0.5)
        raise UnknownProviderError(provider, known, close[0] if close else None)
    if base_url is not None:
        kwargs["base_url"] = base_url
    return factory(model_name, **kwargs)


CacheOption = bool | str | os.PathLike[str] | ResponseCache | None


def resolve_cache(cache: CacheOption) -> ResponseCache | None:
    """``True`` -> the default path, a path -> that file, a cache -> itself, falsy -> none."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ResponseCache()
    if isinstance(cache, ResponseCache):
        return cache
    return ResponseCache(Path(cache))


def wrap_model(
    model: Model,
    *,
    retry: RetryPolicy | bool = True,
    rate_limit: RateLimit | None = None,
    shared_limiter: bool = True,
    fallbacks: Sequence[Model] = (),
    cache: ResponseCache | None = None,
) -> Model:
    """``model`` with the resilience a long run needs, outermost first:
    ``CachedModel(FallbackModel([RetryModel(RateLimitedModel(m)) for m in chain]))``.

    Each model of the chain gets its own retries (with ``retry``; ``False`` = none) and
    draws from its provider key's shared rate limiter (``rate_limit`` sets the limits; with
    none, the limiter only spreads 429 pauses). A fallback answers when the models before
    it are unavailable. ``cache`` replays stored replies with zero provider calls.
    ``retry=False, shared_limiter=False`` adds only the fallbacks and the cache.
    """
    policy = None if retry is False else (RetryPolicy() if retry is True else retry)

    def resilient(m: Model) -> Model:
        wrapped: Model = RateLimitedModel(m, rate_limit) if shared_limiter else m
        return RetryModel(wrapped, policy) if policy is not None else wrapped

    chain = [resilient(m) for m in (model, *fallbacks)]
    out: Model = chain[0] if len(chain) == 1 else FallbackModel(chain)
    if cache is not None:
        out = CachedModel(out, cache)
    return out
