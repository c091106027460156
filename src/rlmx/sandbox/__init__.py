"""Where model-written code runs: the ``Sandbox`` interface and its implementations.

``get_sandbox("isolated")`` (the default) runs code in a kernel-confined worker process;
``get_sandbox("local")`` runs it in this process (unsafe, trusted code only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from rlmx.exceptions import ConfigError
from rlmx.sandbox.base import ExecResult, Sandbox, SandboxConfig, SubCallHandler
from rlmx.sandbox.isolated import IsolatedSandbox, IsolationWarning
from rlmx.sandbox.local import LocalSandbox

__all__ = [
    "ExecResult",
    "IsolatedSandbox",
    "IsolationWarning",
    "LocalSandbox",
    "Sandbox",
    "SandboxConfig",
    "SandboxFactory",
    "SubCallHandler",
    "available_sandboxes",
    "get_sandbox",
    "register_sandbox",
]

SandboxFactory = Callable[..., Sandbox]
_REGISTRY: dict[str, SandboxFactory] = {"isolated": IsolatedSandbox, "local": LocalSandbox}
_CONFIG_FIELDS = frozenset(f.name for f in fields(SandboxConfig))


def register_sandbox(kind: str, factory: SandboxFactory) -> None:
    """Make ``get_sandbox(kind)`` call ``factory(config, **options)``."""
    _REGISTRY[kind] = factory


def available_sandboxes() -> list[str]:
    return sorted(_REGISTRY)


def get_sandbox(kind: str, config: SandboxConfig | None = None, **kwargs: Any) -> Sandbox:
    """A new sandbox of ``kind``: ``"isolated"`` (default in ``RLM``) or ``"local"``.

    Keyword arguments naming :class:`SandboxConfig` fields build the config (when none
    is given); the others are the sandbox's own options, e.g. ``memory_mb=`` or
    ``require_isolation=True`` for ``"isolated"``.
    """
    options = {k: v for k, v in kwargs.items() if k not in _CONFIG_FIELDS}
    if config is None:
        config = SandboxConfig(**{k: v for k, v in kwargs.items() if k in _CONFIG_FIELDS})
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise ConfigError(
            f"Unknown sandbox {kind!r}; choose one of: {', '.join(available_sandboxes())}."
        )
    try:
        return factory(config, **options)
    except TypeError as exc:
        raise ConfigError(f"Bad option for the {kind!r} sandbox: {exc}") from None
