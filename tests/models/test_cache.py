"""The SQLite response cache, the caching wrapper, and cached runs end to end."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rlmx import RLM, ConfigError
from rlmx.models import (
    CachedModel,
    FunctionModel,
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    ResponseCache,
    RetryModel,
    ScriptedModel,
    WrapperModel,
    default_cache_path,
    ratelimit,
)
from rlmx.usage import RequestUsage

MESSAGES = [Message("system", "Be terse."), Message("user", "hello")]

RESPONSE = ModelResponse(
    text="the answer",
    usage=RequestUsage(
        input_tokens=120, output_tokens=30, cached_input_tokens=100, reasoning_tokens=7
    ),
    model_name="gpt-4o-mini-2024-07-18",
    finish_reason="stop",
    answered_by="openai:backup",
)


@pytest.fixture(autouse=True)
def _fresh_limiters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter registry is process-wide: give every test its own."""
    monkeypatch.setattr(ratelimit, "_LIMITERS", {})


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ResponseCache]:
    c = ResponseCache(tmp_path / "c.sqlite3")
    yield c
    c.close()


def _close_this_threads_connection(c: ResponseCache) -> None:
    # ResponseCache.close() cannot close connections other threads opened (see
    # test_close_after_use_from_other_threads), so threads close their own.
    conn = getattr(c._local, "conn", None)
    if conn is not None:
        conn.close()


class Endpoint(ScriptedModel):
    """A test double with a ``base_url``, like the HTTP providers."""

    def __init__(self, base_url: str, name: str = "prov:m") -> None:
        super().__init__([], name=name)
        self.base_url = base_url


# --------------------------------------------------------------------------- paths


def test_default_cache_path_honours_rlmx_cache_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RLMX_CACHE_PATH", str(tmp_path / "mine.sqlite3"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "mine.sqlite3"


def test_default_cache_path_expands_the_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RLMX_CACHE_PATH", "~/c.sqlite3")
    assert default_cache_path() == tmp_path / "c.sqlite3"


def test_default_cache_path_honours_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RLMX_CACHE_PATH", "")  # empty means unset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "rlmx" / "responses.sqlite3"


def test_default_cache_path_falls_back_to_dot_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RLMX_CACHE_PATH", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / ".cache" / "rlmx" / "responses.sqlite3"


def test_cache_without_path_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "deep" / "dir" / "default.sqlite3"
    monkeypatch.setenv("RLMX_CACHE_PATH", str(path))
    c = ResponseCache()
    try:
        assert c.path == path
        assert path.exists()  # parents created, file opened at once
        assert repr(c) == f"ResponseCache({str(path)!r})"
    finally:
        c.close()


# --------------------------------------------------------------------------- storage


def test_round_trip_replays_usage_marked_cached(cache: ResponseCache) -> None:
    assert cache.get("k") is None
    cache.put("k", "openai:gpt-4o-mini", RESPONSE)
    got = cache.get("k")
    assert got is not None
    assert got.text == "the answer"
    assert got.usage == RequestUsage(
        input_tokens=120,
        output_tokens=30,
        cached_input_tokens=100,
        reasoning_tokens=7,
        cached_response=True,
    )
    assert got.model_name == "gpt-4o-mini-2024-07-18"
    assert got.finish_reason == "stop"
    assert got.answered_by == "openai:backup"
    assert (cache.hits, cache.misses) == (1, 1)
    assert len(cache) == 1


def test_round_trip_of_unicode_and_missing_optional_fields(cache: ResponseCache) -> None:
    plain = ModelResponse(text="héllo ✓ 日本", usage=RequestUsage(1, 2), model_name="m")
    cache.put("k", "p:m", plain)
    got = cache.get("k")
    assert got is not None
    assert got.text == "héllo ✓ 日本"
    assert got.finish_reason is None
    assert got.answered_by is None
    assert got.usage.cached_response


def test_put_replaces_an_entry_and_stores_the_model_name(cache: ResponseCache) -> None:
    cache.put("k", "p:first", RESPONSE)
    newer = ModelResponse(text="newer", usage=RequestUsage(1, 1), model_name="m")
    cache.put("k", "p:second", newer)
    got = cache.get("k")
    assert got is not None and got.text == "newer"
    assert len(cache) == 1
    with sqlite3.connect(cache.path) as raw:
        assert raw.execute("SELECT model FROM responses").fetchall() == [("p:second",)]
    raw.close()


def test_entries_persist_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    first = ResponseCache(path)
    first.put("k", "p:m", RESPONSE)
    first.close()
    second = ResponseCache(str(path))
    try:
        got = second.get("k")
        assert got is not None and got.text == "the answer"
    finally:
        second.close()


def test_clear_len_close_and_reuse(cache: ResponseCache) -> None:
    for i in range(5):
        cache.put(f"k{i}", "p:m", RESPONSE)
    assert len(cache) == 5
    cache.clear()
    assert len(cache) == 0
    assert cache.get("k0") is None
    cache.put("again", "p:m", RESPONSE)
    cache.close()
    cache.close()  # twice is fine
    assert len(cache) == 1  # reopened on use
    got = cache.get("again")
    assert got is not None and got.text == "the answer"


def _store_raw(path: Path, key: str, blob: object) -> None:
    raw = sqlite3.connect(path)
    with raw:
        raw.execute(
            "INSERT OR REPLACE INTO responses (key, model, response, created_at)"
            " VALUES (?, 'p:m', ?, 0)",
            (key, blob),
        )
    raw.close()


@pytest.mark.parametrize(
    "blob",
    [
        "not json at all",
        '{"usage": {}, "model_name": "m"}',  # no text
        '{"text": "t", "model_name": "m"}',  # no usage
        '{"text": "t", "usage": {}}',  # no model name
        '{"text": "t", "usage": {"input_tokens": "many"}, "model_name": "m"}',
        '{"text": "t", "usage": {"input_tokens": null}, "model_name": "m"}',
        '["a", "list"]',
        '"a string"',
        42,
    ],
)
def test_a_damaged_entry_is_a_miss(cache: ResponseCache, blob: object) -> None:
    _store_raw(cache.path, "k", blob)
    assert cache.get("k") is None
    assert (cache.hits, cache.misses) == (0, 1)
    cache.put("k", "p:m", RESPONSE)  # the next answer overwrites it
    got = cache.get("k")
    assert got is not None and got.text == "the answer"


@pytest.mark.parametrize("usage", ["null", "[]", "3"])
def test_a_stored_usage_that_is_not_an_object_is_a_miss(cache: ResponseCache, usage: str) -> None:
    _store_raw(cache.path, "k", f'{{"text": "t", "usage": {usage}, "model_name": "m"}}')
    assert cache.get("k") is None


def test_unknown_usage_fields_are_ignored(cache: ResponseCache) -> None:
    blob = (
        '{"text": "t", "model_name": "m", "usage": {"input_tokens": 5, "output_tokens": 6,'
        ' "cached_response": false, "from_the_future": 9}}'
    )
    _store_raw(cache.path, "k", blob)
    got = cache.get("k")
    assert got is not None
    assert got.usage == RequestUsage(input_tokens=5, output_tokens=6, cached_response=True)
    assert got.finish_reason is None


# --------------------------------------------------------------------------- unusable files


def test_corrupt_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database\x00\xff" * 200)
    with pytest.raises(ConfigError) as info:
        ResponseCache(path)
    message = str(info.value)
    assert str(path) in message
    assert "choose another path" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose another path") as info:
        ResponseCache(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_a_path_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="choose another path") as info:
        ResponseCache(blocker / "c.sqlite3")
    assert str(blocker / "c.sqlite3") in str(info.value)


def test_schema_version_mismatch_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(ConfigError) as info:
        ResponseCache(path)
    message = str(info.value)
    assert str(path) in message
    assert "format version 99" in message
    assert "reads version 1" in message
    assert "choose another cache path or delete it" in message


def test_a_new_file_gets_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    ResponseCache(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


# --------------------------------------------------------------------------- keys


def key(model: Model, messages: Sequence[Message] = MESSAGES, **settings: Any) -> str:
    return ResponseCache.key(model, messages, ModelSettings(**settings) if settings else None)


def test_key_is_a_stable_sha256() -> None:
    model = ScriptedModel([], name="prov:m")
    first = key(model)
    assert first == key(ScriptedModel([], name="prov:m"))
    assert len(first) == 64 and int(first, 16) >= 0


def test_key_differs_by_model_name() -> None:
    assert key(ScriptedModel([], name="prov:a")) != key(ScriptedModel([], name="prov:b"))
    assert key(ScriptedModel([], name="one:m")) != key(ScriptedModel([], name="two:m"))


def test_key_differs_by_endpoint_even_through_wrappers() -> None:
    here = Endpoint("http://127.0.0.1:8000/v1")
    there = Endpoint("http://127.0.0.1:9000/v1")
    assert key(here) != key(there)
    assert key(here) != key(ScriptedModel([], name="prov:m"))  # no endpoint at all
    assert key(RetryModel(WrapperModel(here))) == key(here)
    assert key(RetryModel(there)) != key(RetryModel(here))


def test_key_differs_by_messages() -> None:
    model = ScriptedModel([])
    base = key(model)
    assert key(model, [Message("system", "Be terse."), Message("user", "hello!")]) != base
    assert key(model, [Message("system", "Be terse."), Message("assistant", "hello")]) != base
    assert key(model, [Message("user", "hello")]) != base
    assert key(model, [*MESSAGES, Message("user", "")]) != base
    assert key(model, list(reversed(MESSAGES))) != base
    assert key(model, tuple(MESSAGES)) == base


@pytest.mark.parametrize(
    "setting",
    [
        {"temperature": 0.0},
        {"temperature": 0.7},
        {"max_tokens": 100},
        {"top_p": 0.9},
        {"seed": 1},
        {"stop": ("END",)},
        {"extra_body": {"reasoning_effort": "low"}},
    ],
)
def test_key_differs_by_each_setting(setting: dict[str, Any]) -> None:
    model = ScriptedModel([])
    assert key(model, **setting) != key(model)


def test_key_distinguishes_values_of_one_setting() -> None:
    model = ScriptedModel([])
    assert key(model, seed=1) != key(model, seed=2)
    assert key(model, stop=("a",)) != key(model, stop=("a", "b"))
    assert key(model, extra_body={"x": 1}) != key(model, extra_body={"x": 2})


def test_key_ignores_the_timeout() -> None:
    model = ScriptedModel([])
    assert key(model, timeout_s=5.0) == key(model)
    assert key(model, timeout_s=5.0, seed=3) == key(model, timeout_s=600.0, seed=3)


def test_key_uses_the_effective_settings() -> None:
    plain = ScriptedModel([])
    tuned = ScriptedModel([])
    tuned.default_settings = ModelSettings(temperature=0.2, extra_body={"a": 1})
    # A model's defaults count as if they had been passed.
    assert key(tuned) == key(plain, temperature=0.2, extra_body={"a": 1})
    assert key(tuned, temperature=0.2) == key(tuned)
    assert key(tuned, temperature=0.9) == key(plain, temperature=0.9, extra_body={"a": 1})
    # extra_body merges, and its order does not matter.
    assert key(tuned, extra_body={"b": 2}) == key(
        plain, temperature=0.2, extra_body={"b": 2, "a": 1}
    )


def test_key_tolerates_values_json_cannot_encode() -> None:
    model = ScriptedModel([])
    assert key(model, extra_body={"d": Decimal("1.5")}) != key(model, extra_body={"d": "x"})


# --------------------------------------------------------------------------- CachedModel


def counting_model(name: str = "prov:m") -> FunctionModel:
    def reply(messages: Sequence[Message], settings: ModelSettings | None) -> str:
        return f"reply to {messages[-1].content}"

    return FunctionModel(reply, name=name)


async def test_cached_model_second_identical_request_makes_no_call(cache: ResponseCache) -> None:
    inner = counting_model()
    model = CachedModel(inner, cache)
    assert model.name == "prov:m"
    assert model.cache is cache
    first = await model.request(MESSAGES, ModelSettings(temperature=0))
    assert len(inner.calls) == 1
    assert not first.usage.cached_response
    second = await model.request(MESSAGES, ModelSettings(temperature=0))
    assert len(inner.calls) == 1
    assert second.usage.cached_response
    assert second.text == first.text == "reply to hello"
    assert second.usage.input_tokens == first.usage.input_tokens
    assert second.usage.output_tokens == first.usage.output_tokens
    assert (cache.hits, cache.misses) == (1, 1)
    assert len(cache) == 1


async def test_cached_model_misses_on_any_difference(cache: ResponseCache) -> None:
    inner = counting_model()
    model = CachedModel(inner, cache)
    await model.request(MESSAGES)
    await model.request(MESSAGES, ModelSettings(seed=1))
    await model.request([Message("user", "other")])
    await model.request(MESSAGES, ModelSettings(timeout_s=3))  # a hit: timeout is not keyed
    assert len(inner.calls) == 3
    assert (cache.hits, cache.misses) == (1, 3)
    assert len(cache) == 3


async def test_two_models_share_a_cache_without_mixing(cache: ResponseCache) -> None:
    a, b = counting_model("prov:a"), counting_model("prov:b")
    await CachedModel(a, cache).request(MESSAGES)
    await CachedModel(b, cache).request(MESSAGES)
    await CachedModel(counting_model("prov:a"), cache).request(MESSAGES)
    assert (len(a.calls), len(b.calls)) == (1, 1)
    assert (cache.hits, cache.misses) == (1, 2)


async def test_cached_model_errors_are_not_cached(cache: ResponseCache) -> None:
    from rlmx.exceptions import ModelAPIError

    inner = ScriptedModel([ModelAPIError("down", status=503), "ok"])
    model = CachedModel(inner, cache)
    with pytest.raises(ModelAPIError):
        await model.request(MESSAGES)
    assert len(cache) == 0
    assert (await model.request(MESSAGES)).text == "ok"
    assert (await model.request(MESSAGES)).text == "ok"
    assert len(inner.calls) == 2


# --------------------------------------------------------------------------- concurrency


def test_thread_safety(cache: ResponseCache) -> None:
    errors: list[BaseException] = []
    found: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        hits = 0
        try:
            start.wait()
            for i in range(100):
                own = ModelResponse(text=f"{t}-{i}", usage=RequestUsage(t, i), model_name="m")
                cache.put(f"own-{t}-{i}", "p:m", own)
                cache.put(f"shared-{i}", "p:m", own)
                got = cache.get(f"own-{t}-{i}")
                assert got is not None and got.text == f"{t}-{i}"
                assert got.usage.input_tokens == t and got.usage.output_tokens == i
                shared = cache.get(f"shared-{i}")
                assert shared is not None and shared.text.endswith(f"-{i}")
                hits += 2
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            _close_this_threads_connection(cache)
            with lock:
                found.append(hits)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    assert found == [200] * 8
    assert (cache.hits, cache.misses) == (1600, 0)  # no increment lost
    assert len(cache) == 800 + 100
    _close_this_threads_connection(cache)
    cache._connections.clear()  # every connection is closed already (see above)


def test_close_after_use_from_other_threads(tmp_path: Path) -> None:
    c = ResponseCache(tmp_path / "c.sqlite3")
    done = threading.Event()
    release = threading.Event()

    def worker() -> None:
        c.put("k", "p:m", RESPONSE)
        done.set()
        release.wait(10)
        _close_this_threads_connection(c)  # cleanup for the failing case

    th = threading.Thread(target=worker)
    th.start()
    try:
        done.wait(10)
        c.close()  # raises here
        assert len(c) == 1  # and the cache is usable again
    finally:
        release.set()
        th.join(10)
        _close_this_threads_connection(c)


def _process_worker(path: str, worker: int, start: Any, results: Any) -> None:
    """Runs in a spawned process: 100 put/get on keys that overlap the other workers'."""
    c = ResponseCache(path)
    start.wait(60)
    ok = 0
    for i in range(100):
        k = f"key-{worker * 25 + i}"
        c.put(k, "p:m", ModelResponse(text=f"w{worker}", usage=RequestUsage(i, 1), model_name="m"))
        got = c.get(k)
        if got is not None and got.text.startswith("w") and got.usage.cached_response:
            ok += 1
    c.close()
    results.put((worker, ok, c.hits, c.misses))


def test_process_safety(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Measuring coverage inside the children makes their (large) imports several times
    # slower and adds nothing: every line they run is measured in-process above.
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
    monkeypatch.delenv("COVERAGE_PROCESS_START", raising=False)
    path = tmp_path / "shared.sqlite3"
    ResponseCache(path).close()  # created once, before the race
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(str(path), w, start, results)) for w in range(4)
    ]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert outcomes == [(w, 100, 100, 0) for w in range(4)]
    check = ResponseCache(path)
    try:
        assert len(check) == 3 * 25 + 100  # keys 0..174
        assert check.get("key-0") is not None
        assert check.get("key-174") is not None
        assert check.get("key-175") is None
    finally:
        check.close()
    results.close()
    results.join_thread()


# --------------------------------------------------------------------------- end to end


class TablePriced(FunctionModel):
    """A FunctionModel priced from the price table, like a real provider's model."""

    def cost_of(self, usage: RequestUsage, response_model: str | None = None) -> Decimal | None:
        return Model.cost_of(self, usage, response_model)


def _root_reply(messages: Sequence[Message], settings: ModelSettings | None) -> str:
    if messages[0].role != "system":  # an llm_query sub-call
        return f"4 (asked: {messages[-1].content})"
    turns = sum(m.role == "assistant" for m in messages)
    if turns == 0:
        return "```repl\nanswer = llm_query('what is 2+2?')\nprint(answer)\n```"
    return "FINAL_VAR(answer)"


def _cached_run(path: Path, model: FunctionModel) -> Any:
    return RLM(model, cache=path, sandbox="local").completion("some context", "what is 2+2?")


def test_a_cached_rerun_makes_no_model_calls_and_costs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    first_model = TablePriced(_root_reply, name="openai:gpt-4o-mini")
    first = _cached_run(path, first_model)
    assert first.answer == "4 (asked: what is 2+2?)"
    assert len(first_model.calls) == 3  # two root turns and one sub-call
    assert first.usage.requests == 3
    assert first.usage.cached_responses == 0
    assert first.cost_usd is not None and first.cost_usd > 0
    assert first.sub_calls == 1

    second_model = TablePriced(_root_reply, name="openai:gpt-4o-mini")
    second = _cached_run(path, second_model)
    assert len(second_model.calls) == 0
    assert second.answer == first.answer
    assert second.usage.requests == first.usage.requests == 3
    assert second.usage.input_tokens == first.usage.input_tokens > 0
    assert second.usage.output_tokens == first.usage.output_tokens > 0
    assert second.usage.cached_responses == second.usage.requests
    assert second.cost_usd == 0
    assert second.usage.by_model["openai:gpt-4o-mini"].cached_responses == 3
    assert second.sub_calls == 1

    c = ResponseCache(path)
    try:
        assert len(c) == 3
    finally:
        c.close()


def test_a_shared_cache_object_is_left_open_by_the_run(tmp_path: Path) -> None:
    c = ResponseCache(tmp_path / "c.sqlite3")
    try:
        model = TablePriced(_root_reply, name="openai:gpt-4o-mini")
        RLM(model, cache=c, sandbox="local").completion("ctx", "q")
        assert len(c) == 3  # still usable: the run did not own it
        assert (c.hits, c.misses) == (0, 3)
        again = TablePriced(_root_reply, name="openai:gpt-4o-mini")
        RLM(again, cache=c, sandbox="local").completion("ctx", "q")
        assert len(again.calls) == 0
        assert (c.hits, c.misses) == (3, 3)
    finally:
        c.close()


def test_a_cached_rerun_of_a_priced_test_double_costs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    first = _cached_run(path, FunctionModel(_root_reply, name="fn", prices=(1, 2)))
    assert first.cost_usd is not None and first.cost_usd > 0
    model = FunctionModel(_root_reply, name="fn", prices=(1, 2))
    second = _cached_run(path, model)
    assert len(model.calls) == 0
    assert second.usage.cached_responses == 3
    assert second.cost_usd == 0
