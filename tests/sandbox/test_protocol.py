"""The framed wire format between host and worker."""

from __future__ import annotations

import os
import threading

import pytest

from rlmx.sandbox._protocol import (
    BYTES,
    HEADER,
    JSON,
    FrameLimits,
    ProtocolError,
    check_header,
    decode_json,
    encode_bytes,
    encode_json,
    read_frame_blocking,
    write_all,
)

LIMITS = FrameLimits(max_json_bytes=1000, max_bytes_frame=5000)


def test_frames_round_trip_through_a_pipe() -> None:
    r, w = os.pipe()
    big = bytes(range(256)) * 1000  # larger than a pipe's buffer: needs the reader running
    limits = FrameLimits(max_json_bytes=1000, max_bytes_frame=len(big))
    writer = threading.Thread(
        target=lambda: write_all(w, encode_json({"op": "x", "s": "é\udc80"}) + encode_bytes(big))
    )
    writer.start()
    try:
        first = read_frame_blocking(r, limits)
        second = read_frame_blocking(r, limits)
    finally:
        writer.join()
        os.close(w)
    assert first.kind == JSON
    assert decode_json(first.payload) == {"op": "x", "s": "é\udc80"}
    assert second == type(second)(BYTES, big)
    with pytest.raises(EOFError):
        read_frame_blocking(r, limits)
    os.close(r)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.pack(JSON, 1001), "JSON frame of 1,001 bytes"),
        (HEADER.pack(BYTES, 2**32 - 1), "bytes frame of 4,294,967,295 bytes"),
        (HEADER.pack(b"X", 1), "unknown frame kind"),
    ],
)
def test_oversized_or_unknown_frames_are_refused_from_the_header(
    header: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        check_header(header, LIMITS)


def test_frames_within_limits_are_accepted() -> None:
    assert check_header(HEADER.pack(JSON, 1000), LIMITS) == (JSON, 1000)
    assert check_header(HEADER.pack(BYTES, 0), LIMITS) == (BYTES, 0)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"{not json", b"[1, 2]", b'{"op": 3}', b'"op"', b"[" * 100_000],
    ids=["utf8", "syntax", "list", "op-type", "string", "deep"],
)
def test_malformed_json_frames_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_json(payload)


def test_truncated_frame_is_end_of_stream() -> None:
    r, w = os.pipe()
    os.write(w, encode_json({"op": "x"})[:-2])
    os.close(w)
    with pytest.raises(EOFError):
        read_frame_blocking(r, LIMITS)
    os.close(r)
