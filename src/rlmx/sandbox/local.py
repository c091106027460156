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
import threading
from typing import Any

from rlmx.exceptions import SandboxError
from rlmx.sandbox._runtime import CellOutcome, CellTimeout, Repl
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
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )


class LocalSandbox(Sandbox):
    """In-process REPL (unsafe: no isolation at all)."""

    kind = "local"
    isolated = False

    def __init__(self, config: SandboxConfig | None = None) -> None:
        super().__init__(config or SandboxConfig())
        self._repl: Repl | None = None
        self._executor = self._new_executor()
        self._closed = False
        self._lock = asyncio.Lock()

    @staticmethod
    def _new_executor() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlmx-repl")

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
        thread_id: list[int] = []

        def started() -> None:
            thread_id.append(threading.get_ident())

        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, lambda: repl.run_cell(code, on_start=started))
        timeout = self.config.cell_timeout_s
        try:
            outcome: CellOutcome = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            if thread_id:
                _raise_in_thread(thread_id[0], CellTimeout)
            try:
                outcome = await asyncio.wait_for(asyncio.shield(fut), _TIMEOUT_GRACE_S)
            except TimeoutError:
                # Stuck in C code: abandon the thread, keep the namespace.
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
                return ExecResult(
                    error=(
                        f"TimeoutError: the cell ran past cell_timeout_s={timeout} and could "
                        "not be interrupted (it is stuck in native code). Its thread was "
                        "abandoned; variables are kept. Avoid unbounded loops and regexes."
                    ),
                    timed_out=True,
                    duration_s=(timeout or 0) + _TIMEOUT_GRACE_S,
                )
        return ExecResult(
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            error=outcome.error,
            final=outcome.final,
            timed_out=outcome.timed_out,
            duration_s=outcome.duration_s,
            truncated_chars=outcome.truncated_chars,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._repl = None
