"""Public test doubles of rlmx: a loopback OpenAI-compatible server for tests and benchmarks."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlmx.testing.mock_server import (
        Handler,
        MockOpenAIServer,
        MockReply,
        MockRequest,
        estimate_message_tokens,
        estimate_tokens,
    )

__all__ = [
    "Handler",
    "MockOpenAIServer",
    "MockReply",
    "MockRequest",
    "estimate_message_tokens",
    "estimate_tokens",
]


def __getattr__(name: str) -> Any:
    # Imported lazily so `python -m rlmx.testing.mock_server` does not find its own module
    # already imported by this package (runpy warns about that on stderr).
    if name in __all__:
        return getattr(importlib.import_module("rlmx.testing.mock_server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
