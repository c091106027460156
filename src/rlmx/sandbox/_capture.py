"""Per-cell stdout/stderr capture that is safe when many REPLs run at once.

``sys.stdout`` is process-global, so swapping it per cell would mix the output of
concurrent runs. Instead a proxy is installed once; each write goes to the buffer of
the cell running in the current context (a ``ContextVar``), or to the real stream.
"""

from __future__ import annotations

import io
import sys
import threading
from contextvars import ContextVar
from typing import TextIO

__all__ = ["CappedBuffer", "capture", "install_proxies"]


class CappedBuffer:
    """Keeps the head and the tail of a stream within ``limit`` characters.

    Memory stays bounded however much is written (``print('x' * 10**9)`` included), and
    the model sees both how the output began and how it ended.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._head_limit = self.limit * 4 // 5
        self._tail_limit = self.limit - self._head_limit
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self.total = 0

    def write(self, s: str) -> int:
        n = len(s)
        self.total += n
        room = self._head_limit - self._head_len
        if room > 0:
            part = s[:room]
            self._head.append(part)
            self._head_len += len(part)
            s = s[room:]
        if s and self._tail_limit:
            self._tail = (self._tail + s[-self._tail_limit :])[-self._tail_limit :]
        return n

    @property
    def dropped(self) -> int:
        return max(0, self.total - self._head_len - len(self._tail))

    def getvalue(self) -> str:
        head = "".join(self._head)
        dropped = self.dropped
        if not dropped:
            return head + self._tail
        return f"{head}\n[... {dropped:,} characters omitted ...]\n{self._tail}"


class CellStreams:
    def __init__(self, limit: int) -> None:
        # One budget for both streams, as the model sees them together.
        self.stdout = CappedBuffer(limit)
        self.stderr = CappedBuffer(max(1000, limit // 4))


_current: ContextVar[CellStreams | None] = ContextVar("rlmx_cell_streams", default=None)
_install_lock = threading.Lock()


class _StreamProxy(io.TextIOBase):
    def __init__(self, real: TextIO, which: str) -> None:
        self._real = real
        self._which = which

    def write(self, s: str) -> int:
        streams = _current.get()
        if streams is None:
            return self._real.write(s)
        buf = streams.stdout if self._which == "stdout" else streams.stderr
        return buf.write(s)

    def flush(self) -> None:
        if _current.get() is None:
            self._real.flush()

    def isatty(self) -> bool:
        return _current.get() is None and self._real.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._real, "encoding", "utf-8")

    def fileno(self) -> int:
        return self._real.fileno()


def install_proxies() -> None:
    """Wrap ``sys.stdout``/``sys.stderr`` if something (e.g. a test runner) replaced them."""
    with _install_lock:
        if not isinstance(sys.stdout, _StreamProxy):
            sys.stdout = _StreamProxy(sys.stdout, "stdout")
        if not isinstance(sys.stderr, _StreamProxy):
            sys.stderr = _StreamProxy(sys.stderr, "stderr")


class capture:
    """Route this context's writes to fresh capped buffers."""

    def __init__(self, limit: int) -> None:
        self.streams = CellStreams(limit)

    def __enter__(self) -> CellStreams:
        install_proxies()
        self._token = _current.set(self.streams)
        return self.streams

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
