"""The embedded model: a GGUF file run inside this process by llama.cpp (``llamacpp:<spec>``).

``<spec>`` is the path of a ``.gguf`` file (``~`` expanded, relative paths allowed) or a
Hugging Face reference, ``owner/repo/file.gguf`` (the file name may be a glob such as
``*q4_k_m.gguf``) or ``owner/repo`` (the repository's only ``.gguf`` file), downloaded
once into the Hugging Face cache. Nothing leaves the machine and nothing is paid per
token, so the request guard does not apply and every request costs ``Decimal(0)``.

The model loads lazily, once, in a worker thread, on the first request. A ``Llama``
object is not thread safe: requests run one at a time (concurrent sub-calls queue), each
in a worker thread so the event loop stays free. Prompts are counted with the model's
own tokenizer through its chat template, so :meth:`LlamaCppModel.count_tokens` is exact
and a prompt that cannot fit is refused before any work is done. A request cancelled by
its caller (or past its ``timeout_s``) stops generating at the next token.

Needs the ``llamacpp`` extra (``llama-cpp-python``, and ``huggingface-hub`` for repo
references); ``scripts/local-model`` builds and caches a portable wheel.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib
import inspect
import re
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from rlmx.exceptions import (
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelConnectionError,
    ModelError,
    ModelResponseError,
)
from rlmx.models._common import PerLoop
from rlmx.models.base import Message, Model, ModelResponse, ModelSettings, messages_to_dicts
from rlmx.usage import RequestUsage

__all__ = ["DEFAULT_MAX_N_CTX", "LlamaCppModel", "read_gguf_context_length"]

DEFAULT_MAX_N_CTX = 8192
"""Without an explicit ``n_ctx``, the trained context length is used, capped at this
(a 128k window would reserve gigabytes of KV cache that a local run rarely needs)."""

# When the GGUF header does not say how long a context the model was trained on.
_FALLBACK_N_CTX = 4096

_GGUF_MAGIC = b"GGUF"
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_TOO_LONG = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class _Source:
    """Where the GGUF file comes from: a local ``path``, or a Hugging Face ``repo_id``
    with an optional ``filename`` (possibly a glob)."""

    path: Path | None = None
    repo_id: str | None = None
    filename: str | None = None


def _parse_spec(spec: str) -> _Source:
    text = spec.strip()
    if not text:
        raise ConfigError("llamacpp: needs a .gguf path or a Hugging Face 'owner/repo/file.gguf'.")
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            raise ConfigError(
                f"llamacpp:{spec} is a folder ({path}); name the .gguf file inside it."
            )
        _check_gguf_magic(path)
        return _Source(path=path.resolve())
    parts = text.split("/")
    pathlike = text.startswith(("/", "~", ".")) or "\\" in text or path.is_absolute()
    if (
        not pathlike
        and len(parts) >= 2
        and all(parts)
        and _REPO_PART.match(parts[0])
        and _REPO_PART.match(parts[1])
    ):
        if len(parts) == 2 and not parts[1].lower().endswith(".gguf"):
            return _Source(repo_id=text)
        if len(parts) >= 3 and parts[-1].lower().endswith(".gguf"):
            return _Source(repo_id="/".join(parts[:2]), filename="/".join(parts[2:]))
    raise ConfigError(
        f"GGUF file not found: {path} (from llamacpp:{spec}). Pass the path of a .gguf "
        "file, or a Hugging Face reference such as 'owner/repo/file.gguf'."
    )


def _check_gguf_magic(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from None
    if magic != _GGUF_MAGIC:
        raise ConfigError(f"{path} is not a GGUF file (llama.cpp loads .gguf models only).")


# --------------------------------------------------------------------- GGUF header
# Value types of GGUF metadata: struct formats of the fixed-size ones; 8 = string, 9 = array.
_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_context_length(path: str | Path) -> int | None:
    """The context length a GGUF model was trained with (``<arch>.context_length``), read
    from the file's header without loading the model; ``None`` when it does not say."""
    try:
        with Path(path).open("rb") as fh:
            return _gguf_context_length(fh)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None


def _gguf_context_length(fh: BinaryIO) -> int | None:
    if fh.read(4) != _GGUF_MAGIC:
        return None
    (version,) = struct.unpack("<I", fh.read(4))
    if version < 2:  # version 1 used 32-bit counts; no current model ships it
        return None
    _tensors, n_kv = struct.unpack("<QQ", fh.read(16))
    arch: str | None = None
    lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = _read_gguf_string(fh)
        (kind,) = struct.unpack("<I", fh.read(4))
        value = _read_gguf_value(fh, kind)
        if key == "general.architecture" and isinstance(value, str):
            arch = value
        elif key.endswith(".context_length") and isinstance(value, int):
            lengths[key] = value
        if arch is not None and f"{arch}.context_length" in lengths:
            break
    if arch is None:
        return None
    length = lengths.get(f"{arch}.context_length")
    return length if length is not None and length > 0 else None


def _read_gguf_string(fh: BinaryIO) -> str:
    (size,) = struct.unpack("<Q", fh.read(8))
    return fh.read(size).decode("utf-8")


def _read_gguf_value(fh: BinaryIO, kind: int) -> object:
    fmt = _GGUF_SCALARS.get(kind)
    if fmt is not None:
        return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]
    if kind == _GGUF_STRING:
        return _read_gguf_string(fh)
    if kind == _GGUF_ARRAY:  # skipped: only scalars are of interest
        (item_kind,) = struct.unpack("<I", fh.read(4))
        (count,) = struct.unpack("<Q", fh.read(8))
        item_fmt = _GGUF_SCALARS.get(item_kind)
        if item_fmt is not None:
            fh.seek(count * struct.calcsize(item_fmt), 1)
        else:
            for _ in range(count):
                _read_gguf_value(fh, item_kind)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


# ------------------------------------------------------------------- the model
class _PromptReady(Exception):
    """Carries the tokenized prompt out of a chat handler that was only asked to count."""

    def __init__(self, prompt: object) -> None:
        self.prompt = prompt
        super().__init__()


class _LlamaView:
    """Stands in for a ``Llama`` inside its own ``create_chat_completion``.

    Everything is forwarded to the real object except ``create_completion``, which the
    chat handler calls with the fully templated, tokenized prompt: ``on_prompt`` then
    decides what happens (count it, check it, add a stopping criterion, generate).
    """

    __slots__ = ("_llm", "_on_prompt")

    def __init__(self, llm: Any, on_prompt: Callable[[Any, dict[str, Any]], Any]) -> None:
        object.__setattr__(self, "_llm", llm)
        object.__setattr__(self, "_on_prompt", on_prompt)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._llm, name, value)

    def create_completion(self, prompt: Any = None, **kwargs: Any) -> Any:
        return self._on_prompt(prompt, kwargs)


def _chat_completion(llm: Any, on_prompt: Callable[[Any, dict[str, Any]], Any], **kw: Any) -> Any:
    # The unbound method runs the model's own chat-handler choice with the view as `self`.
    return type(llm).create_chat_completion(_LlamaView(llm, on_prompt), **kw)


def _raise_prompt(prompt: Any, _kwargs: dict[str, Any]) -> Any:
    raise _PromptReady(prompt)


class LlamaCppModel(Model):
    """A GGUF model run in this process by llama.cpp (``llama-cpp-python``).

    ``n_ctx`` defaults to the model's trained context length capped at
    :data:`DEFAULT_MAX_N_CTX` (``context_window`` is accepted as another name for it).
    ``seed`` seeds every request whose settings name none, so sampling does not depend on
    the order queued sub-calls take (llama.cpp reuses the previous request's evaluated
    prefix, which can still shift a greedy reply slightly). ``chat_format`` overrides the
    chat template llama.cpp picks from the file's metadata. ``timeout_s`` in the settings
    bounds the generation time of one request (time queued behind others not included).
    """

    def __init__(
        self,
        spec: str,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        seed: int = 0,
        settings: ModelSettings | None = None,
        chat_format: str | None = None,
        verbose: bool = False,
        context_window: int | None = None,
        base_url: str | None = None,
    ) -> None:
        if base_url is not None:
            raise ConfigError(
                f"llamacpp:{spec} runs inside this process and has no URL (got base_url="
                f"{base_url!r}). For a llama.cpp server use 'llamacpp-server:<model>' with "
                "base_url=... (--base-url)."
            )
        if context_window is not None and n_ctx is not None and context_window != n_ctx:
            raise ConfigError(
                f"llamacpp: n_ctx={n_ctx} and context_window={context_window} disagree; "
                "give one of them."
            )
        n_ctx = n_ctx if n_ctx is not None else context_window
        for label, value, low in (("n_ctx", n_ctx, 1), ("n_threads", n_threads, 1)):
            if value is not None and (not _is_int(value) or value < low):
                raise ConfigError(f"llamacpp: {label} must be an integer >= {low}, got {value!r}.")
        if not _is_int(n_gpu_layers) or n_gpu_layers < -1:
            raise ConfigError(
                f"llamacpp: n_gpu_layers must be an integer >= -1 (-1 = all), got {n_gpu_layers!r}."
            )
        if not _is_int(seed):
            raise ConfigError(f"llamacpp: seed must be an integer, got {seed!r}.")
        self._source = _parse_spec(spec)
        try:
            self._llama_cpp: Any = importlib.import_module("llama_cpp")
        except ImportError:
            raise MissingExtraError("llamacpp", "llamacpp", "llama-cpp-python") from None
        self._hub: Any = None
        if self._source.repo_id is not None:
            try:
                self._hub = importlib.import_module("huggingface_hub")
            except ImportError:
                raise MissingExtraError("llamacpp", "llamacpp", "huggingface-hub") from None
        self.spec = spec
        self.name = f"llamacpp:{spec}"
        self.path: Path | None = self._source.path
        """The GGUF file; for a repo reference, known once it has been fetched."""
        self.model_name = self._initial_model_name()
        self.default_settings = settings or ModelSettings()
        self.context_window = n_ctx
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.seed = seed
        self.chat_format = chat_format
        self.verbose = verbose
        self._llm: Any = None
        self._params: frozenset[str] = frozenset()
        # `_lock` serialises every use of the Llama object (worker threads); `_close_lock`
        # only keeps the object alive while count_tokens, which does not queue, reads it.
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        # Requests queue on an asyncio lock (one per event loop) rather than on `_lock`,
        # so waiting requests do not each hold a worker thread.
        self._loop_locks: PerLoop[asyncio.Lock] = PerLoop()

    def _initial_model_name(self) -> str:
        if self._source.path is not None:
            return self._source.path.stem
        filename = self._source.filename
        if filename is not None and not _GLOB_CHARS & set(filename):
            return Path(filename).stem
        assert self._source.repo_id is not None
        return self._source.repo_id.rpartition("/")[2]

    # ----------------------------------------------------------- identity, cost
    @property
    def rate_limit_key(self) -> str:
        return f"llamacpp|{self.path if self._source.path is not None else self.spec}"

    def cost_of(self, usage: RequestUsage, response_model: str | None = None) -> Decimal | None:
        return Decimal(0)  # local hardware: no per-token price

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    # ------------------------------------------------------------------ loading
    def _load_locked(self) -> Any:
        """The Llama object, loaded on first use. The caller holds ``_lock``."""
        if self._llm is not None:
            return self._llm
        path = self.path if self.path is not None else self._fetch()
        n_ctx = self.n_ctx
        if n_ctx is None:
            trained = read_gguf_context_length(path) or _FALLBACK_N_CTX
            n_ctx = min(trained, DEFAULT_MAX_N_CTX)
        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "seed": self.seed,
            "verbose": self.verbose,
        }
        if self.n_threads is not None:
            kwargs["n_threads"] = self.n_threads
        if self.chat_format is not None:
            kwargs["chat_format"] = self.chat_format
        try:
            llm = self._llama_cpp.Llama(**kwargs)
        except Exception as exc:
            raise ConfigError(f"llama.cpp could not load {path}: {exc}") from None
        self._params = frozenset(inspect.signature(llm.create_chat_completion).parameters)
        self.context_window = int(llm.n_ctx())
        with self._close_lock:
            self._llm = llm
        return llm

    def _fetch(self) -> Path:
        """Download (or find in the Hugging Face cache) the file a repo reference names."""
        repo, pattern = self._source.repo_id, self._source.filename
        assert repo is not None
        try:
            if pattern is not None and not _GLOB_CHARS & set(pattern):
                filename = pattern
            else:
                filename = self._pick_file(repo, pattern, list(self._hub.list_repo_files(repo)))
            local = Path(self._hub.hf_hub_download(repo_id=repo, filename=filename))
        except ConfigError:
            raise
        except Exception as exc:
            wanted = f"{pattern!r} from" if pattern else "a .gguf file from"
            raise ConfigError(
                f"Could not fetch {wanted} the Hugging Face repo {repo!r} "
                f"({type(exc).__name__}: {exc}). Check the name and the connection, or "
                "download the file and pass its local path: llamacpp:/path/to/model.gguf"
            ) from None
        self.path = local
        self.model_name = local.stem
        return local

    @staticmethod
    def _pick_file(repo: str, pattern: str | None, files: list[str]) -> str:
        ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
        if pattern is None:
            matches = ggufs
        else:
            glob = pattern.lower()
            matches = [
                f
                for f in ggufs
                if fnmatch.fnmatchcase(f.lower(), glob)
                or fnmatch.fnmatchcase(f.rpartition("/")[2].lower(), glob)
            ]
        if len(matches) == 1:
            return matches[0]
        what = f"matching {pattern!r}" if pattern else "(.gguf)"
        if not matches:
            listing = ", ".join(ggufs) if ggufs else "none"
            raise ConfigError(
                f"The Hugging Face repo {repo!r} has no file {what}. Its .gguf files: {listing}."
            )
        raise ConfigError(
            f"The Hugging Face repo {repo!r} has {len(matches)} files {what}: "
            f"{', '.join(matches)}. Name one: llamacpp:{repo}/<file.gguf> "
            "(a glob such as '*q4_k_m.gguf' works)."
        )

    # ----------------------------------------------------------------- requests
    def _loop_lock(self) -> asyncio.Lock:
        return self._loop_locks.current(asyncio.Lock)

    async def request(
        self, messages: Sequence[Message], settings: ModelSettings | None = None
    ) -> ModelResponse:
        merged = self.default_settings.merged(settings)
        dicts = messages_to_dicts(messages)
        cancelled = threading.Event()
        try:
            async with self._loop_lock():
                completion = await asyncio.to_thread(self._complete, dicts, merged, cancelled)
        except asyncio.CancelledError:
            cancelled.set()  # the worker thread stops at the next token
            raise
        return self._to_response(completion)

    def _complete(
        self, messages: list[dict[str, str]], settings: ModelSettings, cancelled: threading.Event
    ) -> Any:
        with self._lock:
            llm = self._load_locked()
            kwargs = self._completion_kwargs(settings)
            n_ctx = int(llm.n_ctx())
            timeout_s = settings.timeout_s
            started = time.monotonic()
            timed_out = False

            def must_stop(_tokens: Any, _logits: Any) -> bool:
                nonlocal timed_out
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    timed_out = True
                return timed_out or cancelled.is_set()

            def generate(prompt: Any, completion_kwargs: dict[str, Any]) -> Any:
                if isinstance(prompt, list) and len(prompt) >= n_ctx:
                    raise self._too_long(len(prompt), n_ctx)
                criteria = list(completion_kwargs.get("stopping_criteria") or ())
                completion_kwargs["stopping_criteria"] = self._llama_cpp.StoppingCriteriaList(
                    [*criteria, must_stop]
                )
                return llm.create_completion(prompt, **completion_kwargs)

            try:
                completion = _chat_completion(llm, generate, messages=messages, **kwargs)
            except ModelError:
                raise
            except ValueError as exc:
                match = _TOO_LONG.search(str(exc))
                if match:
                    raise self._too_long(int(match[1]), int(match[2])) from None
                raise self._failed(exc) from None
            except Exception as exc:
                raise self._failed(exc) from None
        if timed_out:
            raise ModelConnectionError(
                f"{self.name} did not finish its reply within timeout_s={timeout_s}.",
                model=self.name,
            )
        return completion

    def _completion_kwargs(self, settings: ModelSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"seed": settings.seed if settings.seed is not None else self.seed}
        if settings.temperature is not None:
            kwargs["temperature"] = settings.temperature
        if settings.top_p is not None:
            kwargs["top_p"] = settings.top_p
        if settings.max_tokens is not None:
            kwargs["max_tokens"] = settings.max_tokens
        if settings.stop:
            kwargs["stop"] = list(settings.stop)
        if settings.extra_body:
            unknown = sorted(set(settings.extra_body) - self._params - {"messages", "stream"})
            reserved = {"messages", "stream"} & set(settings.extra_body)
            if unknown or reserved:
                raise ConfigError(
                    f"{self.name} does not take extra_body field(s) "
                    f"{', '.join(sorted(reserved) + unknown)}; llama.cpp's chat completion "
                    f"takes: {', '.join(sorted(self._params - {'messages', 'stream'}))}."
                )
            kwargs.update(settings.extra_body)
        return kwargs

    def _too_long(self, prompt_tokens: int, n_ctx: int) -> ContextLengthError:
        return ContextLengthError(
            f"{self.name}: the prompt takes {prompt_tokens} tokens, which does not fit its "
            f"context window of {n_ctx} tokens (n_ctx). Shorten the prompt or load the "
            "model with a larger n_ctx.",
            model=self.name,
            status=None,
            prompt_tokens=prompt_tokens,
            context_window=n_ctx,
        )

    def _failed(self, exc: Exception) -> ModelResponseError:
        return ModelResponseError(
            f"{self.name} failed to generate a reply ({type(exc).__name__}: {exc}).",
            model=self.name,
        )

    def _to_response(self, completion: Any) -> ModelResponse:
        choices = completion.get("choices") if isinstance(completion, dict) else None
        if not choices:
            raise ModelResponseError(f"{self.name} returned no choices", model=self.name)
        choice = choices[0]
        message = choice.get("message") or {}
        usage = completion.get("usage") or {}
        return ModelResponse(
            text=message.get("content") or "",
            usage=RequestUsage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            ),
            model_name=self.model_name,
            finish_reason=choice.get("finish_reason"),
        )

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Exact once the model is loaded: the chat-templated prompt through the model's
        tokenizer, as a request would send it. Before that, the base estimate."""
        with self._close_lock:
            llm = self._llm
            if llm is not None:
                try:
                    _chat_completion(llm, _raise_prompt, messages=messages_to_dicts(messages))
                except _PromptReady as ready:
                    if isinstance(ready.prompt, list):
                        return len(ready.prompt)
                except Exception:  # a chat handler that cannot count: estimate instead
                    pass
        return super().count_tokens(messages)

    # ----------------------------------------------------------------- closing
    async def aclose(self) -> None:
        """Keep the model: ``RLM.completion`` closes its models after every run, and
        reloading weights for each run would waste seconds. :meth:`unload` frees it."""

    async def unload(self) -> None:
        """Free the model (after the reply being generated, if any); the next request
        loads it again. Safe to call more than once."""
        if self._llm is not None:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock, self._close_lock:
            llm, self._llm = self._llm, None
            close = getattr(llm, "close", None)
            if callable(close):
                close()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
