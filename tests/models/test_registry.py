"""The provider registry (``get_model``), API keys and base URLs, and the request switch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import openai
import pytest

import rlmx.models
from rlmx.exceptions import ConfigError, ModelRequestsDisabled, UnknownProviderError
from rlmx.models import (
    Message,
    Model,
    ModelResponse,
    ModelSettings,
    OpenAIChatModel,
    ScriptedModel,
    get_model,
    known_providers,
    register_provider,
)
from rlmx.models.openai import PRESETS, requests_allowed
from rlmx.pricing import price_for
from rlmx.testing import MockOpenAIServer

# TEST-NET-3 (RFC 5737): documentation-only, must never actually be contacted.
UNREACHABLE = "http://203.0.113.1/v1"
LOCAL_PRESETS = ["ollama", "vllm", "lmstudio", "llamacpp-server"]


@pytest.fixture(autouse=True)
def _clean_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and base URLs from the developer's shell must not change what presets resolve to."""
    for preset in PRESETS.values():
        for var in (preset.key_env, preset.base_url_env):
            if var:
                monkeypatch.delenv(var, raising=False)


def _set_key(monkeypatch: pytest.MonkeyPatch, provider: str) -> None:
    key_env = PRESETS[provider].key_env
    if key_env:
        monkeypatch.setenv(key_env, f"test-key-for-{provider}")


# -- resolving "provider:model" -------------------------------------------------------------


@pytest.mark.parametrize("provider", sorted(PRESETS))
def test_every_preset_resolves_to_an_openai_chat_model_at_its_base_url(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_key(monkeypatch, provider)
    model = get_model(f"{provider}:some-model")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == PRESETS[provider].base_url.rstrip("/")
    assert model.provider == provider
    assert model.name == f"{provider}:some-model"
    assert model.model_name == "some-model"


def test_every_preset_is_a_known_provider() -> None:
    assert set(PRESETS) <= set(known_providers())
    assert known_providers() == sorted(known_providers())


def test_model_name_keeps_everything_after_the_first_colon() -> None:
    model = get_model("ollama:qwen2.5-coder:7b")
    assert model.name == "ollama:qwen2.5-coder:7b"
    assert model.model_name == "qwen2.5-coder:7b"


def test_surrounding_whitespace_is_ignored() -> None:
    model = get_model("  ollama:llama3  ")
    assert model.name == "ollama:llama3"


def test_a_model_instance_passes_through_unchanged() -> None:
    model = ScriptedModel(["hi"])
    assert get_model(model) is model
    assert get_model(model, base_url="http://127.0.0.1:1/v1") is model


def test_a_model_without_provider_and_without_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        get_model("gpt-5-mini")
    assert not isinstance(info.value, UnknownProviderError)
    message = str(info.value)
    assert "'provider:model'" in message
    assert "openai:gpt-5-mini" in message
    assert "--base-url" in message


def test_an_empty_spec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="provider:model"):
        get_model("")


def test_a_bare_name_with_base_url_is_an_openai_compatible_server_at_that_url() -> None:
    model = get_model("llama3", base_url="http://127.0.0.1:9999/v1/")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == "http://127.0.0.1:9999/v1"
    assert model.model_name == "llama3"
    assert model.name == "openai:llama3"


def test_base_url_points_a_preset_at_another_server() -> None:
    model = get_model("ollama:llama3", base_url="http://127.0.0.1:9999/v1")
    assert isinstance(model, OpenAIChatModel)
    assert model.provider == "ollama"
    assert model.base_url == "http://127.0.0.1:9999/v1"


def test_keyword_arguments_reach_the_model() -> None:
    settings = ModelSettings(temperature=0.25)
    model = get_model("ollama:llama3", settings=settings, context_window=4096)
    assert model.default_settings == settings
    assert model.context_window == 4096


@pytest.mark.parametrize("spec", ["openai:", "ollama:", "openai:   "])
def test_a_provider_without_a_model_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="names no model") as info:
        get_model(spec)
    assert not isinstance(info.value, UnknownProviderError)


@pytest.mark.parametrize(("spec", "suggestion"), [("opena:x", "openai"), ("olama:x", "ollama")])
def test_an_unknown_provider_suggests_the_closest_known_one(spec: str, suggestion: str) -> None:
    with pytest.raises(UnknownProviderError) as info:
        get_model(spec)
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.provider == spec.split(":")[0]
    assert err.suggestion == suggestion
    assert err.known == known_providers()
    message = str(err)
    assert f"Did you mean {suggestion!r}?" in message
    for name in known_providers():
        assert name in message


def test_an_unknown_provider_with_nothing_close_suggests_nothing() -> None:
    with pytest.raises(UnknownProviderError) as info:
        get_model("zzzzzzzz:x")
    assert info.value.suggestion is None
    assert "Did you mean" not in str(info.value)
    assert "Known providers: " in str(info.value)


@pytest.mark.parametrize(
    ("spec", "key_var"),
    [
        ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
        ("gemini:gemini-2.5-pro", "GEMINI_API_KEY"),
    ],
)
def test_native_providers_are_registered_and_need_their_key(
    spec: str, key_var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert spec.partition(":")[0] in known_providers()
    with pytest.raises(ConfigError, match=key_var):
        get_model(spec)
    monkeypatch.setenv(key_var, "test-key")
    model = get_model(spec)
    assert model.name == spec


def test_register_provider_adds_a_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    # A private copy, so the registration does not outlive this test.
    monkeypatch.setattr(rlmx.models, "_REGISTRY", dict(rlmx.models._REGISTRY))
    seen: list[tuple[str, dict[str, Any]]] = []

    class EchoModel(Model):
        def __init__(self, model_name: str) -> None:
            self.name = f"echo:{model_name}"
            self.model_name = model_name

        async def request(
            self, messages: Sequence[Message], settings: ModelSettings | None = None
        ) -> ModelResponse:  # pragma: no cover - never called
            raise NotImplementedError

    def factory(model_name: str, **kwargs: Any) -> Model:
        seen.append((model_name, kwargs))
        return EchoModel(model_name)

    assert "echo" not in known_providers()
    register_provider("echo", factory)
    assert "echo" in known_providers()

    model = get_model("echo:parrot", flavour="loud")
    assert isinstance(model, EchoModel)
    assert model.name == "echo:parrot"
    get_model("echo:parrot", base_url="http://127.0.0.1:1/v1")
    assert seen == [
        ("parrot", {"flavour": "loud"}),
        ("parrot", {"base_url": "http://127.0.0.1:1/v1"}),
    ]


def test_register_provider_replaces_an_existing_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rlmx.models, "_REGISTRY", dict(rlmx.models._REGISTRY))
    scripted = ScriptedModel(["hi"])
    register_provider("ollama", lambda model_name, **kwargs: scripted)
    assert get_model("ollama:llama3") is scripted


# -- API keys and base URLs -----------------------------------------------------------------


def test_openai_without_a_key_names_the_variable_to_set() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        get_model("openai:gpt-5-mini")


@pytest.mark.parametrize("provider", ["openrouter", "groq", "together"])
def test_hosted_presets_without_a_key_name_their_variable(provider: str) -> None:
    key_env = PRESETS[provider].key_env
    assert key_env is not None
    with pytest.raises(ConfigError, match=key_env):
        get_model(f"{provider}:some-model")


async def test_openai_key_from_the_environment_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    assert isinstance(get_model("openai:gpt-5-mini"), OpenAIChatModel)
    # The server insists on the key, so the reply proves the variable's value was sent.
    async with MockOpenAIServer(api_key="sk-test-secret") as srv:
        model = get_model("openai:gpt-5-mini", base_url=srv.base_url, max_retries=0)
        try:
            reply = await model.request([Message("user", "hi")])
        finally:
            await model.aclose()
    assert reply.text == "mock reply to: hi"


def test_an_explicit_api_key_needs_no_environment() -> None:
    model = get_model("openai:gpt-5-mini", api_key="sk-explicit")
    assert isinstance(model, OpenAIChatModel)


def test_a_custom_base_url_needs_no_key() -> None:
    model = get_model("openai:gpt-5-mini", base_url="http://127.0.0.1:9999/v1")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == "http://127.0.0.1:9999/v1"


def test_the_preset_base_url_spelled_with_a_slash_still_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        get_model("openai:gpt-5-mini", base_url="https://api.openai.com/v1/")


async def test_openai_base_url_environment_variable_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with MockOpenAIServer(lambda request: "from env url") as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        model = get_model("openai:gpt-5-mini", max_retries=0)  # no key: a custom endpoint
        assert isinstance(model, OpenAIChatModel)
        assert model.base_url == srv.base_url
        try:
            reply = await model.request([Message("user", "hi")])
        finally:
            await model.aclose()
        assert reply.text == "from env url"
        assert srv.requests[-1].model == "gpt-5-mini"


def test_an_explicit_base_url_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1111/v1")
    model = get_model("openai:gpt-5-mini", base_url="http://127.0.0.1:2222/v1")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == "http://127.0.0.1:2222/v1"


@pytest.mark.parametrize("provider", LOCAL_PRESETS)
def test_local_presets_need_no_key(provider: str) -> None:
    model = get_model(f"{provider}:some-model")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == PRESETS[provider].base_url


@pytest.mark.parametrize("provider", [p for p in LOCAL_PRESETS if PRESETS[p].base_url_env])
def test_local_presets_honour_their_base_url_variable(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = PRESETS[provider].base_url_env
    assert env is not None
    monkeypatch.setenv(env, "http://127.0.0.1:4321/v1/")
    model = get_model(f"{provider}:some-model")
    assert isinstance(model, OpenAIChatModel)
    assert model.base_url == "http://127.0.0.1:4321/v1"


def test_context_window_comes_from_the_price_table() -> None:
    price = price_for("gpt-4o-mini")
    assert price is not None and price.context_window is not None
    model = get_model("openai:gpt-4o-mini", base_url="http://127.0.0.1:9999/v1")
    assert model.context_window == price.context_window == 128_000


def test_context_window_is_none_for_an_unknown_model() -> None:
    model = get_model("ollama:surely-not-a-priced-model-xyz")
    assert model.context_window is None


def test_an_explicit_context_window_wins_over_the_price_table() -> None:
    model = get_model("ollama:gpt-4o-mini", context_window=1000)
    assert model.context_window == 1000


# -- the request switch ---------------------------------------------------------------------


def test_the_suite_runs_with_requests_switched_off() -> None:
    assert rlmx.models.ALLOW_MODEL_REQUESTS is False
    assert requests_allowed(UNREACHABLE) is False


async def test_a_disabled_request_fails_before_any_network_activity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_client(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a client was created for a request that must not be sent")

    monkeypatch.setattr(openai, "AsyncOpenAI", no_client)
    model = OpenAIChatModel("gpt-5-mini", base_url=UNREACHABLE, timeout_s=30)
    start = time.monotonic()
    with pytest.raises(ModelRequestsDisabled) as info:
        await model.request([Message("user", "hi")])
    assert time.monotonic() - start < 1.0
    assert info.value.model == "openai:gpt-5-mini"
    assert UNREACHABLE in str(info.value)
    assert "ALLOW_MODEL_REQUESTS" in str(info.value)
    assert model._clients == {}
    await model.aclose()


@pytest.mark.parametrize("value", ["0", "false", "no", " FALSE "])
async def test_the_environment_variable_blocks_even_when_the_flag_allows(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rlmx.models, "ALLOW_MODEL_REQUESTS", True)
    monkeypatch.setenv("RLMX_ALLOW_MODEL_REQUESTS", value)
    model = OpenAIChatModel("gpt-5-mini", base_url=UNREACHABLE)
    with pytest.raises(ModelRequestsDisabled):
        await model.request([Message("user", "hi")])
    assert model._clients == {}


def test_requests_are_allowed_when_both_flag_and_environment_allow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rlmx.models, "ALLOW_MODEL_REQUESTS", True)
    monkeypatch.delenv("RLMX_ALLOW_MODEL_REQUESTS", raising=False)
    assert requests_allowed(UNREACHABLE) is True
    monkeypatch.setenv("RLMX_ALLOW_MODEL_REQUESTS", "1")
    assert requests_allowed(UNREACHABLE) is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://127.1.2.3/v1",
        "http://localhost:11434/v1",
        "http://LOCALHOST/v1",
        "http://[::1]:8080/v1",
    ],
)
def test_loopback_servers_stay_allowed(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLMX_ALLOW_MODEL_REQUESTS", "0")
    assert requests_allowed(url) is True


@pytest.mark.parametrize(
    "url",
    [
        UNREACHABLE,
        "https://api.openai.com/v1",
        "http://127.example.com/v1",  # a DNS name that merely starts with "127."
        "http://localhost.example.com/v1",
        "http://0.0.0.0:8000/v1",
    ],
)
def test_other_hosts_are_blocked(url: str) -> None:
    assert requests_allowed(url) is False
