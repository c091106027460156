"""Where model-written code runs: the ``Sandbox`` interface and its implementations.

``get_sandbox("local")`` runs code in this process (unsafe, trusted code only).
``"isolated"`` — a kernel-confined worker process — is the intended default; until it
ships, asking for it raises a ``SandboxError`` that says how to proceed, rather than
silently running untrusted code in the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlmx.exceptions import ConfigError, SandboxError
from rlmx.sandbox.base import ExecResult, Sandbox, SandboxConfig, SubCallHandler
from rlmx.sandbox.local import LocalSandbox

__all__ = [
    "ExecResult",
    "LocalSandbox",
    "Sandbox",
    "SandboxConfig",
    "SandboxFactory",
    "SubCallHandler",
    "available_sandboxes",
    "get_sandbox",
    "register_sandbox",
]

SandboxFactory = Callable[[SandboxConfig], Sandbox]
_REGISTRY: dict[str, SandboxFactory] = {"local": LocalSandbox}

ISOLATED_UNAVAILABLE = (
    "The isolated sandbox is not available in this version of rlmx. Pass sandbox='local' "
    "(--sandbox local) to run model code in this process — unsafe: only for trusted "
    "models and contexts, the code can read your files and environment."
)


def register_sandbox(kind: str, factory: SandboxFactory) -> None:
    _REGISTRY[kind] = factory


def available_sandboxes() -> list[str]:
    return sorted(_REGISTRY)


def get_sandbox(kind: str, config: SandboxConfig | None = None, **kwargs: Any) -> Sandbox:
    """A new sandbox of ``kind`` (``"local"``; ``"isolated"`` once available)."""
    config = config or SandboxConfig(**kwargs)
    factory = _REGISTRY.get(kind)
    if factory is None:
        if kind == "isolated":
            raise SandboxError(ISOLATED_UNAVAILABLE)
        raise ConfigError(
            f"Unknown sandbox {kind!r}; choose one of: {', '.join(available_sandboxes())}."
        )
    return factory(config)
