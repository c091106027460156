"""The one interface every language-model provider implements: ``Model.request``."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from rlmx.usage import RequestUsage

__all__ = [
    "Message",
    "Model",
    "ModelResponse",
    "ModelSettings",
    "estimate_message_tokens",
    "estimate_tokens",
    "messages_to_dicts",
]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def messages_to_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [m.to_dict() for m in messages]


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Sampling and request settings; ``None`` leaves the provider's default."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    timeout_s: float | None = None
    stop: tuple[str, ...] | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Provider-specific fields passed through as they are (e.g. ``reasoning_effort``)."""

    def merged(self, other: ModelSettings | None) -> ModelSettings:
        """``other``'s explicitly set fields win over ``self``'s."""
        if other is None:
            return self
        changes: dict[str, Any] = {}
        for name in ("temperature", "max_tokens", "top_p", "seed", "timeout_s", "stop"):
            value = getattr(other, name)
            if value is not None:
                changes[name] = value
        if other.extra_body:
            changes["extra_body"] = {**self.extra_body, **other.extra_body}
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """What one request returned."""

    text: str
    usage: RequestUsage
    model_name: str
    """The model that answered, as the provider named it (used for pricing)."""
    finish_reason: str | None = None
    answered_by: str | None = None
    """The ``"provider:model"`` name of the model that answered, when it is not the one
    asked (a fallback chain answering with its second model); usage is recorded under it."""


def estimate_tokens(text: str) -> int:
    """A deterministic, tokenizer-free estimate (about four characters a token)."""
    return max(1, (len(text) + 3) // 4)


# Chat templates add a few tokens of framing per message (role markers, separators).
_MESSAGE_OVERHEAD_TOKENS = 4


def estimate_message_tokens(messages: Sequence[Message]) -> int:
    """:func:`estimate_tokens` over a conversation, with per-message framing."""
    return sum(estimate_tokens(m.content) + _MESSAGE_OVERHEAD_TOKENS for m in messages)


class Model(abc.ABC):
    """A language model reachable through one async call.

    Subclasses implement :meth:`request`. ``name`` is the ``"provider:model"`` string the
    user wrote (it labels usage and traces); ``model_name`` is the provider's own id (it
    selects prices).
    """

    name: str
    model_name: str
    context_window: int | None = None
    default_settings: ModelSettings = ModelSettings()

    @abc.abstractmethod
    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        """Send ``messages`` and return the reply with its usage."""

    @property
    def provider(self) -> str:
        """The provider part of :attr:`name` (``"openai"`` for ``"openai:gpt-5"``)."""
        return self.name.partition(":")[0]

    @property
    def rate_limit_key(self) -> str:
        """Which shared rate limiter this model's requests draw from.

        Providers limit per account (API key) and endpoint, so models that share both share
        one limiter. Subclasses holding a key include a digest of it, never the key.
        """
        return self.provider

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """How many prompt tokens ``messages`` will take: an estimate unless the model has
        its own tokenizer at hand (the embedded llama.cpp model counts exactly)."""
        return estimate_message_tokens(messages)

    def answering_model(self, name: str | None) -> Model:
        """The model called ``name`` inside this one (a fallback chain's member), else self.

        Usage and cost of a response are filed under ``answering_model(response.answered_by)``.
        """
        return self

    def cost_of(self, usage: RequestUsage, response_model: str | None = None) -> Decimal | None:
        """USD cost of one request, from the price table; ``None`` when the price is unknown.

        ``response_model`` is the model id the provider reported (often a dated snapshot).
        """
        from rlmx.pricing import cost_of

        cost = cost_of(response_model, usage) if response_model else None
        return cost if cost is not None else cost_of(self.model_name, usage)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most models hold nothing
        """Release network resources. Safe to call more than once."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
