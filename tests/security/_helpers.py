"""Shared pieces of the attack suite: payload wrappers, expected outcomes, output checks.

Every payload runs inside an ``isolated`` sandbox. The usual shape is :func:`attempt`:
the attack runs in a ``try``; the cell prints ``BLOCKED <exception type> <errno>`` when
the kernel stops it and ``SUCCEEDED`` (or the stolen data) when it does not, so a test
asserts the exact line — the specific error raised inside the sandbox — and, separately,
that no secret reached any output field.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rlmx.sandbox import (
    ExecResult,
    IsolatedSandbox,
    SandboxConfig,
    SubCallHandler,
    _spawn,
    get_sandbox,
)

__all__ = [
    "CONTEXT",
    "EACCES",
    "ENOENT",
    "EPERM",
    "EROFS",
    "ESRCH",
    "EXDEV",
    "HARD_KILL_GRACE_S",
    "LOOP_TIMEOUT_S",
    "REPO",
    "SHORT_GRACE_S",
    "Opener",
    "Server",
    "SignalLog",
    "attempt",
    "blocked",
    "context_file",
    "has_namespaces",
    "hidden",
    "process_alive",
    "run",
    "scratch_dir",
    "start_sandbox",
    "texts",
]

REPO = Path(__file__).resolve().parents[2]
CONTEXT = "public context: nothing secret in here"

# Cells that must be interrupted (or killed) use a short clock; everything else a long one.
LOOP_TIMEOUT_S = 0.5
HARD_KILL_GRACE_S = 0.5
# Where the soft timeout is evaded anyway, a shorter grace before the hard kill.
SHORT_GRACE_S = 0.25

# ``type(exc).__name__`` and ``exc.errno`` as the payloads print them.
EPERM = "PermissionError 1"  # seccomp's answer (and Landlock's for signals)
ENOENT = "FileNotFoundError 2"  # not mounted in the sandbox's mount namespace
ESRCH = "ProcessLookupError 3"  # a host pid, absent from the sandbox's pid namespace
EACCES = "PermissionError 13"  # Landlock's answer for files
EXDEV = "OSError 18"  # Landlock refusing to link/rename across its rules
EROFS = "OSError 30"  # a read-only bind mount (bubblewrap)


@dataclass
class Server:
    """A live listening socket on the host; ``accepted`` counts the connections it took."""

    address: str | tuple[str, int]
    accepted: int = 0

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        with contextlib.suppress(ConnectionError):
            await reader.read(1024)
        writer.close()

    @property
    def tcp(self) -> tuple[str, int]:
        assert isinstance(self.address, tuple)
        return self.address

    async def settled_accepts(self) -> int:
        """The accept count once any connection still in the backlog has been taken."""
        await asyncio.sleep(0.1)
        return self.accepted


@dataclass
class SignalLog:
    """Signals the host (this test process) caught instead of dying of them."""

    received: list[int] = field(default_factory=list)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in {"Z", "X"}


class Opener(Protocol):
    """The ``open_sandbox`` fixture: a started isolated sandbox, closed at teardown."""

    async def __call__(
        self,
        *,
        handler: SubCallHandler | None = None,
        cell_timeout_s: float = 10.0,
        use_bwrap: bool | None = None,
        memory_mb: int | None = None,
        max_output_chars: int = 20_000,
        hard_kill_grace_s: float = HARD_KILL_GRACE_S,
    ) -> IsolatedSandbox: ...


async def start_sandbox(
    *,
    handler: SubCallHandler | None = None,
    cell_timeout_s: float = 10.0,
    use_bwrap: bool | None = None,
    memory_mb: int | None = None,
    max_output_chars: int = 20_000,
    hard_kill_grace_s: float = HARD_KILL_GRACE_S,
) -> IsolatedSandbox:
    """An isolated sandbox with its worker running; every layer required (a machine
    without them fails here, loudly, rather than passing attacks by luck)."""
    config = SandboxConfig(
        handler=handler, cell_timeout_s=cell_timeout_s, max_output_chars=max_output_chars
    )
    sandbox = get_sandbox(
        "isolated",
        config,
        use_bwrap=use_bwrap,
        memory_mb=memory_mb,
        require_isolation=True,
        hard_kill_grace_s=hard_kill_grace_s,
    )
    assert isinstance(sandbox, IsolatedSandbox)
    try:
        await sandbox.load_context(CONTEXT)  # starts the worker
    except BaseException:
        await sandbox.aclose()
        raise
    return sandbox


def attempt(code: str, *, then: str = "print('SUCCEEDED')") -> str:
    """Wrap ``code`` (``os`` imported) so the cell prints how it was stopped, or ``then``."""
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), "    ")
    return (
        "import os\n"
        "try:\n"
        f"{body}\n"
        "except BaseException as exc:\n"
        "    print('BLOCKED', type(exc).__name__, getattr(exc, 'errno', None))\n"
        "else:\n"
        f"    {then}\n"
    )


def blocked(outcome: str) -> str:
    """The stdout of an :func:`attempt` stopped with ``outcome`` (e.g. :data:`EPERM`)."""
    return f"BLOCKED {outcome}\n"


async def run(sandbox: IsolatedSandbox, code: str) -> ExecResult:
    """Run one cell; model errors come back in the result, never as exceptions."""
    return await sandbox.execute(code)


async def run_while_ticking(
    sandbox: IsolatedSandbox, code: str, *, period: float, settle_s: float = 0.0
) -> tuple[ExecResult, float, int]:
    """Run a cell while a host task ticks every ``period``: the host's loop must not freeze.

    Returns the result, the cell's wall time and the ticks counted (``settle_s`` more
    seconds of ticking after the cell, outside the wall time).
    """
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(period)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        r = await run(sandbox, code)
        elapsed = time.monotonic() - started
        await asyncio.sleep(settle_s)
    finally:
        ticker.cancel()
    return r, elapsed, ticks


def texts(result: ExecResult) -> str:
    """Every text field of a result: a secret must appear in none of them."""
    return "\n".join([result.stdout, result.stderr, result.error or "", result.final or ""])


async def scratch_dir(sandbox: IsolatedSandbox) -> Path:
    """The sandbox's scratch directory (its working directory), as the worker reports it."""
    r = await sandbox.execute("import os\nprint(os.getcwd())")
    assert r.error is None, r.error
    path = Path(r.stdout.strip())
    assert path.parent.name.startswith("rlmx-sandbox-") and path.name == "scratch", path
    return path


async def context_file(sandbox: IsolatedSandbox) -> Path:
    """The file the host wrote the context to: next to scratch, read-only for the worker."""
    return (await scratch_dir(sandbox)).parent / "context" / "context"


def has_namespaces(sandbox: IsolatedSandbox) -> bool:
    return "namespaces" in sandbox.describe().get("layers", [])


def _visible_in_namespace(path: str) -> bool:
    """Whether ``path`` exists in the worker's mount namespace (as a directory on the way
    to something bubblewrap mounts), though Landlock still forbids reading it."""
    mounted = [*_spawn.interpreter_paths(), *_spawn.DEVICES, "/proc", "/dev", "/tmp"]
    real = os.path.normpath(path)
    return any(m == real or m.startswith(real.rstrip("/") + "/") for m in mounted)


def hidden(sandbox: IsolatedSandbox, path: str | Path) -> str:
    """How opening ``path`` (a host path outside the sandbox's view) must fail.

    With namespaces the path is simply absent (``ENOENT``), unless bubblewrap had to
    create it as a parent of a mounted path, where Landlock answers (``EACCES``); without
    namespaces Landlock answers for every host path.
    """
    if has_namespaces(sandbox) and not _visible_in_namespace(str(path)):
        return ENOENT
    return EACCES
