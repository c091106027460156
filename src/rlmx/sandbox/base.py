"""The ``Sandbox`` interface: where model-written code runs, and how it calls back.

A sandbox is an async context manager holding one persistent REPL. It is designed for
an out-of-process implementation: everything crossing it is plain data (strings, JSON),
and sub-calls made by the code (``llm_query`` and friends) come back to the host
through a :class:`SubCallHandler`, which the engine implements.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["ExecResult", "Sandbox", "SandboxConfig", "SubCallHandler"]


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What one cell did."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    """A short traceback of the exception the cell raised, written for the model."""
    final: str | None = None
    """The answer given by ``FINAL(...)`` / ``FINAL_VAR(...)``, if the cell gave one."""
    timed_out: bool = False
    duration_s: float = 0.0
    truncated_chars: int = 0
    """How many characters of stdout+stderr were dropped to respect ``max_output_chars``."""
    restarted: bool = False
    """The REPL had to be replaced (hard kill or crash): its variables are gone."""
    lost_variables: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain JSON-able values (the trace's ``cell_executed`` payload)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["duration_s"] = round(self.duration_s, 6)
        out["lost_variables"] = list(self.lost_variables)
        return out


class SubCallHandler(Protocol):
    """The host side of the REPL's sub-call functions (implemented by the engine).

    Each failed prompt yields an error string in its own slot; order is preserved.
    """

    async def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]: ...

    async def rlm_query_batched(
        self, prompts: list[str], contexts: list[Any] | None
    ) -> list[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxConfig:
    """How a sandbox is set up for one run."""

    handler: SubCallHandler | None = None
    """Sub-call routing; ``None`` (depth 0) exposes no sub-call function at all."""
    cell_timeout_s: float | None = 120.0
    max_output_chars: int = 20_000


class Sandbox(abc.ABC):
    """A persistent REPL. Use as ``async with`` or call :meth:`aclose` when done."""

    kind: str = "abstract"
    isolated: bool = False
    """True when the code cannot reach the host process's memory, files or secrets."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config

    @abc.abstractmethod
    async def load_context(self, value: Any) -> None:
        """Make ``value`` available as the ``context`` variable (read once, never re-sent)."""

    @abc.abstractmethod
    async def execute(self, code: str) -> ExecResult:
        """Run one cell; model mistakes come back in the result, never as exceptions."""

    async def variable(self, name: str) -> str | None:
        """The value of a ``str`` variable named ``name``, or ``None`` (for partial answers)."""
        raise NotImplementedError(f"variable() is not supported by {type(self).__name__}")

    def describe(self) -> dict[str, Any]:
        """What isolation this sandbox gives (recorded in the result's metadata)."""
        return {"sandbox": self.kind, "confined": self.isolated}

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop the REPL and free its resources. Safe to call more than once."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
