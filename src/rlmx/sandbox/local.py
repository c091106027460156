"""The ``local`` sandbox: model code runs inside this process. UNSAFE — trusted code only.

It is the fastest sandbox and the reference for REPL semantics, but nothing separates
the code from the host: it can read files, environment variables (API keys included)
and the memory of the process. Use it for code you would run yourself.

Each sandbox owns one thread; cells run there so the event loop stays free to serve
the sub-calls the cell makes (they hop back to the loop and the cell blocks on them).
A cell past ``cell_timeout_s`` gets a ``CellTimeout`` raised inside it; code stuck in C
(which never checks for that) cannot be stopped in-process: its thread is abandoned
and the run goes on with a fresh thread, the namespace kept.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import queue
import threading
from collections.abc import Callable
from typing import Any

from rlmx.exceptions import SandboxError
from rlmx.sandbox._runtime import CellTimeout, Repl
from rlmx.sandbox.base import ExecResult, Sandbox, SandboxConfig, SubCallHandler

__all__ = ["LocalSandbox"]

_POLL_S = 0.05
_TIMEOUT_GRACE_S = 2.0


class _LoopBridge:
    """Blocking sub-calls from the cell's thread, served by the host's event loop."""

    def __init__(self, handler: SubCallHandler, loop: asyncio.AbstractEventLoop) -> None:
        self._handler = handler
        self._loop = loop

    def _wait(self, fut: concurrent.futures.Future[list[str]]) -> list[str]:
        # Short waits, so an asynchronous CellTimeout can be delivered between them.
        try:
            while True:
                try:
                    return fut.result(timeout=_POLL_S)
                except concurrent.futures.TimeoutError:
                    continue
        except BaseException:
            fut.cancel()
            raise

    def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        coro = self._handler.llm_query_batched(prompts, model)
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]:
        coro = self._handler.rlm_query_batched(prompts, contexts)
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self._loop))


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    # Never withdraw one with NULL: on CPython 3.11 that leaves the interpreter's "async
    # exception pending" flag set for good, and traced threads (coverage, debuggers) then
    # spin at every call. They also spin while one waits in a thread blocked in C.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )


def _checkpoint() -> None:
    """A Python-level call: a pending asynchronous exception is raised at its entry."""


_Job = tuple[Callable[[], ExecResult], "concurrent.futures.Future[ExecResult]"]


class _Worker:
    """The sandbox's REPL thread: runs cells one after another.

    A daemon thread, unlike a ``ThreadPoolExecutor``'s: a cell stuck in native code and
    abandoned after a timeout must not keep the process alive at exit.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], ExecResult]) -> concurrent.futures.Future[ExecResult]:
        fut: concurrent.futures.Future[ExecResult] = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rlmx-repl", daemon=True)
            self._thread.start()
        return fut

    def stop(self) -> None:
        """End the thread once its current job (if any) is done."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(result)


class _RunningCell:
    """Delivers ``CellTimeout`` into a cell only while its code runs, never after.

    A timeout raised just as the cell ends would otherwise hit whatever the thread does
    next (waiting for the next cell), killing it or failing an innocent later cell.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None

    def started(self) -> None:
        with self._lock:
            self._thread_id = threading.get_ident()

    def ended(self) -> None:
        # A timeout set just before this point is delivered inside run_cell's CellTimeout
        # handler. (Clearing it with SetAsyncExc(NULL) on the current thread is not needed,
        # and hangs the interpreter under a tracer.) The eval loop only looks for it at a
        # call or a backward jump, so make a call here rather than leave it for later.
        with self._lock:
            self._thread_id = None
        _checkpoint()

    def interrupt(self) -> None:
        with self._lock:
            if self._thread_id is not None:
                _raise_in_thread(self._thread_id, CellTimeout)


class LocalSandbox(Sandbox):
    """In-process REPL (unsafe: no isolation at all)."""

    kind = "local"
    isolated = False

    def __init__(self, config: SandboxConfig | None = None) -> None:
        super().__init__(config or SandboxConfig())
        self._repl: Repl | None = None
        self._worker = _Worker()
        self._closed = False
        self._lock = asyncio.Lock()

    def _ensure_repl(self) -> Repl:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if self._repl is None:
            handler = self.config.handler
            bridge = None if handler is None else _LoopBridge(handler, asyncio.get_running_loop())
            self._repl = Repl(sub_calls=bridge, max_output_chars=self.config.max_output_chars)
        return self._repl

    async def load_context(self, value: Any) -> None:
        # By reference: the local sandbox never copies the context.
        self._ensure_repl().load_context(value)

    async def variable(self, name: str) -> str | None:
        value = self._ensure_repl().namespace.get(name)
        return value if isinstance(value, str) else None

    @property
    def repl(self) -> Repl:
        return self._ensure_repl()

    async def execute(self, code: str) -> ExecResult:
        repl = self._ensure_repl()
        async with self._lock:
            return await self._execute(repl, code)

    async def _execute(self, repl: Repl, code: str) -> ExecResult:
        cell = _RunningCell()
        fut = asyncio.wrap_future(
            self._worker.submit(
                lambda: repl.run_cell(code, on_start=cell.started, on_end=cell.ended)
            )
        )
        timeout = self.config.cell_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.CancelledError:
            cell.interrupt()  # nobody will read the result: free the REPL for the next cell
            raise
        except TimeoutError:
            cell.interrupt()
            try:
                return await asyncio.wait_for(asyncio.shield(fut), _TIMEOUT_GRACE_S)
            except TimeoutError:
                # Stuck in C code: abandon the thread, keep the namespace.
                self._worker.stop()
                self._worker = _Worker()
                return ExecResult(
                    error=(
                        f"TimeoutError: the cell ran past cell_timeout_s={timeout} and could "
                        "not be interrupted (it is stuck in native code). Its thread was "
                        "abandoned; variables are kept. Avoid unbounded blocking calls and loops."
                    ),
                    timed_out=True,
                    duration_s=(timeout or 0) + _TIMEOUT_GRACE_S,
                )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._worker.stop()
        self._repl = None
