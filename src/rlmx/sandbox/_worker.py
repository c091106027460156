"""The isolated worker: a persistent REPL in a confined child process.

Started by :mod:`rlmx.sandbox.isolated` through ``_bootstrap.py``. It reads its
configuration (first frame), confines itself (:mod:`rlmx.sandbox._confine`), reports
``ready`` with the layers it could apply, then serves requests:

* the main thread runs cells (``exec``), loads the context, answers ``variable``;
* a reader thread takes every frame from the host and routes sub-call answers to the
  cell waiting for them, so a cell blocked in ``llm_query`` never blocks the channel.

A cell's soft timeout is ``SIGALRM`` (``setitimer``), raised as ``CellTimeout`` in the
main thread between bytecodes or in an interrupted system call; code stuck in C never
sees it, which is what the host's hard kill is for.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlmx.sandbox import _confine
from rlmx.sandbox._protocol import (
    BYTES,
    JSON,
    STRAY_THREADS_EXIT,
    FrameLimits,
    ProtocolError,
    decode_json,
    encode_bytes,
    encode_json,
    read_frame_blocking,
    write_all,
)
from rlmx.sandbox._runtime import CellTimeout, Repl

__all__ = ["main"]

_MAIN_OPS = frozenset({"exec", "context", "variable", "shutdown"})
_READ_CHUNK = 16 * 1024 * 1024
# CPU the process may use while no request is being served (late sub-call answers and
# the like) before it counts as threads left running by a cell.
_IDLE_CPU_BUDGET_S = 0.5
_IDLE_CHECK_S = 0.2
# The host is trusted; these only bound a confused host, not an attacker.
_HOST_LIMITS = FrameLimits(max_json_bytes=1 << 31, max_bytes_frame=1 << 31)


@dataclass(slots=True)
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


class _Channel:
    """Frames to and from the host, usable from any thread."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self._write_lock = threading.Lock()

    def send(self, message: dict[str, Any], blobs: list[bytes] | None = None) -> None:
        data = encode_json(message)
        if blobs:
            data += b"".join(encode_bytes(b) for b in blobs)
        with self._write_lock:
            write_all(self.fd_out, data)

    def receive(self) -> tuple[dict[str, Any], list[bytes]]:
        frame = read_frame_blocking(self.fd_in, _HOST_LIMITS)
        if frame.kind != JSON:
            raise ProtocolError("expected a JSON frame from the host")
        message = decode_json(frame.payload)
        blobs = []
        for _ in range(int(message.get("blobs", 0))):
            blob = read_frame_blocking(self.fd_in, _HOST_LIMITS)
            if blob.kind != BYTES:
                raise ProtocolError("expected a bytes frame from the host")
            blobs.append(blob.payload)
        return message, blobs


class _HostClient:
    """``SubCallClient`` over the channel: each call blocks until the host answers."""

    def __init__(self, channel: _Channel, cell_running: Callable[[], bool]) -> None:
        self._channel = channel
        self._cell_running = cell_running
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()

    def deliver(self, message: dict[str, Any]) -> None:
        with self._lock:
            pending = self._pending.get(message.get("id", -1))
        if pending is not None:
            pending.reply = message
            pending.event.set()

    def _call(self, message: dict[str, Any], blobs: list[bytes]) -> list[str]:
        if not self._cell_running():
            raise RuntimeError(
                "sub-calls are only possible while a cell runs: a thread started by a cell "
                "must finish (be joined) within that cell"
            )
        call_id = next(self._ids)
        pending = _Pending()
        with self._lock:
            self._pending[call_id] = pending
        try:
            self._channel.send({**message, "id": call_id, "blobs": len(blobs)}, blobs)
            pending.event.wait()  # a signal (the cell's timeout) interrupts this wait
        except BaseException:
            self._channel.send({"op": "sub_cancel", "id": call_id})
            raise
        finally:
            with self._lock:
                del self._pending[call_id]
        reply = pending.reply or {}
        if "error" in reply:
            raise RuntimeError(str(reply["error"]))
        return [str(a) for a in reply.get("answers", [])]

    def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a str, got {type(model).__name__}")
        blobs = [p.encode("utf-8", "surrogatepass") for p in prompts]
        return self._call({"op": "llm_query_batched", "model": model, "count": len(prompts)}, blobs)

    def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]:
        blobs = [p.encode("utf-8", "surrogatepass") for p in prompts]
        if contexts is not None:
            blobs += [_encode_context(c) for c in contexts]
        message = {"op": "rlm_query_batched", "count": len(prompts)}
        return self._call({**message, "contexts": contexts is not None}, blobs)


def _encode_context(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"rlm_query context must be JSON-compatible data: {exc}") from None


# ------------------------------------------------------------------ context


def _ascii_str_from_file(path: str, length: int) -> str:
    """Read an ASCII file straight into a new str: no second copy of a huge context.

    A compact ASCII str stores its characters right after its header; the str is
    allocated once (``PyUnicode_New``) and filled in 16 MiB pieces, each checked.
    """
    new = ctypes.pythonapi.PyUnicode_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_ssize_t, ctypes.c_uint32]
    text: str = new(length, 127)
    base = id(text) + sys.getsizeof("") - 1  # the header of a compact ASCII str
    buffer = bytearray(min(_READ_CHUNK, max(length, 1)))
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < length:
            n = f.readinto(memoryview(buffer)[: min(len(buffer), length - pos)])
            if not n:
                raise ValueError("the context file is shorter than announced")
            if not buffer[:n].isascii():
                raise ValueError("the context file is not ASCII")
            ctypes.memmove(base + pos, (ctypes.c_char * n).from_buffer(buffer), n)
            pos += n
        if f.read(1):
            raise ValueError("the context file is longer than announced")
    return text


def _load_context(message: dict[str, Any]) -> Any:
    path, fmt = str(message["path"]), message["format"]
    if fmt == "ascii":
        text = _ascii_str_from_file(path, int(message["chars"]))
        with open(path, "rb") as f:  # guard against a layout this CPython does not have
            if text[:64].encode() != f.read(64):
                raise ValueError("in-place read produced a different string")
        return text
    with open(path, "rb") as f:
        data = f.read()
    if fmt == "utf-8":
        return data.decode("utf-8", "surrogatepass")
    return json.loads(data)


# ------------------------------------------------------------------ worker


class _Worker:
    def __init__(self, channel: _Channel, config: dict[str, Any]) -> None:
        self.channel = channel
        self.client = _HostClient(channel, lambda: self._running)
        self.inbox: queue.SimpleQueue[tuple[dict[str, Any], list[bytes]] | None] = (
            queue.SimpleQueue()
        )
        self.repl = Repl(
            sub_calls=self.client if config.get("sub_calls") else None,
            max_output_chars=int(config.get("max_output_chars", 20_000)),
        )
        self._running = False
        self._busy = False
        self._timeout_s: float | None = None

    # The cell's clock: SIGALRM for timeouts, SIGUSR1 when the host cancels the cell.
    def _on_signal(self, signum: int, frame: object) -> None:
        if self._running:
            raise CellTimeout()

    def _arm(self) -> None:
        self._running = True
        if self._timeout_s:
            signal.setitimer(signal.ITIMER_REAL, self._timeout_s)

    def _disarm(self) -> None:
        self._running = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def read_host(self) -> None:
        """The reader thread: sub-call answers go to their caller, the rest to the main thread."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
        main_ident = threading.main_thread().ident
        try:
            while True:
                message, blobs = self.channel.receive()
                op = message["op"]
                if op == "sub_result":
                    self.client.deliver(message)
                elif op == "cancel":
                    if self._running and main_ident is not None:
                        signal.pthread_kill(main_ident, signal.SIGUSR1)
                elif op in _MAIN_OPS:
                    self.inbox.put((message, blobs))
        except (EOFError, OSError, ProtocolError):
            pass
        self.inbox.put(None)  # the host is gone: stop

    def watch_idle_cpu(self) -> None:
        """End the process when it works while idle: a cell's threads outliving the cell.

        Python cannot stop a thread, and code left running after its cell would escape
        the cell's time limit (and could keep calling the host). While the main thread
        waits for the next request, the process should be asleep; past a small CPU
        budget it exits, and the host reports the restart on the next cell.
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
        mark: float | None = None
        while True:
            time.sleep(_IDLE_CHECK_S)
            if self._busy:
                mark = None
                continue
            now = time.process_time()
            if mark is None:
                mark = now
            elif now - mark > _IDLE_CPU_BUDGET_S:
                os.write(2, b"threads started by a cell kept running after it ended\n")
                os._exit(STRAY_THREADS_EXIT)

    def serve(self) -> None:
        signal.signal(signal.SIGALRM, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)
        threading.Thread(target=self.read_host, name="rlmx-host-channel", daemon=True).start()
        threading.Thread(target=self.watch_idle_cpu, name="rlmx-idle-watch", daemon=True).start()
        while True:
            self._busy = False
            item = self.inbox.get()
            self._busy = True
            if item is None:
                return
            message, _blobs = item
            if message["op"] == "shutdown":
                return
            try:
                reply = self._handle(message)
            except BaseException as exc:  # reported to the host, never fatal
                reply = {"op": "error", "error": _describe(exc)}
            reply["id"] = message.get("id")
            try:
                self.channel.send(reply)
            except MemoryError:
                self.channel.send({"op": "error", "id": message.get("id"), "error": "MemoryError"})

    def _handle(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message["op"]
        if op == "exec":
            timeout = message.get("timeout_s")
            self._timeout_s = float(timeout) if timeout else None
            result = self.repl.run_cell(
                str(message["code"]), on_start=self._arm, on_end=self._disarm
            )
            return {
                "op": "exec_result",
                "result": result.to_dict(),
                "variables": self.repl.user_variables()[:1000],
            }
        if op == "context":
            self.repl.load_context(None)  # free the old context before reading the new one
            self.repl.load_context(_load_context(message))
            return {"op": "context_loaded"}
        # op == "variable"
        value = self.repl.namespace.get(str(message["name"]))
        return {"op": "variable_value", "value": value if isinstance(value, str) else None}


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000]


def _close_other_fds(keep: set[int]) -> None:
    """Nothing inherited stays open but stdio and the two channel pipes."""
    try:
        fds = [int(entry.name) for entry in Path("/proc/self/fd").iterdir()]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _confine_self(config: dict[str, Any]) -> dict[str, Any]:
    """Apply every requested layer; report each as applied or with the reason it is not."""
    layers: dict[str, Any] = {}
    os.chdir(config["scratch"])
    os.environ.clear()
    os.environ.update({k: str(v) for k, v in config.get("env", {}).items()})
    _close_other_fds(config["keep_fds"])
    want = config.get("layers", {})
    if sys.platform.startswith("linux"):
        try:
            layers["capabilities"] = {"dropped": _confine.drop_capabilities()}
        except OSError as exc:
            layers["capabilities"] = {"error": str(exc)}
    if want.get("landlock"):
        try:
            layers["landlock"] = _confine.apply_landlock(config["read_only"], config["read_write"])
        except OSError as exc:
            layers["landlock"] = {"error": str(exc)}
    try:
        layers["rlimits"] = {"applied": _confine.apply_rlimits(config.get("rlimits", {}))}
    except (OSError, ValueError) as exc:
        layers["rlimits"] = {"error": str(exc)}
    if want.get("seccomp"):
        reason = _confine.seccomp_unavailable_reason()
        if reason is not None:
            layers["seccomp"] = {"error": reason}
        else:
            try:
                layers["seccomp"] = _confine.apply_seccomp(
                    deny_metadata_by_path=not config.get("namespaces", False)
                )
            except OSError as exc:
                layers["seccomp"] = {"error": str(exc)}
    layers["uid"] = os.getuid()
    return layers


def main(fd_in: int, fd_out: int) -> int:
    channel = _Channel(fd_in, fd_out)
    try:
        config, _ = channel.receive()
    except (EOFError, ProtocolError):
        return 2
    sys.path[:] = [str(p) for p in config.get("sys_path", sys.path)]
    config["keep_fds"] = {fd_in, fd_out}
    layers = _confine_self(config)
    worker = _Worker(channel, config)
    channel.send({"op": "ready", "layers": layers, "pid": os.getpid()})
    worker.serve()
    return 0
