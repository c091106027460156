"""Wrapper models: the forwarding base, retry with backoff, and fallback chains."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from rlmx import RLM
from rlmx.exceptions import (
    ConfigError,
    ContextLengthError,
    ModelAPIError,
    ModelConnectionError,
    ModelError,
    ModelRequestsDisabled,
    ModelResponseError,
    ScriptExhausted,
)
from rlmx.models import (
    CachedModel,
    FallbackModel,
    FunctionModel,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    OpenAIChatModel,
    RateLimit,
    RateLimitedModel,
    ResponseCache,
    RetryModel,
    RetryPolicy,
    ScriptedModel,
    WrapperModel,
    default_cache_path,
    is_outage,
    ratelimit,
    resolve_cache,
    shared_limiter,
    wrap_model,
)
from rlmx.models.wrappers import RETRYABLE_STATUSES
from rlmx.usage import RequestUsage

MESSAGES = [Message("user", "hello")]


@pytest.fixture(autouse=True)
def _fresh_limiters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter registry is process-wide: give every test its own."""
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})


class Sleeps:
    """A fake ``sleep`` that records the waits instead of taking them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class ClosingModel(ScriptedModel):
    """A scripted model that counts ``aclose`` calls."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def outage(status: int = 503, **kw: object) -> ModelAPIError:
    return ModelAPIError(f"status {status}", status=status, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- is_outage


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUSES))
def test_retryable_statuses_are_outages(status: int) -> None:
    assert is_outage(ModelAPIError("x", status=status))


def test_retryable_statuses_are_the_documented_ones() -> None:
    assert {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529} == RETRYABLE_STATUSES


@pytest.mark.parametrize("status", [None, 400, 401, 403, 404, 422, 501])
def test_other_statuses_are_not_outages(status: int | None) -> None:
    assert not is_outage(ModelAPIError("x", status=status))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ModelConnectionError("reset"), True),
        (ModelResponseError("no choices"), True),
        (ContextLengthError("too long"), False),
        (ContextLengthError("too long", status=429), False),
        (ModelRequestsDisabled("off"), False),
        (ScriptExhausted("done"), False),
        (ModelError("generic"), False),
        (ValueError("not a model error"), False),
    ],
)
def test_is_outage_by_kind(exc: BaseException, expected: bool) -> None:
    assert is_outage(exc) is expected


# --------------------------------------------------------------------------- WrapperModel


class Windowed(ScriptedModel):
    rate_limit_key_value = "acct-1"

    @property
    def rate_limit_key(self) -> str:
        return self.rate_limit_key_value

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return 1234


async def test_wrapper_forwards_everything_to_the_wrapped_model() -> None:
    inner = Windowed(["hi"], name="prov:inner", prices=(1, 2))
    inner.context_window = 1000
    inner.default_settings = ModelSettings(temperature=0.3)
    wrapper = WrapperModel(inner)
    assert wrapper.name == "prov:inner"
    assert wrapper.model_name == "inner"
    assert wrapper.provider == "prov"
    assert wrapper.context_window == 1000
    assert wrapper.default_settings == ModelSettings(temperature=0.3)
    assert wrapper.rate_limit_key == "acct-1"
    assert wrapper.count_tokens(MESSAGES) == 1234
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert wrapper.cost_of(usage) == Decimal(3)
    assert wrapper.answering_model("anything") is inner
    response = await wrapper.request(MESSAGES, ModelSettings(seed=1))
    assert response.text == "hi"
    assert inner.calls[0].settings == ModelSettings(seed=1)
    assert repr(wrapper) == "WrapperModel(Windowed('prov:inner'))"


def test_wrapper_setters_reach_the_wrapped_model() -> None:
    inner = ScriptedModel([])
    wrapper = WrapperModel(WrapperModel(inner))
    wrapper.context_window = 4096
    wrapper.default_settings = ModelSettings(max_tokens=7)
    assert inner.context_window == 4096
    assert inner.default_settings == ModelSettings(max_tokens=7)
    # A window learned late by the inner model is visible through the wrapper.
    inner.context_window = 8192
    assert wrapper.context_window == 8192


async def test_wrapper_aclose_and_unwrap() -> None:
    inner = ClosingModel([])
    middle = WrapperModel(inner)
    outer = RetryModel(middle)
    assert outer.unwrap() is inner
    assert middle.unwrap() is inner
    await outer.aclose()
    assert inner.closed == 1


# --------------------------------------------------------------------------- RetryPolicy


def test_retry_policy_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 6
    assert policy.initial_delay_s == 0.5
    assert policy.max_delay_s == 30.0
    assert policy.multiplier == 2.0
    assert policy.jitter is True
    assert policy.max_elapsed_s == 300.0
    assert policy.retry_if is is_outage


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1, not 0"),
        ({"initial_delay_s": -0.1}, "initial_delay_s=-0.1"),
        ({"max_delay_s": -1.0}, "max_delay_s=-1.0"),
        ({"multiplier": 0.5}, "multiplier=0.5"),
    ],
)
def test_retry_policy_validation(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigError, match="RetryPolicy") as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_retry_policy_boundary_values_are_valid() -> None:
    policy = RetryPolicy(max_attempts=1, initial_delay_s=0, max_delay_s=0, multiplier=1)
    assert policy.backoff_s(5) == 0.0


def test_retry_policy_equality_ignores_retry_if() -> None:
    assert RetryPolicy(retry_if=lambda e: True) == RetryPolicy()
    assert RetryPolicy(max_attempts=2) != RetryPolicy()


def test_backoff_is_exponential_and_capped_without_jitter() -> None:
    policy = RetryPolicy(initial_delay_s=0.5, multiplier=2.0, max_delay_s=3.0, jitter=False)
    assert [policy.backoff_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert policy.backoff_s(100) == 3.0
    triple = RetryPolicy(initial_delay_s=1.0, multiplier=3.0, max_delay_s=100.0, jitter=False)
    assert [triple.backoff_s(n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 9.0, 27.0]


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    policy = RetryPolicy(initial_delay_s=1.0, multiplier=2.0, max_delay_s=5.0)
    rng = random.Random(1234)
    for retry_number, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        samples = [policy.backoff_s(retry_number, rng) for _ in range(300)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(samples) < 0.1 * ceiling
        assert max(samples) > 0.9 * ceiling
        assert len(set(samples)) > 250


def test_jitter_uses_the_given_rng_deterministically() -> None:
    policy = RetryPolicy(initial_delay_s=1.0)
    first = [policy.backoff_s(n, random.Random(7)) for n in (1, 2, 3)]
    second = [policy.backoff_s(n, random.Random(7)) for n in (1, 2, 3)]
    assert first == second
    assert first[0] == random.Random(7).uniform(0.0, 1.0)


def test_jitter_without_rng_uses_the_global_random() -> None:
    policy = RetryPolicy(initial_delay_s=2.0)
    state = random.getstate()
    try:
        random.seed(99)
        assert policy.backoff_s(1) == random.Random(99).uniform(0.0, 2.0)
    finally:
        random.setstate(state)


def test_delay_obeys_retry_after_instead_of_backoff() -> None:
    exact = RetryPolicy(initial_delay_s=0.5, jitter=False)
    exc = outage(429, retry_after_s=7.0)
    assert exact.delay_s(1, exc) == 7.0
    assert exact.delay_s(5, exc) == 7.0  # no growth with the retry number
    assert exact.delay_s(3, outage(503)) == 2.0  # no Retry-After: the backoff

    jittered = RetryPolicy(initial_delay_s=0.5)
    rng = random.Random(3)
    samples = [jittered.delay_s(1, exc, rng) for _ in range(300)]
    # Retry-After is a floor; the spread is at most 10% + 50 ms.
    assert all(7.0 <= s <= 7.0 + 0.7 + 0.05 for s in samples)
    assert max(samples) > 7.6


def test_delay_with_zero_retry_after() -> None:
    policy = RetryPolicy(jitter=False, initial_delay_s=5.0)
    assert policy.delay_s(1, outage(429, retry_after_s=0.0)) == 0.0


def test_delay_for_non_model_exception_uses_backoff() -> None:
    policy = RetryPolicy(jitter=False, initial_delay_s=1.5)
    assert policy.delay_s(1, RuntimeError("x")) == 1.5


# --------------------------------------------------------------------------- RetryModel


def retrying(
    replies: list[object], **policy_kw: object
) -> tuple[RetryModel, ScriptedModel, Sleeps]:
    inner = ScriptedModel(replies, name="prov:m")  # type: ignore[arg-type]
    sleeps = Sleeps()
    policy = RetryPolicy(**{"jitter": False, **policy_kw})  # type: ignore[arg-type]
    return RetryModel(inner, policy, sleep=sleeps), inner, sleeps


async def test_retry_recovers_from_outages_with_growing_waits() -> None:
    model, inner, sleeps = retrying(
        [outage(503), ModelConnectionError("reset"), ModelResponseError("bad json"), "ok"],
        initial_delay_s=0.5,
    )
    response = await model.request(MESSAGES)
    assert response.text == "ok"
    assert len(inner.calls) == 4
    assert sleeps.waits == [0.5, 1.0, 2.0]


async def test_retry_success_on_first_attempt_sleeps_nothing() -> None:
    model, inner, sleeps = retrying(["ok"])
    assert (await model.request(MESSAGES)).text == "ok"
    assert sleeps.waits == []
    assert len(inner.calls) == 1


async def test_retry_passes_settings_through() -> None:
    model, inner, _ = retrying([outage(500), "ok"])
    await model.request(MESSAGES, ModelSettings(temperature=0.1))
    assert [c.settings for c in inner.calls] == [ModelSettings(temperature=0.1)] * 2


async def test_retry_obeys_retry_after() -> None:
    model, _, sleeps = retrying([outage(429, retry_after_s=4.0), "ok"], initial_delay_s=0.5)
    await model.request(MESSAGES)
    assert sleeps.waits == [4.0]


@pytest.mark.parametrize(
    "exc",
    [
        ContextLengthError("prompt too long"),
        ModelAPIError("bad request", status=400),
        ModelAPIError("bad key", status=401),
        ModelRequestsDisabled("requests are off"),
    ],
)
async def test_retry_does_not_retry_permanent_errors(exc: ModelError) -> None:
    model, inner, sleeps = retrying([exc, "never"])
    with pytest.raises(type(exc)) as info:
        await model.request(MESSAGES)
    assert info.value is exc
    assert len(inner.calls) == 1
    assert sleeps.waits == []
    assert exc.attempts == 1
    assert "gave up" not in str(exc)  # a single attempt is not reported as giving up


async def test_retry_lets_non_model_errors_through_untouched() -> None:
    def boom(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        raise KeyError("bug")

    sleeps = Sleeps()
    inner = FunctionModel(boom)
    model = RetryModel(inner, RetryPolicy(), sleep=sleeps)
    with pytest.raises(KeyError):
        await model.request(MESSAGES)
    assert len(inner.calls) == 1
    assert sleeps.waits == []


async def test_retry_gives_up_after_max_attempts() -> None:
    errors = [outage(503) for _ in range(3)]
    model, inner, sleeps = retrying([*errors, "too late"], max_attempts=3, initial_delay_s=1.0)
    with pytest.raises(ModelAPIError) as info:
        await model.request(MESSAGES)
    assert info.value is errors[-1]
    assert info.value.attempts == 3
    assert info.value.status == 503
    message = str(info.value)
    assert message.startswith("status 503 (gave up after 3 attempts over ")
    assert message.endswith(" s)")
    assert "would pass" not in message
    assert len(inner.calls) == 3
    assert sleeps.waits == [1.0, 2.0]


async def test_retry_with_one_attempt_means_no_retry() -> None:
    model, inner, sleeps = retrying([outage(503), "never"], max_attempts=1)
    with pytest.raises(ModelAPIError) as info:
        await model.request(MESSAGES)
    assert info.value.attempts == 1
    assert str(info.value) == "status 503"
    assert len(inner.calls) == 1
    assert sleeps.waits == []


async def test_retry_stops_when_the_next_wait_would_pass_max_elapsed() -> None:
    model, inner, sleeps = retrying(
        [outage(503), outage(503), "never"], initial_delay_s=0.6, max_elapsed_s=1.0
    )
    with pytest.raises(ModelAPIError) as info:
        await model.request(MESSAGES)
    assert info.value.attempts == 2
    message = str(info.value)
    assert "gave up after 2 attempts over" in message
    assert "the next wait (1.2 s) would pass the retry time limit" in message
    assert sleeps.waits == [0.6]
    assert len(inner.calls) == 2


async def test_retry_after_longer_than_max_elapsed_gives_up_at_once() -> None:
    model, inner, sleeps = retrying([outage(429, retry_after_s=600.0), "never"], max_elapsed_s=60.0)
    with pytest.raises(ModelAPIError) as info:
        await model.request(MESSAGES)
    assert info.value.attempts == 1
    message = str(info.value)
    assert "gave up after 1 attempt over" in message  # singular
    assert "attempts" not in message
    assert "the next wait (600.0 s) would pass the retry time limit" in message
    assert sleeps.waits == []
    assert len(inner.calls) == 1


async def test_retry_without_time_limit_keeps_going() -> None:
    model, _, sleeps = retrying([outage(429, retry_after_s=10_000.0), "ok"], max_elapsed_s=None)
    assert (await model.request(MESSAGES)).text == "ok"
    assert sleeps.waits == [10_000.0]


async def test_retry_keeps_extra_args_of_the_error() -> None:
    exc = ModelConnectionError("first")
    exc.args = ("first", "second")
    model, _, _ = retrying([ModelConnectionError("x"), exc], max_attempts=2)
    with pytest.raises(ModelConnectionError) as info:
        await model.request(MESSAGES)
    assert info.value.args[0].startswith("first (gave up after 2 attempts")
    assert info.value.args[1] == "second"


async def test_retry_with_custom_retry_if() -> None:
    seen: list[BaseException] = []

    def only_401(exc: BaseException) -> bool:
        seen.append(exc)
        return isinstance(exc, ModelAPIError) and exc.status == 401

    model, inner, sleeps = retrying(
        [ModelAPIError("auth", status=401), outage(503), "never"], retry_if=only_401
    )
    with pytest.raises(ModelAPIError) as info:
        await model.request(MESSAGES)
    assert info.value.status == 503
    assert len(inner.calls) == 2
    assert len(seen) == 2
    assert len(sleeps.waits) == 1


async def test_retry_accepts_an_async_sleep() -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    inner = ScriptedModel([outage(502), outage(502), "ok"])
    model = RetryModel(inner, RetryPolicy(jitter=False, initial_delay_s=0.25), sleep=fake_sleep)
    assert (await model.request(MESSAGES)).text == "ok"
    assert waits == [0.25, 0.5]


async def test_retry_uses_the_injected_rng_for_jitter() -> None:
    sleeps = Sleeps()
    inner = ScriptedModel([outage(500), outage(500), "ok"])
    model = RetryModel(inner, RetryPolicy(initial_delay_s=1.0), sleep=sleeps, rng=random.Random(5))
    await model.request(MESSAGES)
    expected = random.Random(5)
    assert sleeps.waits == [expected.uniform(0.0, 1.0), expected.uniform(0.0, 2.0)]


async def test_retry_default_sleep_is_asyncio_sleep() -> None:
    inner = ScriptedModel([outage(500), "ok"])
    model = RetryModel(inner, RetryPolicy(initial_delay_s=0.0, jitter=False))
    assert (await model.request(MESSAGES)).text == "ok"
    assert len(inner.calls) == 2


def test_retry_model_default_policy() -> None:
    model = RetryModel(ScriptedModel([]))
    assert model.policy == RetryPolicy()
    assert model.name == "test:scripted"
    assert repr(model) == "RetryModel(ScriptedModel('test:scripted'))"


# --------------------------------------------------------------------------- FallbackModel


def test_fallback_needs_a_model() -> None:
    with pytest.raises(ConfigError, match="at least one model"):
        FallbackModel([])


def test_fallback_takes_the_first_models_identity() -> None:
    first = ScriptedModel([], name="a:one")
    first.context_window = 100
    chain = FallbackModel(iter([first, ScriptedModel([], name="b:two")]))
    assert chain.name == "a:one"
    assert chain.model_name == "one"
    assert chain.context_window == 100
    assert chain.wrapped is first
    assert len(chain.models) == 2
    assert repr(chain) == "FallbackModel([ScriptedModel('a:one'), ScriptedModel('b:two')])"


async def test_first_model_answers_without_answered_by() -> None:
    a = ScriptedModel(["from a"], name="p:a")
    b = ScriptedModel(["from b"], name="p:b")
    response = await FallbackModel([a, b]).request(MESSAGES)
    assert response.text == "from a"
    assert response.answered_by is None
    assert len(b.calls) == 0


@pytest.mark.parametrize(
    "exc", [outage(503), outage(429), ModelConnectionError("down"), ModelResponseError("junk")]
)
async def test_next_model_answers_on_outage(exc: ModelError) -> None:
    a = ScriptedModel([exc], name="p:a")
    b = ScriptedModel(["from b"], name="p:b")
    response = await FallbackModel([a, b]).request(MESSAGES, ModelSettings(seed=3))
    assert response.text == "from b"
    assert response.answered_by == "p:b"
    assert b.calls[0].settings == ModelSettings(seed=3)
    assert b.calls[0].messages == tuple(MESSAGES)


async def test_third_model_answers_when_two_are_down() -> None:
    a = ScriptedModel([outage(503)], name="p:a")
    b = ScriptedModel([ModelConnectionError("reset")], name="p:b")
    c = ScriptedModel(["from c"], name="p:c")
    response = await FallbackModel([a, b, c]).request(MESSAGES)
    assert response.answered_by == "p:c"
    assert (len(a.calls), len(b.calls), len(c.calls)) == (1, 1, 1)


async def test_existing_answered_by_is_kept() -> None:
    inner_reply = ModelResponse(
        text="deep", usage=RequestUsage(1, 1), model_name="x", answered_by="p:deep"
    )
    a = ScriptedModel([outage(503)], name="p:a")
    b = ScriptedModel([inner_reply], name="p:b")
    response = await FallbackModel([a, b]).request(MESSAGES)
    assert response.answered_by == "p:deep"


@pytest.mark.parametrize(
    "exc",
    [
        ModelAPIError("bad key", status=401),
        ModelAPIError("bad request", status=400),
        ContextLengthError("too long"),
        ModelRequestsDisabled("off"),
    ],
)
async def test_non_outage_errors_are_raised_at_once(exc: ModelError) -> None:
    a = ScriptedModel([exc], name="p:a")
    b = ScriptedModel(["never"], name="p:b")
    with pytest.raises(type(exc)) as info:
        await FallbackModel([a, b]).request(MESSAGES)
    assert info.value is exc
    assert "fallbacks" not in str(exc)
    assert len(b.calls) == 0


async def test_all_failing_raises_the_last_error_naming_the_earlier_ones() -> None:
    a = ScriptedModel([outage(503)], name="p:a")
    b = ScriptedModel([ModelConnectionError("reset")], name="p:b")
    last = outage(529)
    c = ScriptedModel([last], name="p:c")
    with pytest.raises(ModelAPIError) as info:
        await FallbackModel([a, b, c]).request(MESSAGES)
    assert info.value is last
    assert str(last) == "status 529 (after fallbacks failed: p:a: status 503; p:b: reset)"


async def test_non_outage_after_a_fallback_still_names_the_failures() -> None:
    a = ScriptedModel([outage(503)], name="p:a")
    b = ScriptedModel([ModelAPIError("bad key", status=401)], name="p:b")
    c = ScriptedModel(["never"], name="p:c")
    with pytest.raises(ModelAPIError) as info:
        await FallbackModel([a, b, c]).request(MESSAGES)
    assert info.value.status == 401
    assert str(info.value) == "bad key (after fallbacks failed: p:a: status 503)"
    assert len(c.calls) == 0


async def test_single_model_chain_raises_its_error_unchanged() -> None:
    exc = outage(503)
    with pytest.raises(ModelAPIError) as info:
        await FallbackModel([ScriptedModel([exc], name="p:a")]).request(MESSAGES)
    assert str(info.value) == "status 503"


async def test_fallback_lets_non_model_errors_through() -> None:
    def boom(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        raise RuntimeError("bug")

    b = ScriptedModel(["never"], name="p:b")
    with pytest.raises(RuntimeError):
        await FallbackModel([FunctionModel(boom, name="p:a"), b]).request(MESSAGES)
    assert len(b.calls) == 0


async def test_fallback_over_retries_falls_back_only_after_retries_run_out() -> None:
    sleeps = Sleeps()
    a = ScriptedModel([outage(503), outage(503)], name="p:a")
    b = ScriptedModel(["from b"], name="p:b")
    policy = RetryPolicy(max_attempts=2, jitter=False)
    chain = FallbackModel([RetryModel(a, policy, sleep=sleeps), RetryModel(b, policy)])
    response = await chain.request(MESSAGES)
    assert response.answered_by == "p:b"
    assert len(a.calls) == 2
    assert sleeps.waits == [0.5]


def test_answering_model_finds_the_member_by_name() -> None:
    a = ScriptedModel([], name="p:a")
    b = ScriptedModel([], name="p:b")
    chain = FallbackModel([RetryModel(a), WrapperModel(b)])
    assert chain.answering_model("p:b") is b  # through the member's wrappers, to the leaf
    assert chain.answering_model("p:a") is a
    assert chain.answering_model(None) is a
    assert chain.answering_model("p:unknown") is a


def test_answering_model_finds_the_first_member_of_a_nested_chain() -> None:
    a = ScriptedModel([], name="p:a")
    b = ScriptedModel([], name="p:b")
    inner = FallbackModel([b, ScriptedModel([], name="p:c")])
    outer = FallbackModel([a, inner])
    assert outer.answering_model("p:b") is b  # the inner chain is named after b


async def test_answering_model_finds_a_later_member_of_a_nested_chain() -> None:
    a = ScriptedModel([outage(503)], name="p:a", prices=(1, 1))
    b = ScriptedModel([outage(503)], name="p:b", prices=(2, 2))
    c = ScriptedModel(["from c"], name="p:c", prices=(3, 3))
    outer = FallbackModel([a, FallbackModel([b, c])])
    response = await outer.request(MESSAGES)
    assert response.answered_by == "p:c"
    # The engine files usage and cost under answering_model(response.answered_by).
    assert outer.answering_model(response.answered_by) is c


async def test_fallback_cost_is_that_of_the_answering_member() -> None:
    a = ScriptedModel([], name="p:a", prices=(1, 1))
    b = ScriptedModel([], name="p:b", prices=(10, 10))
    chain = FallbackModel([a, b])
    usage = RequestUsage(input_tokens=1_000_000)
    assert chain.answering_model("p:b").cost_of(usage) == Decimal(10)
    assert chain.cost_of(usage) == Decimal(1)


async def test_fallback_aclose_closes_every_model() -> None:
    models = [ClosingModel([], name=f"p:{n}") for n in "abc"]
    chain = FallbackModel(models)
    await chain.aclose()
    assert [m.closed for m in models] == [1, 1, 1]


def test_wrappers_are_models() -> None:
    inner = ScriptedModel([])
    for wrapper in (WrapperModel(inner), RetryModel(inner), FallbackModel([inner])):
        assert isinstance(wrapper, Model)


# --------------------------------------------------------------------------- composition


def chain_of(model: Model) -> list[type]:
    """The wrapper classes from the outside in, ending with the leaf's class."""
    out: list[type] = []
    while True:
        out.append(type(model))
        if not isinstance(model, WrapperModel) or isinstance(model, FallbackModel):
            return out
        model = model.wrapped


def test_wrap_model_default_is_retry_around_rate_limit() -> None:
    leaf = ScriptedModel([], name="p:a")
    wrapped = wrap_model(leaf)
    assert chain_of(wrapped) == [RetryModel, RateLimitedModel, ScriptedModel]
    assert isinstance(wrapped, RetryModel)
    assert wrapped.policy == RetryPolicy()
    assert wrapped.unwrap() is leaf
    assert wrapped.name == "p:a"
    limited = wrapped.wrapped
    assert isinstance(limited, RateLimitedModel)
    assert limited.limiter is shared_limiter("p")
    assert limited.limiter.limit == RateLimit()


def test_wrap_model_custom_policy_and_rate_limit() -> None:
    policy = RetryPolicy(max_attempts=2)
    limit = RateLimit(requests_per_minute=30)
    wrapped = wrap_model(ScriptedModel([], name="p:a"), retry=policy, rate_limit=limit)
    assert isinstance(wrapped, RetryModel)
    assert wrapped.policy is policy
    assert isinstance(wrapped.wrapped, RateLimitedModel)
    assert wrapped.wrapped.limiter.limit == limit


def test_wrap_model_without_retry() -> None:
    wrapped = wrap_model(ScriptedModel([], name="p:a"), retry=False)
    assert chain_of(wrapped) == [RateLimitedModel, ScriptedModel]


def test_wrap_model_with_fallbacks_and_cache(tmp_path: Path) -> None:
    a = ScriptedModel([], name="p:a")
    b = ScriptedModel([], name="q:b")
    cache = ResponseCache(tmp_path / "c.sqlite3")
    try:
        wrapped = wrap_model(a, fallbacks=[b], cache=cache)
        assert isinstance(wrapped, CachedModel)
        assert wrapped.cache is cache
        chain = wrapped.wrapped
        assert isinstance(chain, FallbackModel)
        assert [chain_of(m) for m in chain.models] == [
            [RetryModel, RateLimitedModel, ScriptedModel]
        ] * 2
        assert [m.unwrap() for m in chain.models] == [a, b]  # type: ignore[attr-defined]
        assert wrapped.name == "p:a"
        # Each provider key draws from its own shared limiter.
        limiters = [m.wrapped.limiter for m in chain.models]  # type: ignore[attr-defined]
        assert limiters == [shared_limiter("p"), shared_limiter("q")]
        assert limiters[0] is not limiters[1]
    finally:
        cache.close()


def test_resolve_cache_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLMX_CACHE_PATH", str(tmp_path / "default.sqlite3"))
    assert resolve_cache(None) is None
    assert resolve_cache(False) is None
    caches = [
        resolve_cache(True),
        resolve_cache(str(tmp_path / "s.sqlite3")),
        resolve_cache(tmp_path / "p.sqlite3"),
    ]
    try:
        assert [c.path for c in caches if c is not None] == [
            tmp_path / "default.sqlite3",
            tmp_path / "s.sqlite3",
            tmp_path / "p.sqlite3",
        ]
        given = caches[0]
        assert resolve_cache(given) is given
    finally:
        for c in caches:
            assert c is not None
            c.close()


# --------------------------------------------------------------------------- through RLM

LOOPBACK = "http://127.0.0.1:9/v1"


def test_rlm_wraps_a_named_model_by_default() -> None:
    rlm = RLM(model="openai:x", base_url=LOOPBACK, sandbox="local")
    assert chain_of(rlm.model) == [RetryModel, RateLimitedModel, OpenAIChatModel]
    assert rlm.model.name == "openai:x"
    assert rlm.sub_model is rlm.model
    assert rlm.cache is None
    leaf = rlm.model.unwrap()  # type: ignore[attr-defined]
    assert isinstance(leaf, OpenAIChatModel)
    assert leaf.base_url == "http://127.0.0.1:9/v1"


def test_rlm_uses_a_model_instance_unwrapped() -> None:
    model = ScriptedModel(["FINAL(1)"])
    rlm = RLM(model=model, sandbox="local")
    assert rlm.model is model
    assert rlm.sub_model is model


def test_rlm_wraps_a_model_instance_when_asked() -> None:
    model = ScriptedModel([])
    policy = RetryPolicy(max_attempts=3)
    rlm = RLM(model=model, retry=policy, sandbox="local")
    assert chain_of(rlm.model) == [RetryModel, RateLimitedModel, ScriptedModel]
    assert rlm.model.policy is policy  # type: ignore[attr-defined]
    limited = RLM(model=model, rate_limit=RateLimit(tokens_per_minute=100), sandbox="local")
    assert chain_of(limited.model) == [RetryModel, RateLimitedModel, ScriptedModel]


def test_rlm_retry_false_gives_no_retry_model() -> None:
    rlm = RLM(model="openai:x", base_url=LOOPBACK, retry=False, sandbox="local")
    assert chain_of(rlm.model) == [RateLimitedModel, OpenAIChatModel]


def test_rlm_fallback_models_give_a_fallback_chain() -> None:
    rlm = RLM(model="openai:x", base_url=LOOPBACK, fallback_models=["openai:y"], sandbox="local")
    assert isinstance(rlm.model, FallbackModel)
    assert [m.name for m in rlm.model.models] == ["openai:x", "openai:y"]
    assert [chain_of(m) for m in rlm.model.models] == [
        [RetryModel, RateLimitedModel, OpenAIChatModel]
    ] * 2


def test_rlm_cache_true_uses_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "default-cache.sqlite3"
    monkeypatch.setenv("RLMX_CACHE_PATH", str(path))
    rlm = RLM(model="openai:x", base_url=LOOPBACK, cache=True, sandbox="local")
    try:
        assert rlm.cache is not None
        assert rlm.cache.path == path == default_cache_path()
        assert path.exists()
        assert isinstance(rlm.model, CachedModel)
        assert rlm.model.cache is rlm.cache
        assert chain_of(rlm.model.wrapped) == [RetryModel, RateLimitedModel, OpenAIChatModel]
    finally:
        asyncio.run(rlm.aclose())


def test_rlm_model_instance_with_cache_is_cached_without_retries(tmp_path: Path) -> None:
    model = ScriptedModel([])
    rlm = RLM(model=model, cache=tmp_path / "c.sqlite3", sandbox="local")
    try:
        assert isinstance(rlm.model, CachedModel)
        assert RetryModel not in chain_of(rlm.model.wrapped)
        assert rlm.model.unwrap() is model
    finally:
        asyncio.run(rlm.aclose())


def test_fallback_in_a_run_files_usage_under_the_answering_model() -> None:
    def down(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        raise ModelAPIError("unavailable", status=503)

    a = FunctionModel(down, name="p:a", prices=(100, 100))
    b = ScriptedModel(["```repl\nx = 6 * 7\n```", "FINAL_VAR(x)"], name="p:b", prices=(1, 2))
    result = RLM(a, fallback_models=[b], sandbox="local").completion("ctx", "q")
    assert result.answer == "42"
    assert len(a.calls) == 2
    assert len(b.calls) == 2
    assert set(result.usage.by_model) == {"p:b"}
    assert result.usage.by_model["p:b"].requests == 2
    used = result.usage.by_model["p:b"]
    # Priced at b's rates (costs are linear, so the total is the price of the summed tokens).
    assert result.cost_usd == b.cost_of(RequestUsage(used.input_tokens, used.output_tokens))
    assert result.cost_usd is not None and result.cost_usd > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_elapsed_s": -1.0}, {"initial_delay_s": float("nan")}, {"max_elapsed_s": float("nan")}],
)
def test_retry_policy_refuses_negative_or_nan_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_rate_limit_refuses_nan() -> None:
    with pytest.raises(ConfigError):
        RateLimit(requests_per_minute=float("nan"))


def test_an_instance_with_a_cache_or_fallback_gets_no_retry_or_limiter(tmp_path: Path) -> None:
    root = ScriptedModel(["FINAL(x)"])
    other = ScriptedModel(["FINAL(y)"])
    rlm = RLM(root, sandbox="local", cache=tmp_path / "c.sqlite3", fallback_models=[other])
    assert isinstance(rlm.model, CachedModel)
    chain = rlm.model.wrapped
    assert isinstance(chain, FallbackModel)
    assert chain.models == [root, other]
