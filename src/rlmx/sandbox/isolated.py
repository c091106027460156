"""The ``isolated`` sandbox (the default): model code runs in a kernel-confined process.

One persistent worker process per sandbox (``_worker.py``), spoken to over two pipes in
the framed protocol of ``_protocol.py``. The worker confines itself before any model
code runs: cleared environment, scratch directory as cwd, rlimits, Landlock, seccomp,
inside bubblewrap namespaces when ``bwrap`` works here (see ``docs/security.md``).

The host treats everything from the worker as untrusted: frame sizes are checked from
the header before reading, every field is validated, and a worker that breaks the
protocol is killed. A cell past its time gets ``CellTimeout`` inside the worker (state
kept); if that does not end it within ``hard_kill_grace_s`` (code stuck in C), the
process group is killed and the next cell gets a fresh worker (state lost, the model is
told which variables). A worker that crashes is replaced the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from rlmx.exceptions import ContextError, SandboxError
from rlmx.sandbox import _spawn
from rlmx.sandbox._protocol import (
    BYTES,
    JSON,
    STRAY_THREADS_EXIT,
    FrameLimits,
    ProtocolError,
    check_header,
    decode_json,
    encode_bytes,
    encode_json,
)
from rlmx.sandbox.base import ExecResult, Sandbox, SandboxConfig, SubCallHandler

__all__ = ["IsolatedSandbox", "IsolationWarning", "WorkerLimits"]

_MIB = 1024 * 1024
_WRITE_CHUNK = 16 * _MIB
_REPLY_OPS = frozenset({"exec_result", "context_loaded", "variable_value", "error"})


class IsolationWarning(RuntimeWarning):
    """The isolated sandbox runs with weaker confinement than this platform should give."""


class WorkerLimits:
    """Bounds on what the host accepts from a worker (all sizes in bytes)."""

    max_json_bytes = 64 * _MIB
    max_bytes_frame = 256 * _MIB
    max_batch_prompts = 100_000
    max_batch_bytes = 1024 * _MIB
    max_in_flight_calls = 256
    max_in_flight_bytes = 2048 * _MIB
    max_model_name = 200
    max_variables = 1000


class _WorkerGone(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _WorkerProcess:
    """One running worker: its process, its two pipes, and the requests in flight."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: SubCallHandler | None,
    ) -> None:
        self.proc = proc
        self._reader = reader
        self._writer = writer
        self._handler = handler
        self._limits = FrameLimits(
            max_json_bytes=WorkerLimits.max_json_bytes,
            max_bytes_frame=WorkerLimits.max_bytes_frame,
        )
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sub_tasks: dict[int, asyncio.Task[None]] = {}
        self._in_flight_bytes = 0
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.gone_reason: str | None = None
        self.output_head: list[bytes] = []
        self._output_kept = 0
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="rlmx-worker-reader"),
            asyncio.create_task(self._drain_output(), name="rlmx-worker-output"),
        ]

    # ---------------------------------------------------------------- sending
    def send(self, message: dict[str, Any], blobs: list[bytes] | None = None) -> None:
        if self.gone_reason is not None:
            raise _WorkerGone(self.gone_reason)
        data = encode_json({**message, "blobs": len(blobs or ())})
        self._writer.write(data)
        for blob in blobs or ():
            self._writer.write(encode_bytes(blob))

    async def request(self, message: dict[str, Any], blobs: list[bytes] | None = None) -> int:
        """Send a request; returns its id (await :meth:`reply` for the answer)."""
        self._next_id += 1
        request_id = self._next_id
        self._pending[request_id] = asyncio.get_running_loop().create_future()
        self.send({**message, "id": request_id}, blobs)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()
        return request_id

    async def reply(self, request_id: int) -> dict[str, Any]:
        fut = self._pending[request_id]
        try:
            return await fut
        finally:
            self.forget(request_id)

    def forget(self, request_id: int) -> None:
        fut = self._pending.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    # ---------------------------------------------------------------- receiving
    async def _read_frame(self) -> tuple[bytes, bytes]:
        kind, length = check_header(await self._reader.readexactly(5), self._limits)
        return kind, await self._reader.readexactly(length) if length else b""

    async def _read_loop(self) -> None:
        reason = "the worker process exited"
        try:
            while True:
                kind, payload = await self._read_frame()
                if kind != JSON:
                    raise ProtocolError("a bytes frame nobody announced")
                message = decode_json(payload)
                await self._dispatch(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            reason = f"the worker broke the protocol ({exc}) and was stopped"
            self.kill()
        except asyncio.CancelledError:
            reason = "the sandbox was closed"
        self._gone(reason)

    def _gone(self, reason: str) -> None:
        if self.gone_reason is None:
            self.gone_reason = reason
        if not self.ready.done():
            self.ready.set_exception(_WorkerGone(reason))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_WorkerGone(reason))
        for task in self._sub_tasks.values():
            task.cancel()

    async def _dispatch(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ready":
            if not self.ready.done():
                self.ready.set_result(message)
        elif op in _REPLY_OPS:
            fut = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if fut is not None and not fut.done():
                fut.set_result(message)
        elif op in ("llm_query_batched", "rlm_query_batched"):
            await self._accept_sub_call(message)
        elif op == "sub_cancel":
            task = self._sub_tasks.pop(_int_field(message, "id"), None)
            if task is not None:
                task.cancel()
        else:
            raise ProtocolError(f"unknown op {op[:40]!r}")

    async def _accept_sub_call(self, message: dict[str, Any]) -> None:
        call_id = _int_field(message, "id")
        count = _int_field(message, "count")
        with_contexts = message.get("contexts") is True
        announced = _int_field(message, "blobs")
        if not 0 <= count <= WorkerLimits.max_batch_prompts:
            raise ProtocolError(f"a batch of {count} prompts")
        if announced != count * (2 if with_contexts else 1):
            raise ProtocolError("the number of data frames does not match the batch")
        if len(self._sub_tasks) >= WorkerLimits.max_in_flight_calls or call_id in self._sub_tasks:
            raise ProtocolError("too many sub-calls in flight, or a reused call id")
        blobs: list[bytes] = []
        total = 0
        for _ in range(announced):
            kind, payload = await self._read_frame()
            if kind != BYTES:
                raise ProtocolError("expected a bytes frame")
            total += len(payload)
            if total > WorkerLimits.max_batch_bytes:
                raise ProtocolError(f"a batch of more than {WorkerLimits.max_batch_bytes:,} bytes")
            if self._in_flight_bytes + total > WorkerLimits.max_in_flight_bytes:
                raise ProtocolError("too much sub-call data in flight")
            blobs.append(payload)
        self._in_flight_bytes += total
        task = asyncio.create_task(self._serve_sub_call(message, call_id, blobs, with_contexts))
        self._sub_tasks[call_id] = task
        task.add_done_callback(lambda _t: self._sub_call_done(call_id, total))

    def _sub_call_done(self, call_id: int, size: int) -> None:
        self._sub_tasks.pop(call_id, None)
        self._in_flight_bytes -= size

    async def _serve_sub_call(
        self, message: dict[str, Any], call_id: int, blobs: list[bytes], with_contexts: bool
    ) -> None:
        try:
            answers = await self._answer(message, blobs, with_contexts)
            reply: dict[str, Any] = {"op": "sub_result", "id": call_id, "answers": answers}
        except _BadSubCall as exc:
            reply = {"op": "sub_result", "id": call_id, "error": str(exc)}
        except Exception as exc:  # a handler bug must not kill the run
            reply = {"op": "sub_result", "id": call_id, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(_WorkerGone, ConnectionError):
            self.send(reply)
            await self._writer.drain()

    async def _answer(
        self, message: dict[str, Any], blobs: list[bytes], with_contexts: bool
    ) -> list[str]:
        handler = self._handler
        if handler is None:
            raise _BadSubCall("sub-calls are not available at this depth")
        count = _int_field(message, "count")
        prompts = [_decode_text(b, f"prompt {i}") for i, b in enumerate(blobs[:count])]
        if message["op"] == "llm_query_batched":
            model = message.get("model")
            if model is not None and (
                not isinstance(model, str) or len(model) > WorkerLimits.max_model_name
            ):
                raise _BadSubCall("model must be a short str naming a model, or None")
            return [str(a) for a in await handler.llm_query_batched(prompts, model)]
        contexts = None
        if with_contexts:
            contexts = [_decode_json_value(b, i) for i, b in enumerate(blobs[count:])]
        return [str(a) for a in await handler.rlm_query_batched(prompts, contexts)]

    async def _drain_output(self) -> None:
        """The worker's own stdout/stderr (crash messages): keep the start, drop the rest."""
        stream = self.proc.stdout
        if stream is None:  # pragma: no cover - always piped
            return
        with contextlib.suppress(ConnectionError):
            while chunk := await stream.read(4096):
                if self._output_kept < 16384:
                    self.output_head.append(chunk)
                    self._output_kept += len(chunk)

    def output_text(self, limit: int = 2000) -> str:
        """The start of what the worker wrote outside any cell (a crash report, mostly)."""
        text = b"".join(self.output_head).decode("utf-8", "replace").strip()
        return text if len(text) <= limit else text[:limit] + "..."

    # ---------------------------------------------------------------- ending
    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Kill the worker and reap it: its REPL state is discarded anyway, and waiting for its
        interpreter to exit on request would cost ~20 ms at the end of every run."""
        self.kill()
        await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writer.close()
        self._gone("the sandbox was closed")

    def death_description(self) -> str:
        """Why the worker is gone: the host's reason when it stopped it, else how it ended."""
        reason = self.gone_reason or ""
        if "protocol" in reason:
            return reason.replace("the worker ", "", 1)
        return self.exit_description()

    def exit_description(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "stopped responding"
        if code == STRAY_THREADS_EXIT:
            return (
                "was stopped because threads started by an earlier cell kept working after "
                "that cell ended (start threads only to join them within the same cell)"
            )
        # bwrap reports a child killed by signal N as status 128 + N, as shells do.
        signum = -code if code < 0 else code - 128 if code > 128 else 0
        if signum:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(signum).name}"
        return f"exited with status {code}"


class _BadSubCall(Exception):
    """A sub-call request the host refuses (its answer tells the cell why)."""


def _int_field(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"field {name!r} must be an int")
    return value


def _decode_text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise _BadSubCall(f"{what} is not valid UTF-8 text") from None


def _decode_json_value(data: bytes, index: int) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _BadSubCall(f"context {index} is not valid JSON data: {exc}") from None


# ====================================================================== sandbox


class IsolatedSandbox(Sandbox):
    """A persistent REPL in a confined worker process. The default sandbox.

    ``memory_mb`` caps the worker's address space (default: 4 GiB, or 3x the context
    plus 2 GiB when that is more); ``cpu_seconds`` its total CPU time; ``use_bwrap``
    forces bubblewrap on or off (default: on when it works here);
    ``require_isolation=True`` refuses to run when the kernel layers are missing
    instead of warning.
    """

    kind = "isolated"
    isolated = True

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        memory_mb: int | None = None,
        cpu_seconds: int = 3600,
        use_bwrap: bool | None = None,
        require_isolation: bool = False,
        hard_kill_grace_s: float = 1.0,
        start_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(config or SandboxConfig())
        if not hasattr(os, "killpg") or sys.platform == "win32":
            raise SandboxError(
                "The isolated sandbox needs Linux (or macOS, with weaker isolation). "
                "On this platform pass sandbox='local' for trusted code only."
            )
        self.memory_mb = memory_mb
        self.cpu_seconds = cpu_seconds
        self.use_bwrap = use_bwrap
        self.require_isolation = require_isolation
        self.hard_kill_grace_s = hard_kill_grace_s
        self.start_timeout_s = start_timeout_s
        self._base: Path | None = None
        self._worker: _WorkerProcess | None = None
        self._context_msg: dict[str, Any] | None = None
        self._context_bytes = 0
        self._worker_memory = 0
        self._variables: list[str] = []
        self._lost_notice: tuple[str, tuple[str, ...]] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.report: dict[str, Any] = {}
        self.restarts = 0

    # ---------------------------------------------------------------- setup
    def _dirs(self) -> tuple[Path, Path]:
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="rlmx-sandbox-"))
            (self._base / "scratch").mkdir(mode=0o700)
            (self._base / "context").mkdir()
            # Only the host's user (and the worker, which runs as it or as nobody) may
            # enter: nothing the worker leaves in scratch is reachable by other users.
            self._base.chmod(0o711 if self._drop_uid() else 0o700)
        return self._base / "scratch", self._base / "context"

    def _bwrap(self) -> str | None:
        """The bwrap to wrap the worker in, or ``None`` (unusable here, or turned off)."""
        found = _spawn.probe()
        if self.use_bwrap and found.bwrap is None:
            raise SandboxError(f"use_bwrap=True but bubblewrap is unusable: {found.bwrap_problem}")
        return found.bwrap if self.use_bwrap is not False else None

    def _drop_uid(self) -> bool:
        """Run the worker as nobody: only for a root host without namespaces."""
        return self._bwrap() is None and os.geteuid() == 0 and _nobody_can_run()

    def _memory_limit(self) -> int:
        if self.memory_mb is not None:
            return self.memory_mb * _MIB
        return max(4096 * _MIB, 3 * self._context_bytes + 2048 * _MIB)

    async def _start_worker(self) -> _WorkerProcess:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        found = _spawn.probe()
        bwrap = self._bwrap()
        scratch, context_dir = self._dirs()
        drop_uid = self._drop_uid()
        if drop_uid:
            os.chown(scratch, _spawn.NOBODY, _spawn.NOBODY)
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        fds = (to_worker_r, from_worker_w)
        cmd = _spawn.worker_command(
            bwrap=bwrap, scratch=str(scratch), context_dir=str(context_dir), fds=fds
        )
        extra: dict[str, Any] = {}
        if drop_uid:
            extra = {"user": _spawn.NOBODY, "group": _spawn.NOBODY, "extra_groups": []}
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=fds,
                start_new_session=True,
                env=_spawn.worker_env(str(scratch)),
                cwd=str(scratch),
                **extra,
            )
        except OSError as exc:
            os.close(to_worker_w)  # the child's ends are closed below, in every case
            os.close(from_worker_r)
            raise SandboxError(f"could not start the sandbox worker: {exc}") from exc
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(from_worker_r, "rb", 0)
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(to_worker_w, "wb", 0)
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        worker = _WorkerProcess(proc, reader, writer, self.config.handler)
        memory = self._memory_limit()
        worker.send(
            {
                "op": "config",
                "scratch": str(scratch),
                "sys_path": _spawn.worker_sys_path(),
                "env": _spawn.worker_env(str(scratch)),
                "layers": {
                    "landlock": found.landlock_abi > 0,
                    "seccomp": found.seccomp_problem is None,
                },
                "read_only": [*_spawn.interpreter_paths(), *_spawn.DEVICES, str(context_dir)],
                "read_write": [str(scratch)],
                "rlimits": {
                    "memory_bytes": memory,
                    "cpu_seconds": self.cpu_seconds,
                    "open_files": 256,
                    "file_bytes": 1024 * _MIB,
                    "processes": 256,
                    "core_bytes": 0,
                },
                "sub_calls": self.config.handler is not None,
                "namespaces": bwrap is not None,
                "max_output_chars": self.config.max_output_chars,
            }
        )
        try:
            ready = await asyncio.wait_for(worker.ready, self.start_timeout_s)
        except (TimeoutError, _WorkerGone) as exc:
            await worker.close()
            detail = worker.output_text() or str(exc) or "no answer"
            raise SandboxError(f"the sandbox worker did not start: {detail}") from None
        try:
            self._record_layers(ready.get("layers"), namespaces=bwrap is not None, dropped=drop_uid)
            if self._context_msg is not None:
                await self._load(worker, self._context_msg)
        except BaseException:
            await worker.close()
            raise
        self._worker_memory = memory
        return worker

    def _record_layers(self, layers: Any, *, namespaces: bool, dropped: bool) -> None:
        layers = layers if isinstance(layers, dict) else {}
        active = ["namespaces"] if namespaces else []
        for name in ("landlock", "seccomp"):
            entry = layers.get(name)
            if isinstance(entry, dict) and "error" not in entry:
                active.append(name)
        active.append("rlimits")
        fs = "namespaces" in active or "landlock" in active
        procs = "namespaces" in active or "seccomp" in active
        net = procs or (
            isinstance(layers.get("landlock"), dict) and layers["landlock"].get("network") is True
        )
        self.report = {
            "sandbox": "isolated",
            "layers": active,
            "confined": fs and procs and net,
            "uid_dropped": dropped or namespaces,
            "details": {k: v for k, v in layers.items() if k in ("landlock", "seccomp", "rlimits")},
        }
        if self.report["confined"]:
            return
        message = (
            f"The isolated sandbox runs with only these layers: {', '.join(active)}. Model "
            "code is in a separate process without your environment, but it may read "
            "files or open connections. Run `rlmx doctor` to see what is missing."
        )
        if self.require_isolation:
            raise SandboxError(message + " (require_isolation=True)")
        warnings.warn(message, IsolationWarning, stacklevel=2)

    async def _ensure_worker(self) -> _WorkerProcess:
        worker = self._worker
        if worker is not None and worker.gone_reason is None and worker.proc.returncode is None:
            return worker
        if worker is not None:  # it died between cells
            lost = await self._replace(worker)
            self._lost_notice = (f"the REPL process {worker.death_description()}", lost)
        self._worker = await self._start_worker()
        return self._worker

    async def _replace(self, worker: _WorkerProcess) -> tuple[str, ...]:
        """Stop a worker for good; the next request starts a fresh one."""
        await worker.close()
        if self._worker is worker:
            self._worker = None
        self.restarts += 1
        lost = tuple(self._variables)
        self._variables = []
        return lost

    # ---------------------------------------------------------------- context
    async def load_context(self, value: Any) -> None:
        _scratch, context_dir = self._dirs()
        message, size = await asyncio.to_thread(_write_context, value, context_dir)
        self._context_bytes = size
        self._context_msg = message
        async with self._lock:
            worker = self._worker
            if worker is not None and self._memory_limit() > self._worker_memory:
                await self._replace(worker)
                worker = None
            if worker is None or worker.gone_reason is not None:
                self._worker = await self._start_worker()  # loads the context
            else:
                await self._load(worker, message)

    async def _load(self, worker: _WorkerProcess, message: dict[str, Any]) -> None:
        try:
            reply = await worker.reply(await worker.request(message))
        except _WorkerGone as exc:
            raise SandboxError(f"the sandbox worker failed loading the context: {exc}") from None
        if reply.get("op") == "error":
            raise SandboxError(f"the sandbox could not load the context: {reply.get('error')}")

    # ---------------------------------------------------------------- cells
    async def execute(self, code: str) -> ExecResult:
        async with self._lock:
            worker = await self._ensure_worker()
            result = await self._execute(worker, code)
        if self._lost_notice is not None and not result.restarted:
            why, lost = self._lost_notice
            self._lost_notice = None
            result = _with_restart_notice(result, why, lost, before=True)
        return result

    async def _execute(self, worker: _WorkerProcess, code: str) -> ExecResult:
        timeout = self.config.cell_timeout_s
        request_id = await worker.request({"op": "exec", "code": code, "timeout_s": timeout})
        limit = None if timeout is None else timeout + self.hard_kill_grace_s
        try:
            reply = await asyncio.wait_for(worker.reply(request_id), limit)
        except asyncio.CancelledError:
            with contextlib.suppress(_WorkerGone, ConnectionError):
                worker.send({"op": "cancel"})
            worker.forget(request_id)
            raise
        except TimeoutError:
            lost = await self._replace(worker)
            return _with_restart_notice(
                ExecResult(
                    error=(
                        f"TimeoutError: the cell ran past cell_timeout_s={timeout} and did not "
                        "stop when interrupted (stuck in native code), so its process was killed."
                    ),
                    timed_out=True,
                    duration_s=limit or 0.0,
                ),
                "the process was killed",
                lost,
            )
        except _WorkerGone:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), 1.0)
            description = worker.death_description()
            output = worker.output_text(800)
            lost = await self._replace(worker)
            detail = f"\n{output}" if output else ""
            return _with_restart_notice(
                ExecResult(error=f"SandboxCrash: the REPL process {description}.{detail}"),
                "the REPL process crashed",
                lost,
            )
        if reply.get("op") == "error":
            return ExecResult(error=f"SandboxError: {str(reply.get('error'))[:2000]}")
        return self._accept_result(reply)

    def _accept_result(self, reply: dict[str, Any]) -> ExecResult:
        """Rebuild an ExecResult from untrusted data: every field checked and bounded."""
        raw = reply.get("result")
        raw = raw if isinstance(raw, dict) else {}
        cap = self.config.max_output_chars + 200

        def text(name: str, limit: int) -> str:
            value = raw.get(name)
            return value[:limit] if isinstance(value, str) else ""

        def optional(name: str, limit: int) -> str | None:
            value = raw.get(name)
            return value[:limit] if isinstance(value, str) else None

        variables = reply.get("variables")
        if isinstance(variables, list):
            self._variables = [
                v[:200] for v in variables[: WorkerLimits.max_variables] if isinstance(v, str)
            ]
        duration = raw.get("duration_s")
        truncated = raw.get("truncated_chars")
        return ExecResult(
            stdout=text("stdout", cap),
            stderr=text("stderr", cap),
            error=optional("error", 8000),
            final=optional("final", WorkerLimits.max_json_bytes),
            timed_out=raw.get("timed_out") is True,
            duration_s=float(duration) if isinstance(duration, int | float) else 0.0,
            truncated_chars=truncated if isinstance(truncated, int) and truncated >= 0 else 0,
        )

    async def variable(self, name: str) -> str | None:
        async with self._lock:
            worker = await self._ensure_worker()
            try:
                reply = await worker.reply(await worker.request({"op": "variable", "name": name}))
            except _WorkerGone:
                return None
        value = reply.get("value")
        return value if isinstance(value, str) else None

    def describe(self) -> dict[str, Any]:
        """The layers the worker applied (known once it has started)."""
        return dict(self.report) or {"sandbox": self.kind, "layers": [], "confined": False}

    @property
    def worker_pid(self) -> int | None:
        """The host-side pid of the worker's process (bwrap's, when namespaces are used)."""
        return None if self._worker is None else self._worker.proc.pid

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            if self._worker is not None:
                await self._worker.close()
                self._worker = None
        if self._base is not None:
            await asyncio.to_thread(shutil.rmtree, self._base, True)
            self._base = None


def _with_restart_notice(
    result: ExecResult, why: str, lost: tuple[str, ...], *, before: bool = False
) -> ExecResult:
    names = ", ".join(lost) if lost else "none"
    when = "Before this cell, " if before else ""
    note = (
        f"{when}{why}; a fresh REPL was started. Variables lost: {names}. "
        "`context` and the helper functions are available again."
    )
    error = f"{result.error}\n{note}" if result.error else note
    return dataclasses.replace(result, error=error, restarted=True, lost_variables=lost)


def _nobody_can_run() -> bool:
    """Whether an unprivileged user can reach the interpreter and rlmx (for a uid drop)."""
    for path in [_spawn.BOOTSTRAP, os.path.realpath(sys.executable)]:
        parent = Path(path)
        for p in [parent, *parent.parents]:
            with contextlib.suppress(OSError):
                if not p.stat().st_mode & 0o001:
                    return False
    return True


def _write_context(value: Any, context_dir: Path) -> tuple[dict[str, Any], int]:
    """Write the context to a file the worker reads once; returns its message and size."""
    path = context_dir / "context"
    tmp = context_dir / "context.tmp"
    if isinstance(value, str):
        ascii_only = value.isascii()
        fmt = "ascii" if ascii_only else "utf-8"
        with open(tmp, "wb") as f:
            for i in range(0, len(value), _WRITE_CHUNK):
                piece = value[i : i + _WRITE_CHUNK]
                f.write(piece.encode("utf-8", "surrogatepass"))
        message: dict[str, Any] = {"op": "context", "format": fmt, "chars": len(value)}
    else:
        try:
            data = json.dumps(value, ensure_ascii=False, default=str).encode(
                "utf-8", "surrogatepass"
            )
        except (TypeError, ValueError, RecursionError) as exc:
            raise ContextError(
                f"the isolated sandbox needs a context made of JSON data (str, list, dict, "
                f"numbers...): {exc}. Convert it first, or use sandbox='local' for trusted code."
            ) from None
        tmp.write_bytes(data)
        message = {"op": "context", "format": "json"}
    tmp.chmod(0o644)
    tmp.replace(path)
    message["path"] = str(path)
    return message, path.stat().st_size
