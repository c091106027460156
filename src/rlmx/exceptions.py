"""Every error rlmx raises, in one tree.

::

    RLMError                      base of everything rlmx raises
    ├── UserError                 the caller's mistake: bad arguments, config, input
    │   ├── ConfigError           missing API key, invalid limits, bad option values
    │   ├── UnknownProviderError  "provider:model" names a provider nobody registered
    │   ├── MissingExtraError     a provider's optional package is not installed (also ImportError)
    │   └── ContextError          a context path that does not exist, an unsupported value
    ├── ModelError                something went wrong talking to a model
    │   ├── ModelAPIError         the provider answered with an error (status, body)
    │   │   └── ContextLengthError  the prompt does not fit the model's context window
    │   ├── ModelConnectionError  the endpoint could not be reached or timed out
    │   ├── ModelResponseError    the provider answered with something unusable
    │   ├── ModelRequestsDisabled a real provider was called while requests are switched off
    │   └── ScriptExhausted       a ScriptedModel ran out of replies
    ├── SandboxError              the sandbox could not start or died unrecoverably
    └── LimitExceeded             a budget ran out (raised only in strict mode)

Vendor exceptions (``openai.RateLimitError`` and friends) are translated at the model
boundary and never leak out of ``rlmx.models``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlmx.result import RLMResult

__all__ = [
    "ConfigError",
    "ContextError",
    "ContextLengthError",
    "LimitExceeded",
    "MissingExtraError",
    "ModelAPIError",
    "ModelConnectionError",
    "ModelError",
    "ModelRequestsDisabled",
    "ModelResponseError",
    "RLMError",
    "SandboxError",
    "ScriptExhausted",
    "UnknownProviderError",
    "UserError",
]


class RLMError(Exception):
    """Base class of every error raised by rlmx.

    When a run fails part-way, ``result`` holds what it had spent and found so far.
    """

    result: RLMResult | None = None


class UserError(RLMError):
    """The caller asked for something that cannot work; the message says what to change."""


class ConfigError(UserError):
    """Configuration is missing or invalid (API key, limits, options)."""


class UnknownProviderError(ConfigError):
    """A ``"provider:model"`` string names a provider that is not registered."""

    def __init__(self, provider: str, known: list[str], suggestion: str | None) -> None:
        self.provider = provider
        self.known = known
        self.suggestion = suggestion
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"Unknown model provider {provider!r}.{hint} Known providers: {', '.join(known)}. "
            "Write models as 'provider:model', e.g. 'openai:gpt-5-mini'."
        )


class MissingExtraError(ConfigError, ImportError):
    """A provider needs an optional package; the message names the extra to install."""

    def __init__(self, provider: str, extra: str, package: str) -> None:
        self.provider = provider
        self.extra = extra
        super().__init__(
            f'The {provider!r} provider needs the {package!r} package: pip install "rlmx[{extra}]"'
        )


class ContextError(UserError):
    """A context could not be loaded (missing path, unsupported value)."""


class ModelError(RLMError):
    """A model could not produce a reply.

    ``model`` is the ``"provider:model"`` name; ``attempts`` how many requests were made
    before giving up (the retry wrapper sets it); ``retry_after_s`` is the wait the provider
    asked for, when it said (``Retry-After``).
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.model = model
        self.retry_after_s = retry_after_s
        self.attempts = attempts
        super().__init__(message)

    @property
    def provider(self) -> str | None:
        """The provider part of ``model`` (``"openai"`` for ``"openai:gpt-5"``)."""
        if self.model is None:
            return None
        return self.model.partition(":")[0]


class ModelAPIError(ModelError):
    """The provider answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = None,
        body: Any = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.body = body
        super().__init__(message, model=model, retry_after_s=retry_after_s, attempts=attempts)


class ContextLengthError(ModelAPIError):
    """The prompt is larger than the model's context window (refused by the provider, or
    before sending by the pre-flight size check). Retrying cannot help; splitting can.

    ``prompt_tokens`` and ``context_window`` are filled in when known.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int | None = 400,
        body: Any = None,
        prompt_tokens: int | None = None,
        context_window: int | None = None,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window
        super().__init__(message, model=model, status=status, body=body)


class ModelConnectionError(ModelError):
    """The provider's endpoint could not be reached, or it did not answer in time."""


class ModelResponseError(ModelError):
    """The provider answered, but the reply could not be used (no choices, bad JSON)."""


class ModelRequestsDisabled(ModelError):
    """A real provider was asked for a completion while ``ALLOW_MODEL_REQUESTS`` is off."""


class ScriptExhausted(ModelError):
    """A :class:`~rlmx.models.ScriptedModel` was asked for more replies than it was given."""


class SandboxError(RLMError):
    """The sandbox could not be started, or failed in a way the run cannot recover from."""


class LimitExceeded(RLMError):
    """A budget of :class:`~rlmx.Limits` ran out and the caller asked for strict mode.

    ``limit`` names the field of ``Limits`` (``"max_cost_usd"``), ``value`` is what was
    reached, and ``result`` carries the partial result, so nothing is lost.
    """

    def __init__(
        self, message: str, *, limit: str, value: Any, result: RLMResult | None = None
    ) -> None:
        self.limit = limit
        self.value = value
        self.result = result
        super().__init__(message)
