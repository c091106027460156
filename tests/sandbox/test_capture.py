"""Per-cell output capture: the capped buffer, and routing writes by context."""

from __future__ import annotations

import asyncio
import io
import itertools
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlmx.sandbox._capture import CappedBuffer, capture, install_proxies

# --------------------------------------------------------------------- CappedBuffer


def test_under_the_limit_keeps_everything() -> None:
    buf = CappedBuffer(10)
    assert buf.write("abc") == 3
    assert buf.getvalue() == "abc"
    assert buf.dropped == 0
    assert buf.total == 3


def test_exactly_at_the_limit_keeps_everything() -> None:
    buf = CappedBuffer(10)
    buf.write("0123456789")
    assert buf.getvalue() == "0123456789"
    assert buf.dropped == 0


def test_one_over_the_limit_drops_one() -> None:
    buf = CappedBuffer(10)
    buf.write("0123456789X")
    assert buf.dropped == 1
    assert buf.getvalue() == "01234567\n[... 1 characters omitted ...]\n9X"


def test_over_the_limit_keeps_head_and_tail() -> None:
    buf = CappedBuffer(10)  # 8 characters of head, 2 of tail
    assert buf.write("abcdefghijklmnop") == 16
    assert buf.dropped == 6
    assert buf.total == 16
    assert buf.getvalue() == "abcdefgh\n[... 6 characters omitted ...]\nop"


def test_omission_note_groups_thousands() -> None:
    buf = CappedBuffer(100)
    buf.write("x" * 1_234_667)
    assert buf.dropped == 1_234_567
    value = buf.getvalue()
    assert "[... 1,234,567 characters omitted ...]" in value
    assert value.startswith("x" * 80 + "\n[...")
    assert value.endswith("...]\n" + "x" * 20)


def test_huge_write_keeps_memory_bounded() -> None:
    buf = CappedBuffer(1000)
    for _ in range(5):
        buf.write("y" * 2_000_000)
    assert buf.total == 10_000_000
    assert len(buf.getvalue()) < 1100
    assert buf.dropped == 10_000_000 - 1000


@pytest.mark.parametrize("limit", [0, -5])
def test_zero_limit_keeps_nothing(limit: int) -> None:
    buf = CappedBuffer(limit)
    assert buf.limit == 0
    assert buf.write("abc") == 3
    assert buf.write("") == 0
    assert buf.dropped == 3
    assert "abc" not in buf.getvalue()
    assert "3 characters omitted" in buf.getvalue()


def test_empty_buffer() -> None:
    buf = CappedBuffer(10)
    assert buf.getvalue() == ""
    assert buf.dropped == 0


def test_small_writes_fill_head_then_tail() -> None:
    buf = CappedBuffer(10)
    for ch in "abcdefghijklmnop":
        buf.write(ch)
    assert buf.getvalue() == "abcdefgh\n[... 6 characters omitted ...]\nop"


@given(
    text=st.text(alphabet="ab\n", max_size=300),
    limit=st.integers(min_value=0, max_value=120),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=20),
)
def test_split_writes_equal_one_write(text: str, limit: int, cuts: list[int]) -> None:
    whole = CappedBuffer(limit)
    whole.write(text)
    pieces = CappedBuffer(limit)
    bounds = [0, *sorted(c for c in cuts if c <= len(text)), len(text)]
    for start, end in itertools.pairwise(bounds):
        pieces.write(text[start:end])
    assert pieces.getvalue() == whole.getvalue()
    assert pieces.dropped == whole.dropped == max(0, len(text) - limit)
    assert pieces.total == whole.total == len(text)
    if len(text) <= limit:
        assert whole.getvalue() == text
    else:
        head_len = limit * 4 // 5
        tail_len = limit - head_len
        value = whole.getvalue()
        assert value.startswith(text[:head_len] + "\n[... ")
        assert value.endswith(" omitted ...]\n" + (text[-tail_len:] if tail_len else ""))


# --------------------------------------------------------------------- capture()


def test_capture_routes_prints_to_its_buffers(capsys: pytest.CaptureFixture[str]) -> None:
    with capture(1000) as streams:
        print("to out")
        print("to err", file=sys.stderr)
    assert streams.stdout.getvalue() == "to out\n"
    assert streams.stderr.getvalue() == "to err\n"
    assert capsys.readouterr() == ("", "")


def test_writes_outside_capture_reach_the_real_stream(capsys: pytest.CaptureFixture[str]) -> None:
    with capture(1000) as streams:
        print("inside")
    # The proxy stays installed, and passes through when no cell is capturing.
    print("outside")
    print("outside err", file=sys.stderr)
    sys.stdout.flush()
    assert streams.stdout.getvalue() == "inside\n"
    assert capsys.readouterr() == ("outside\n", "outside err\n")


def test_capture_nests(capsys: pytest.CaptureFixture[str]) -> None:
    with capture(1000) as outer:
        print("a")
        with capture(1000) as inner:
            print("b")
        print("c")
    print("d")
    assert outer.stdout.getvalue() == "a\nc\n"
    assert inner.stdout.getvalue() == "b\n"
    assert capsys.readouterr().out == "d\n"


def test_capture_applies_its_limit() -> None:
    with capture(10) as streams:
        print("x" * 100)
    assert streams.stdout.dropped == 91
    assert len(streams.stdout.getvalue()) < 60


def test_threads_capture_only_their_own_writes() -> None:
    barrier = threading.Barrier(2, timeout=10)
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(marker: str) -> None:
        try:
            with capture(100_000) as streams:
                barrier.wait()
                for _ in range(500):
                    print(marker)
                barrier.wait()
            results[marker] = streams.stdout.getvalue()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,)) for m in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert results == {"A": "A\n" * 500, "B": "B\n" * 500}


def test_thread_without_capture_is_not_captured_by_another(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A thread started inside a capture does not inherit it (threads get a fresh context)."""
    with capture(1000) as streams:
        print("cell")
        t = threading.Thread(target=lambda: print("thread"))
        t.start()
        t.join(10)
    assert streams.stdout.getvalue() == "cell\n"
    assert capsys.readouterr().out == "thread\n"


async def test_asyncio_tasks_capture_only_their_own_writes() -> None:
    async def work(marker: str) -> str:
        with capture(100_000) as streams:
            for _ in range(50):
                print(marker)
                await asyncio.sleep(0)
        return streams.stdout.getvalue()

    a, b = await asyncio.gather(work("A"), work("B"))
    assert a == "A\n" * 50
    assert b == "B\n" * 50


def test_proxy_reports_no_tty_and_the_real_encoding_while_capturing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = io.BytesIO()
    real = io.TextIOWrapper(raw, encoding="latin-1")
    monkeypatch.setattr(sys, "stdout", real)
    install_proxies()
    proxy = sys.stdout
    assert proxy is not real
    assert proxy.encoding == "latin-1"
    assert proxy.isatty() is False
    with capture(100):
        assert sys.stdout.isatty() is False
        sys.stdout.flush()  # no-op on the buffer, must not fail
        print("captured")
    print("real")
    sys.stdout.flush()
    assert raw.getvalue() == b"real\n"


def test_install_proxies_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    real = io.StringIO()
    monkeypatch.setattr(sys, "stdout", real)
    install_proxies()
    first = sys.stdout
    install_proxies()
    assert sys.stdout is first
    print("once")
    assert real.getvalue() == "once\n"


def test_proxy_rewraps_a_replaced_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something (a test runner) swapping sys.stdout later gets wrapped on the next capture."""
    first = io.StringIO()
    monkeypatch.setattr(sys, "stdout", first)
    with capture(100) as one:
        print("one")
    second = io.StringIO()
    monkeypatch.setattr(sys, "stdout", second)
    with capture(100) as two:
        print("two")
    print("plain")
    assert one.stdout.getvalue() == "one\n"
    assert two.stdout.getvalue() == "two\n"
    assert first.getvalue() == ""
    assert second.getvalue() == "plain\n"
