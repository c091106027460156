"""Client-side rate limiting: the token buckets, the shared registry, the model wrapper."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from rlmx.exceptions import ConfigError, ModelAPIError, ModelConnectionError
from rlmx.models import (
    FunctionModel,
    Message,
    ModelResponse,
    ModelSettings,
    RateLimit,
    RateLimitedModel,
    RateLimiter,
    ScriptedModel,
    ratelimit,
    shared_limiter,
)
from rlmx.usage import RequestUsage

MESSAGES = [Message("user", "x" * 40)]  # 10 tokens + 4 framing = 14


@pytest.fixture(autouse=True)
def _fresh_limiters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter registry is process-wide: give every test its own."""
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})


class Clock:
    """A fake monotonic clock, advanced by hand (shared by threads: reads are atomic)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(clock: Clock, rpm: float | None = None, tpm: float | None = None) -> RateLimiter:
    return RateLimiter(RateLimit(requests_per_minute=rpm, tokens_per_minute=tpm), clock=clock)


# --------------------------------------------------------------------------- RateLimit


def test_rate_limit_defaults_to_no_limit() -> None:
    limit = RateLimit()
    assert limit.requests_per_minute is None
    assert limit.tokens_per_minute is None


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
@pytest.mark.parametrize("value", [0, -1, -0.5])
def test_rate_limit_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimit(**{field: value})
    assert str(info.value) == f"RateLimit.{field} must be > 0 (or None for no limit), not {value}."


def test_rate_limit_accepts_fractions_and_compares_by_value() -> None:
    assert RateLimit(requests_per_minute=0.5).requests_per_minute == 0.5
    assert RateLimit(tokens_per_minute=10) == RateLimit(tokens_per_minute=10)
    assert RateLimit(tokens_per_minute=10) != RateLimit(requests_per_minute=10)


# --------------------------------------------------------------------------- requests/min


def test_no_limits_never_wait() -> None:
    lim = RateLimiter(clock=Clock())
    assert lim.limit == RateLimit()
    assert [lim.reserve(10**9) for _ in range(1000)] == [0.0] * 1000


def test_a_minutes_burst_goes_at_once_then_waits_grow_60_over_rpm_apart() -> None:
    lim = limiter(Clock(), rpm=30)
    assert [lim.reserve(0) for _ in range(30)] == [0.0] * 30
    assert [lim.reserve(0) for _ in range(4)] == pytest.approx([2.0, 4.0, 6.0, 8.0])


def test_requests_refill_with_time() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=60)
    for _ in range(60):
        assert lim.reserve(0) == 0.0
    assert lim.reserve(0) == pytest.approx(1.0)  # the debt: one request
    clock.advance(1.0)  # repays it
    assert lim.reserve(0) == pytest.approx(1.0)
    clock.advance(3.0)  # three more back
    assert [lim.reserve(0) for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])


def test_refill_never_exceeds_one_minutes_allowance() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=10)
    clock.advance(3600.0)  # an hour idle does not bank an hour of requests
    assert [lim.reserve(0) for _ in range(11)] == pytest.approx([0.0] * 10 + [6.0])


# --------------------------------------------------------------------------- tokens/min


def test_tokens_per_minute() -> None:
    clock = Clock()
    lim = limiter(clock, tpm=600)  # 10 tokens a second
    assert lim.reserve(500) == 0.0
    assert lim.reserve(100) == 0.0
    assert lim.reserve(200) == pytest.approx(20.0)
    clock.advance(5.0)  # 50 tokens back: the debt is 150
    assert lim.reserve(0) == pytest.approx(15.0)


def test_oversize_request_waits_at_most_a_minutes_refill() -> None:
    lim = limiter(Clock(), tpm=600)
    # Into a full bucket it goes at once (a whole minute's allowance is taken).
    assert lim.reserve(10_000) == 0.0
    # Into an empty bucket it waits one minute, not 10_000 / 600 minutes.
    assert lim.reserve(10_000) == pytest.approx(60.0)
    assert lim.reserve(1) == pytest.approx(60.1)


def test_both_limits_the_longer_wait_wins() -> None:
    lim = limiter(Clock(), rpm=60, tpm=600)
    assert lim.reserve(600) == 0.0  # tokens spent, one request of 60 used
    assert lim.reserve(60) == pytest.approx(6.0)  # tokens: 60 / 10 per s
    for _ in range(58):
        lim.reserve(0)  # the requests bucket is now empty too (60 used)
    assert lim.reserve(0) == pytest.approx(6.0)  # tokens still the longer: debt 60
    for _ in range(10):
        lim.reserve(0)
    assert lim.reserve(0) == pytest.approx(12.0)  # requests now the longer: debt 12


# --------------------------------------------------------------------------- pause


def test_pause_holds_every_caller_even_without_limits() -> None:
    clock = Clock()
    lim = RateLimiter(clock=clock)
    lim.pause(5.0)
    assert lim.reserve(0) == pytest.approx(5.0)
    assert lim.reserve(0) == pytest.approx(5.0)
    lim.pause(2.0)  # a shorter pause does not cut the longer one
    assert lim.reserve(0) == pytest.approx(5.0)
    clock.advance(3.0)
    assert lim.reserve(0) == pytest.approx(2.0)
    lim.pause(4.0)  # a longer one extends it
    assert lim.reserve(0) == pytest.approx(4.0)
    clock.advance(4.0)
    assert lim.reserve(0) == 0.0


def test_pause_and_bucket_wait_take_the_longer() -> None:
    lim = limiter(Clock(), rpm=60)
    for _ in range(60):
        lim.reserve(0)
    lim.pause(0.5)
    assert lim.reserve(0) == pytest.approx(1.0)
    lim.pause(10.0)
    assert lim.reserve(0) == pytest.approx(10.0)


# --------------------------------------------------------------------------- cancel, settle


def test_cancel_refunds_the_reservation() -> None:
    lim = limiter(Clock(), rpm=60, tpm=600)
    assert lim.reserve(600) == 0.0
    for _ in range(59):
        lim.reserve(0)
    assert lim.reserve(100) == pytest.approx(10.0)  # 1 request and 100 tokens of debt
    lim.cancel(100)
    assert lim.reserve(0) == pytest.approx(1.0)  # back at zero: just this request's debt


def test_cancel_never_overfills_the_bucket() -> None:
    lim = limiter(Clock(), rpm=2, tpm=100)
    lim.cancel(50)  # nothing was taken
    assert lim.reserve(100) == 0.0
    assert lim.reserve(0) == 0.0
    assert lim.reserve(1) == pytest.approx(30.0)  # rpm 2: the third request waits 30 s


def test_cancel_without_limits_is_harmless() -> None:
    lim = RateLimiter(clock=Clock())
    lim.cancel(10)
    assert lim.reserve(10) == 0.0


def test_settle_charges_the_real_token_count() -> None:
    lim = limiter(Clock(), tpm=600)
    assert lim.reserve(100) == 0.0  # estimated 100
    lim.settle(100, 400)  # used 400: 300 more are taken
    assert lim.reserve(200) == 0.0
    assert lim.reserve(60) == pytest.approx(6.0)


def test_settle_refunds_an_overestimate() -> None:
    lim = limiter(Clock(), tpm=600)
    assert lim.reserve(600) == 0.0
    lim.settle(600, 100)  # 500 back
    assert lim.reserve(500) == 0.0
    assert lim.reserve(10) == pytest.approx(1.0)


def test_settle_exact_estimate_and_no_token_limit_change_nothing() -> None:
    lim = limiter(Clock(), tpm=600)
    lim.reserve(600)
    lim.settle(600, 600)
    assert lim.reserve(60) == pytest.approx(6.0)
    requests_only = limiter(Clock(), rpm=1)
    requests_only.settle(10, 1_000_000)
    assert requests_only.reserve(1_000_000) == 0.0


# --------------------------------------------------------------------------- configure


def test_configure_lowers_the_allowance_at_once() -> None:
    lim = limiter(Clock(), rpm=60)
    for _ in range(10):
        lim.reserve(0)  # 50 left
    lim.configure(RateLimit(requests_per_minute=30))  # capped at the new minute's worth
    assert lim.limit == RateLimit(requests_per_minute=30)
    assert [lim.reserve(0) for _ in range(31)][-2:] == pytest.approx([0.0, 2.0])


def test_configure_raising_the_limit_keeps_the_level() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=10)
    for _ in range(10):
        lim.reserve(0)
    lim.configure(RateLimit(requests_per_minute=600))  # no instant refill
    assert lim.reserve(0) == pytest.approx(0.1)  # but it refills 10 a second now
    clock.advance(1.0)
    assert lim.reserve(0) == 0.0


def test_configure_adds_and_removes_buckets() -> None:
    lim = RateLimiter(clock=Clock())
    lim.configure(RateLimit(tokens_per_minute=60))
    assert lim.reserve(60) == 0.0
    assert lim.reserve(1) == pytest.approx(1.0)
    lim.configure(RateLimit())
    assert lim.reserve(10**6) == 0.0


# --------------------------------------------------------------------------- acquire (real time)


async def test_acquire_really_sleeps() -> None:
    lim = RateLimiter(RateLimit(requests_per_minute=600))  # 0.1 s apart after the burst
    for _ in range(600):
        assert lim.reserve(0) == 0.0
    started = time.monotonic()
    await lim.acquire(0)
    first = time.monotonic() - started
    await lim.acquire(0)
    second = time.monotonic() - started
    assert first >= 0.08
    assert second >= 0.18


async def test_acquire_with_room_returns_at_once() -> None:
    lim = RateLimiter(RateLimit(requests_per_minute=1), clock=Clock())
    await asyncio.wait_for(lim.acquire(0), timeout=5)
    assert lim.reserve(0) == pytest.approx(60.0)


async def test_acquire_waits_out_a_pause() -> None:
    lim = RateLimiter()
    lim.pause(0.15)
    started = time.monotonic()
    await lim.acquire(0)
    assert time.monotonic() - started >= 0.12


async def test_cancelled_acquire_refunds_its_reservation() -> None:
    lim = limiter(Clock(), rpm=60, tpm=6000)  # frozen clock: only refunds change levels
    for _ in range(60):
        lim.reserve(100)
    task = asyncio.create_task(lim.acquire(100))  # would wait a second
    await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Without the refund this would be a 2 s wait for the requests, 2 s for the tokens.
    assert lim.reserve(100) == pytest.approx(1.0)


# --------------------------------------------------------------------------- shared_limiter


def test_shared_limiter_is_one_object_per_key() -> None:
    first = shared_limiter("acct-a")
    assert shared_limiter("acct-a") is first
    assert shared_limiter("acct-b") is not first
    assert {"acct-a": first, "acct-b": shared_limiter("acct-b")} == ratelimit._LIMITERS


def test_shared_limiter_is_configured_on_creation_and_reconfigured_later() -> None:
    limit = RateLimit(requests_per_minute=5)
    lim = shared_limiter("acct-c", limit)
    assert lim.limit == limit
    assert shared_limiter("acct-c").limit == limit  # no limit given: unchanged
    assert shared_limiter("acct-c", RateLimit(requests_per_minute=5)) is lim
    newer = RateLimit(tokens_per_minute=1000)
    assert shared_limiter("acct-c", newer) is lim
    assert lim.limit == newer


def test_shared_limiter_same_limit_does_not_reset_the_buckets() -> None:
    limit = RateLimit(requests_per_minute=2)
    lim = shared_limiter("acct-d", limit)
    lim.reserve(0)
    lim.reserve(0)
    shared_limiter("acct-d", RateLimit(requests_per_minute=2))
    assert lim.reserve(0) > 25.0  # still empty


def _admitted_in_threads(
    make_model: object, threads: int = 2, per_thread: int = 15
) -> tuple[int, float]:
    """Start ``per_thread`` requests in each of ``threads`` threads (each its own event loop)
    at the same moment; returns how many reached the provider promptly, and the seconds it
    took."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    admitted: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        async def main() -> None:
            inner = FunctionModel(lambda m, s: "ok", name="shared:model")
            model = make_model(inner)  # type: ignore[operator]
            barrier.wait()
            tasks = [asyncio.create_task(model.request(MESSAGES)) for _ in range(per_thread)]
            await asyncio.sleep(0.15)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with lock:
                admitted.append(len(inner.calls))

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    started = time.monotonic()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert not errors, errors
    assert len(admitted) == threads
    return sum(admitted), time.monotonic() - started


def test_threads_with_their_own_loops_share_one_bucket_frozen_clock() -> None:
    shared = limiter(Clock(), rpm=20)
    ratelimit._LIMITERS["shared"] = shared
    total, _ = _admitted_in_threads(RateLimitedModel)
    assert total == 20  # 30 asked for at once; the rest wait >= 3 s


def test_threads_with_their_own_loops_share_one_bucket_real_clock() -> None:
    limit = RateLimit(requests_per_minute=20)
    total, elapsed = _admitted_in_threads(lambda m: RateLimitedModel(m, limit))
    assert total >= 20
    assert total <= 20 + int(elapsed * 20 / 60)  # never more than the bucket plus its refill
    assert ratelimit._LIMITERS["shared"].limit == limit


# --------------------------------------------------------------------------- RateLimitedModel


def test_rate_limited_model_uses_its_keys_shared_limiter() -> None:
    limit = RateLimit(requests_per_minute=7)
    model = RateLimitedModel(ScriptedModel([], name="prov:a"), limit)
    assert model.limiter is shared_limiter("prov")
    assert model.limiter.limit == limit
    other = RateLimitedModel(ScriptedModel([], name="prov:b"))
    assert other.limiter is model.limiter
    own = RateLimiter()
    assert RateLimitedModel(ScriptedModel([]), limiter=own).limiter is own
    assert model.name == "prov:a"


async def test_a_429_with_retry_after_pauses_the_shared_limiter() -> None:
    clock = Clock()
    lim = RateLimiter(clock=clock)

    def throttled(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        raise ModelAPIError("slow down", status=429, retry_after_s=7.0)

    model = RateLimitedModel(FunctionModel(throttled), limiter=lim)
    sibling = RateLimitedModel(ScriptedModel(["ok"]), limiter=lim)
    with pytest.raises(ModelAPIError) as info:
        await model.request(MESSAGES)
    assert info.value.status == 429
    assert lim.reserve(0) == pytest.approx(7.0)  # every caller of the key waits
    task = asyncio.create_task(sibling.request(MESSAGES))
    await asyncio.sleep(0.02)
    assert not task.done()  # the sibling is held by the pause
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_429_without_retry_after_pauses_a_second() -> None:
    lim = RateLimiter(clock=Clock())
    model = RateLimitedModel(ScriptedModel([ModelAPIError("slow", status=429)]), limiter=lim)
    with pytest.raises(ModelAPIError):
        await model.request(MESSAGES)
    assert lim.reserve(0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "exc", [ModelAPIError("down", status=503, retry_after_s=9.0), ModelConnectionError("reset")]
)
async def test_other_errors_do_not_pause(exc: Exception) -> None:
    lim = RateLimiter(clock=Clock())
    model = RateLimitedModel(ScriptedModel([exc]), limiter=lim)
    with pytest.raises(type(exc)):
        await model.request(MESSAGES)
    assert lim.reserve(0) == 0.0


async def test_a_real_429_pause_delays_the_next_request() -> None:
    lim = RateLimiter()
    model = RateLimitedModel(
        ScriptedModel([ModelAPIError("slow", status=429, retry_after_s=0.15), "ok"]), limiter=lim
    )
    with pytest.raises(ModelAPIError):
        await model.request(MESSAGES)
    started = time.monotonic()
    assert (await model.request(MESSAGES)).text == "ok"
    assert time.monotonic() - started >= 0.12


async def test_token_estimate_is_settled_with_real_usage() -> None:
    lim = RateLimiter(RateLimit(tokens_per_minute=1000), clock=Clock())
    reply = ModelResponse(
        text="ok", usage=RequestUsage(input_tokens=250, output_tokens=50), model_name="m"
    )
    inner = FunctionModel(lambda m, s: reply)
    model = RateLimitedModel(inner, limiter=lim)
    assert model.count_tokens(MESSAGES) == 14
    response = await model.request(MESSAGES)
    assert response is reply
    # 14 estimated, then settled to 300 used: 700 left.
    assert lim.reserve(700) == 0.0
    assert lim.reserve(60) == pytest.approx(3.6)  # 60 tokens at 1000/min


async def test_without_a_token_limit_tokens_are_not_counted() -> None:
    counted: list[int] = []

    class Counting(ScriptedModel):
        def count_tokens(self, messages: Sequence[Message]) -> int:
            counted.append(1)
            return 10**9

    lim = RateLimiter(RateLimit(requests_per_minute=60), clock=Clock())
    model = RateLimitedModel(Counting(["a", "b"]), limiter=lim)
    assert (await model.request(MESSAGES)).text == "a"
    assert (await model.request(MESSAGES)).text == "b"
    assert counted == []
    assert [lim.reserve(0) for _ in range(59)][-1] == pytest.approx(1.0)


async def test_token_limit_uses_the_models_own_count() -> None:
    class Exact(ScriptedModel):
        def count_tokens(self, messages: Sequence[Message]) -> int:
            return 100

    lim = RateLimiter(RateLimit(tokens_per_minute=600), clock=Clock())
    reply = ModelResponse(text="ok", usage=RequestUsage(input_tokens=100), model_name="m")
    model = RateLimitedModel(Exact([reply]), limiter=lim)
    await model.request(MESSAGES)
    assert lim.reserve(500) == 0.0
    assert lim.reserve(10) == pytest.approx(1.0)


async def test_cancelled_request_while_waiting_refunds_and_never_calls_the_provider() -> None:
    lim = RateLimiter(RateLimit(requests_per_minute=1), clock=Clock())
    inner = ScriptedModel(["first", "second"])
    model = RateLimitedModel(inner, limiter=lim)
    assert (await model.request(MESSAGES)).text == "first"
    task = asyncio.create_task(model.request(MESSAGES))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(inner.calls) == 1
    assert lim.reserve(0) == pytest.approx(60.0)  # only the first request is owed


# --------------------------------------------------------------------------- oversize refunds


def test_cancelling_an_oversize_reservation_refunds_only_what_it_took() -> None:
    lim = limiter(Clock(), tpm=600)
    assert lim.reserve(100) == 0.0  # another caller's tokens: 500 left
    assert lim.reserve(10_000) == pytest.approx(10.0)  # capped: takes 600, 100 in debt
    lim.cancel(10_000)
    # Back to where it was before the oversize reservation: 500 left.
    assert lim.reserve(500) == 0.0
    assert lim.reserve(60) == pytest.approx(6.0)


def test_settling_an_oversize_reservation_does_not_refill_the_bucket() -> None:
    lim = limiter(Clock(), tpm=600)
    assert lim.reserve(1_000) == 0.0  # estimated 1000: 600 taken (a minute's allowance)
    lim.settle(1_000, 900)  # the provider really used 900 (> 600): nothing to give back
    assert lim.reserve(1) > 0.0
