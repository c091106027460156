"""A response cache in SQLite, so rerunning the same experiment costs nothing.

The key is a SHA-256 of the model (its ``"provider:model"`` name and endpoint), the
messages, and the effective settings (everything but the timeout). A hit replays the
stored reply with its original token counts, marked ``cached_response`` so it is counted
as cached and costs nothing. The file is safe to share between threads, event loops and
processes: each thread has its own connection, the database runs in WAL mode with a busy
timeout, and writes are single ``INSERT OR REPLACE`` statements.

Caching applies to whatever the model is asked, sampled or not: the point is replay. Use a
fresh path (or ``ResponseCache.clear()``) to sample again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlmx.exceptions import ConfigError
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings
from rlmx.models.wrappers import WrapperModel
from rlmx.usage import RequestUsage

__all__ = ["CachedModel", "ResponseCache", "default_cache_path"]

_SCHEMA_VERSION = 1
_KEY_VERSION = 1
_BUSY_TIMEOUT_MS = 30_000


def default_cache_path() -> Path:
    """``$RLMX_CACHE_PATH``, else ``$XDG_CACHE_HOME/rlmx/responses.sqlite3`` (``~/.cache``)."""
    explicit = os.environ.get("RLMX_CACHE_PATH")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rlmx" / "responses.sqlite3"


class ResponseCache:
    """Stored model replies, keyed on model + messages + settings."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.hits = 0
        self.misses = 0
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection()  # fail now, with a clear message, if the file is unusable

    # -- storage -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False only so close() may close every thread's connection;
            # each connection is still used by the one thread that opened it.
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._unusable(exc) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL,"
                " created_at REAL NOT NULL)"
            )
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                conn.close()
                raise ConfigError(
                    f"The response cache {self.path} has format version {version}, this rlmx "
                    f"reads version {_SCHEMA_VERSION}: choose another cache path or delete it."
                )
        except (sqlite3.DatabaseError, OSError) as exc:
            conn.close()
            raise self._unusable(exc) from None
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def _unusable(self, exc: BaseException) -> ConfigError:
        return ConfigError(
            f"Cannot use {self.path} as a response cache ({exc}); "
            "choose another path (--cache PATH) or delete the file."
        )

    def get(self, key: str) -> ModelResponse | None:
        row = (
            self._connection()
            .execute("SELECT response FROM responses WHERE key = ?", (key,))
            .fetchone()
        )
        if row is None:
            with self._lock:
                self.misses += 1
            return None
        try:
            response = _decode(row[0])
        except (ValueError, KeyError, TypeError, AttributeError):
            with self._lock:
                self.misses += 1
            return None  # a damaged entry is a miss; the next answer overwrites it
        with self._lock:
            self.hits += 1
        return response

    def put(self, key: str, model: str, response: ModelResponse) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO responses (key, model, response, created_at)"
            " VALUES (?, ?, ?, ?)",
            (key, model, _encode(response), time.time()),
        )

    def __len__(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> None:
        self._connection().execute("DELETE FROM responses")

    def close(self) -> None:
        """Close every thread's connection (the cache reopens on next use)."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for conn in connections:
            conn.close()

    # -- keys ----------------------------------------------------------------------------
    @staticmethod
    def key(model: Model, messages: Sequence[Message], settings: ModelSettings | None) -> str:
        effective = model.default_settings.merged(settings)
        payload = {
            "v": _KEY_VERSION,
            "model": model.name,
            "endpoint": getattr(_leaf(model), "base_url", None),
            "messages": [[m.role, m.content] for m in messages],
            "settings": {
                "temperature": effective.temperature,
                "max_tokens": effective.max_tokens,
                "top_p": effective.top_p,
                "seed": effective.seed,
                "stop": list(effective.stop) if effective.stop else None,
                "extra_body": effective.extra_body,
            },
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"


def _leaf(model: Model) -> Model:
    return model.unwrap() if isinstance(model, WrapperModel) else model


def _encode(response: ModelResponse) -> str:
    usage = asdict(response.usage)
    usage.pop("cached_response", None)
    return json.dumps(
        {
            "text": response.text,
            "usage": usage,
            "model_name": response.model_name,
            "finish_reason": response.finish_reason,
            "answered_by": response.answered_by,
        },
        ensure_ascii=False,
    )


def _decode(blob: str) -> ModelResponse:
    data: dict[str, Any] = json.loads(blob)
    usage = {k: int(v) for k, v in data["usage"].items() if k in _USAGE_FIELDS}
    return ModelResponse(
        text=str(data["text"]),
        usage=RequestUsage(**usage, cached_response=True),
        model_name=str(data["model_name"]),
        finish_reason=data.get("finish_reason"),
        answered_by=data.get("answered_by"),
    )


_USAGE_FIELDS = frozenset(
    {"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"}
)


class CachedModel(WrapperModel):
    """Answers from ``cache`` when it can; stores every new reply."""

    def __init__(self, wrapped: Model, cache: ResponseCache) -> None:
        super().__init__(wrapped)
        self.cache = cache

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        key = self.cache.key(self.wrapped, messages, settings)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        response = await self.wrapped.request(messages, settings)
        self.cache.put(key, self.name, response)
        return response
