"""The wire format between the host and an isolated worker: framed JSON plus raw bytes.

Every frame is a 5-byte header — one kind byte (``J`` for a JSON object, ``B`` for raw
bytes) and a big-endian 32-bit length — followed by the payload. A JSON frame carries
the message; bulk data it announces (prompts, contexts) follows as ``B`` frames, so it
is never escaped into JSON. Nothing is ever pickled: the worker runs untrusted code, so
whatever it sends is parsed as plain data, with sizes capped *before* reading.

This module is imported by the worker process too: standard library only.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "BYTES",
    "HEADER",
    "JSON",
    "STRAY_THREADS_EXIT",
    "Frame",
    "FrameLimits",
    "ProtocolError",
    "decode_json",
    "encode_bytes",
    "encode_json",
    "read_frame_blocking",
    "write_all",
]

# The worker's exit status when threads left behind by a cell keep using the CPU.
STRAY_THREADS_EXIT: Final = 75

JSON: Final = b"J"
BYTES: Final = b"B"
HEADER: Final = struct.Struct(">cI")


class ProtocolError(Exception):
    """A frame that breaks the protocol (bad kind, too large, not a JSON object...)."""


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Largest frames the reading side accepts, checked from the header alone."""

    max_json_bytes: int = 64 * 1024 * 1024
    max_bytes_frame: int = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    kind: bytes
    payload: bytes


def encode_json(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )
    return HEADER.pack(JSON, len(payload)) + payload


def encode_bytes(data: bytes) -> bytes:
    return HEADER.pack(BYTES, len(data)) + data


def check_header(header: bytes, limits: FrameLimits) -> tuple[bytes, int]:
    """The frame's kind and length, or ``ProtocolError`` if either is unacceptable."""
    kind, length = HEADER.unpack(header)
    if kind == JSON:
        if length > limits.max_json_bytes:
            raise ProtocolError(f"JSON frame of {length:,} bytes (limit {limits.max_json_bytes:,})")
    elif kind == BYTES:
        if length > limits.max_bytes_frame:
            limit = limits.max_bytes_frame
            raise ProtocolError(f"bytes frame of {length:,} bytes (limit {limit:,})")
    else:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    return kind, length


def decode_json(payload: bytes) -> dict[str, Any]:
    """A JSON frame's message: an object with a str ``op``; anything else is an error."""
    try:
        message = json.loads(payload.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed JSON frame: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("a JSON frame must be an object with a str 'op'")
    return message


def _read_exactly(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame_blocking(fd: int, limits: FrameLimits) -> Frame:
    """Read one frame from a blocking file descriptor (the worker's side)."""
    kind, length = check_header(_read_exactly(fd, HEADER.size), limits)
    return Frame(kind, _read_exactly(fd, length) if length else b"")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
