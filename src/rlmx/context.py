"""Turn files, directories, standard input or Python values into the REPL's ``context``.

:func:`load_context` is what ``rlmx run --context PATH ...`` uses: one text file becomes a
``str``, one ``.json`` file its parsed value, one ``.jsonl`` file a ``list``, and a
directory or several paths a ``dict`` from display path to content. Problems that only
affect part of a directory (a binary file, invalid UTF-8, a symlink loop) become
:class:`LoadWarning` entries; mistakes the user must fix raise :class:`ContextError`.

:func:`normalize_context` validates a value handed over by an API caller,
:func:`describe_context` measures a context for the system prompt, and
:func:`context_text` gives the flat text view that navigation helpers search.
"""

from __future__ import annotations

import codecs
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeAlias

from rlmx.exceptions import ContextError

__all__ = [
    "ContextDescription",
    "ContextValue",
    "LoadWarning",
    "LoadedContext",
    "context_text",
    "describe_context",
    "load_context",
    "normalize_context",
]

ContextValue: TypeAlias = str | list[str] | list[Any] | dict[str, Any]

_SNIFF_BYTES = 8192
"""A NUL byte within this many leading bytes marks a file as binary (as git does)."""

_SHOWN_ITEMS = 100
"""How many item lengths / keys a :class:`ContextDescription` keeps."""

_JSON_SUFFIXES = frozenset({".json"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
_STDIN_NAME = "<stdin>"
_REPLACEMENT_CHAR = "\ufffd"
_REPLACEMENT_BYTES = _REPLACEMENT_CHAR.encode()


@dataclass(frozen=True, slots=True)
class LoadWarning:
    """Something :func:`load_context` skipped or repaired, and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(slots=True)
class LoadedContext:
    """The result of :func:`load_context`."""

    value: ContextValue
    warnings: list[LoadWarning] = field(default_factory=list)
    files: int = 0
    """How many files (or standard input) ended up in ``value``."""
    total_chars: int = 0
    """Characters of decoded text read from those files (before any JSON parsing)."""


@dataclass(frozen=True, slots=True)
class ContextDescription:
    """The shape and size of a context, as shown to the model in its system prompt."""

    type_name: str
    """``"str"``, ``"list[str]"``, ``"list"`` (some items are not str) or ``"dict"``."""
    total_chars: int
    """Characters of all items together; non-str items count as their JSON text."""
    item_count: int | None
    """Number of list items or dict keys; ``None`` for a str."""
    item_lengths: list[int]
    """Character length of each item / dict value, the first 100 only."""
    item_keys: list[str]
    """The first 100 dict keys; empty for str and list."""

    def summary(self) -> str:
        """One to three lines describing the context, for a system prompt."""
        if self.item_count is None:
            return f"The context is a {self.type_name} of {self.total_chars:,} characters."
        count = self.item_count
        if count == 0:
            return f"The context is an empty {self.type_name}."
        lengths = f"{self.item_lengths}{self._shown(count)}"
        if self.type_name == "dict":
            return (
                f"The context is a dict with {count:,} str keys, "
                f"{self.total_chars:,} characters in its values in total.\n"
                f"Keys: {self.item_keys}{self._shown(count)}.\n"
                f"Value lengths: {lengths}."
            )
        if self.type_name == "list[str]":
            kind = f"{count:,} str items"
        else:
            kind = f"{count:,} items (not all str; other items are measured as JSON text)"
        return (
            f"The context is a list of {kind}, {self.total_chars:,} characters in total.\n"
            f"Item lengths: {lengths}."
        )

    @staticmethod
    def _shown(count: int) -> str:
        if count <= _SHOWN_ITEMS:
            return ""
        return f" (first {_SHOWN_ITEMS} of {count:,} shown)"


def normalize_context(value: object) -> ContextValue:
    """Check that ``value`` can be a context and return it in canonical form.

    A str, list or dict with str keys is returned as is (never copied); a tuple becomes a
    list, another mapping a dict, and bytes are decoded as UTF-8 (invalid bytes replaced).
    List items and dict values may be anything; non-str ones are shown as JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, bytes | bytearray):
        return _decode(value)[0]
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ContextError(
                    f"context dict keys must be str, got a key {key!r} of type "
                    f"{type(key).__name__}; convert the keys first (e.g. {{str(k): v ...}})"
                )
        return value if isinstance(value, dict) else dict(value)
    raise ContextError(
        f"context must be a str, a list or a dict, got {type(value).__name__}; "
        "convert it first (e.g. json.dumps or str)"
    )


def describe_context(value: object) -> ContextDescription:
    """Measure a context: its type, total size and per-item sizes."""
    value = normalize_context(value)
    if isinstance(value, str):
        return ContextDescription("str", len(value), None, [], [])
    items: Iterable[Any]
    if isinstance(value, list):
        items = value
        keys: list[str] = []
        all_str = bool(value) and all(isinstance(item, str) for item in value)
        type_name = "list[str]" if all_str else "list"
    else:
        items = value.values()
        keys = list(islice(value, _SHOWN_ITEMS))
        type_name = "dict"
    total = 0
    lengths: list[int] = []
    for item in items:
        n = len(item) if isinstance(item, str) else len(_render(item))
        total += n
        if len(lengths) < _SHOWN_ITEMS:
            lengths.append(n)
    return ContextDescription(type_name, total, len(value), lengths, keys)


def context_text(value: ContextValue) -> str:
    """Flatten a context into one str that text-search helpers can work on.

    A str is returned itself. List items are each preceded by a line ``=== [i] ===`` and
    dict values by ``=== key ===``; consecutive entries are separated by a newline.
    """
    # Typed loosely on purpose: code in the REPL may rebind ``context`` to anything, and
    # the search helpers must still get text rather than an AttributeError.
    anything: object = value
    if isinstance(anything, str):
        return anything
    entries: Iterator[tuple[str, Any]]
    if isinstance(anything, list | tuple):
        entries = ((f"[{i}]", item) for i, item in enumerate(anything))
    elif isinstance(anything, Mapping):
        entries = ((str(key), item) for key, item in anything.items())
    else:
        return _render(anything)
    # Collect references and join once, so each item's text is copied only into the result.
    pieces: list[str] = []
    for label, item in entries:
        if pieces:
            pieces.append("\n")
        pieces.append(f"=== {label} ===\n")
        pieces.append(item if isinstance(item, str) else _render(item))
    return "".join(pieces)


def load_context(
    paths: Sequence[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    stdin: BinaryIO | None = None,
) -> LoadedContext:
    """Load files, directories or standard input (``"-"``) as a context.

    One path naming a text file gives a ``str``, a ``.json`` file its parsed value (an
    object, array or string), a ``.jsonl`` file a ``list`` of its lines' values. A
    directory, or several paths, give a ``dict`` from display path to content: paths
    inside a single directory are relative to it; with several paths, files are keyed by
    the path as given and a directory's files by that directory joined with their path
    inside it.

    Directories are walked recursively in sorted order. Hidden entries (names starting
    with ``.``) are skipped; ``include`` / ``exclude`` are glob patterns matched against
    each file's path relative to its directory and against its name (an ``exclude``
    pattern matching a directory skips that directory). Binary files found in a directory
    are skipped with a warning; malformed JSON found in a directory is kept as text with
    a warning, while the same problem in a file the caller named raises ``ContextError``.
    """
    # A bare str is a Sequence[str] too; iterating its characters would be a silent bug.
    paths = [paths] if isinstance(paths, str) else [os.fspath(p) for p in paths]
    if not paths:
        raise ContextError(
            "no context paths given; pass a file, a directory, or - to read standard input"
        )
    if paths.count("-") > 1:
        raise ContextError("- (standard input) can be given only once as a context path")
    loader = _Loader(include, exclude, stdin)
    value: ContextValue
    if len(paths) == 1:
        raw = paths[0]
        if raw == "-":
            value = loader.single_stdin()
        else:
            path = _existing_path(raw)
            if path.is_dir():
                tree: dict[str, Any] = {}
                loader.walk(path, PurePosixPath(), tree)
                loader.require_some(tree, [raw])
                value = tree
            else:
                value = loader.single_file(path, raw)
    else:
        # Check every path before reading any, so a typo in the last one fails fast.
        checked = [(raw, None if raw == "-" else _existing_path(raw)) for raw in paths]
        loaded: dict[str, Any] = {}
        for raw, target in checked:
            if target is None:
                loader.add_stdin(loaded)
            elif target.is_dir():
                loader.walk(target, PurePosixPath(target.as_posix()), loaded)
            else:
                loader.add_named_file(target, raw, loaded)
        loader.require_some(loaded, paths)
        value = loaded
    return LoadedContext(value, loader.warnings, loader.files, loader.total_chars)


def _existing_path(raw: str) -> Path:
    if not raw:
        raise ContextError("empty context path; pass a file, a directory, or - for standard input")
    path = Path(raw)
    if not path.exists():
        what = "is a symbolic link to a missing target" if path.is_symlink() else "does not exist"
        raise ContextError(
            f"context path {raw!r} {what}; check the path, or pass - to read standard input"
        )
    return path


def _render(item: Any) -> str:
    """The text shown for a non-str item: its JSON, or its repr when JSON cannot hold it."""
    try:
        return json.dumps(item, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        # Non-str dict keys or reference cycles: the Python repr still shows the content.
        return repr(item)


def _decode(data: bytes | bytearray) -> tuple[str, int]:
    """Decode UTF-8, dropping a BOM; return the text and how many U+FFFD were introduced.

    Only the bytes and the resulting str exist at the same time: the BOM is skipped through
    a memoryview instead of a slice, and the replacement count uses ``count`` on both.
    """
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    with memoryview(data) as view, view[start:] as body:
        try:
            return str(body, "utf-8"), 0
        except UnicodeDecodeError:
            text = str(body, "utf-8", "replace")
    # EF BF BD can only ever decode as one whole U+FFFD, so the difference is exact.
    return text, text.count(_REPLACEMENT_CHAR) - data.count(_REPLACEMENT_BYTES, start)


def _is_binary(data: bytes) -> bool:
    return data.find(b"\0", 0, _SNIFF_BYTES) != -1


def _matches(patterns: Sequence[str], rel: str, name: str) -> bool:
    return any(fnmatchcase(rel, p) or fnmatchcase(name, p) for p in patterns)


def _iter_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` without building a list of all lines."""
    start = 0
    number = 0
    end = len(text)
    while start < end:
        number += 1
        stop = text.find("\n", start)
        if stop == -1:
            stop = end
        yield number, text[start:stop]
        start = stop + 1


class _Loader:
    """State shared while loading several paths: filters, warnings and counters."""

    def __init__(
        self, include: Sequence[str], exclude: Sequence[str], stdin: BinaryIO | None
    ) -> None:
        self.include = [_clean_pattern(p) for p in include]
        self.exclude = [_clean_pattern(p) for p in exclude]
        self.stdin = stdin
        self.warnings: list[LoadWarning] = []
        self.files = 0
        self.total_chars = 0
        self.filtered_out = 0
        self.binary_skipped = 0

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(LoadWarning(path, message))

    # -- standard input ------------------------------------------------------------

    def read_stdin(self) -> bytes:
        stream = self.stdin
        if stream is None:
            if sys.stdin is None:
                raise ContextError("- was given but there is no standard input to read")
            if sys.stdin.isatty():
                raise ContextError(
                    "- reads the context from standard input, but standard input is a "
                    "terminal; pipe the text in (e.g. cat file.txt | rlmx run --context - ...)"
                )
            stream = sys.stdin.buffer
        return stream.read()

    def single_stdin(self) -> str:
        data = self.read_stdin()
        if _is_binary(data):
            raise ContextError(
                "standard input looks binary (it contains NUL bytes); rlmx loads text only"
            )
        return self.text(data, _STDIN_NAME)

    def add_stdin(self, out: dict[str, Any]) -> None:
        data = self.read_stdin()
        if _is_binary(data):
            self.binary_skipped += 1
            self.warn(_STDIN_NAME, "binary input skipped")
            return
        out[_STDIN_NAME] = self.text(data, _STDIN_NAME)

    # -- files ---------------------------------------------------------------------

    def text(self, data: bytes, display: str) -> str:
        text, replaced = _decode(data)
        if replaced:
            plural = "" if replaced == 1 else "s"
            self.warn(display, f"invalid UTF-8 replaced ({replaced} replacement character{plural})")
        self.files += 1
        self.total_chars += len(text)
        return text

    def single_file(self, path: Path, raw: str) -> ContextValue:
        data = _read_named(path, raw)
        if data is None or _is_binary(data):
            raise ContextError(
                f"{raw!r} looks like a binary file (it contains NUL bytes); rlmx loads text "
                "only, so convert it to text first"
            )
        text = self.text(data, raw)
        del data  # as large as the text: free it before parsing
        suffix = path.suffix.lower()
        if suffix in _JSON_SUFFIXES:
            value = _parse_json(text, raw)
            if not isinstance(value, str | list | dict):
                raise ContextError(
                    f"{raw!r}: the JSON must be an object, array or string at the top level, "
                    f"got {_json_kind(value)}; wrap it (e.g. in an array) or load it as text"
                )
            return value
        if suffix in _JSONL_SUFFIXES:
            return _parse_jsonl(text, raw)
        if not text:
            self.warn(raw, "file is empty")
        return text

    def add_named_file(self, path: Path, raw: str, out: dict[str, Any]) -> None:
        if self.is_duplicate(out, raw):
            return
        data = _read_named(path, raw)
        if data is None or _is_binary(data):
            self.binary_skipped += 1
            self.warn(raw, "binary file skipped")
            return
        text = self.text(data, raw)
        del data
        suffix = path.suffix.lower()
        content: Any = text
        if suffix in _JSON_SUFFIXES:
            content = _parse_json(text, raw)
        elif suffix in _JSONL_SUFFIXES:
            content = _parse_jsonl(text, raw)
        out[raw] = content

    def add_found_file(self, path: Path, display: str, out: dict[str, Any]) -> None:
        if self.is_duplicate(out, display):
            return
        try:
            data = _read_bytes(path)
        except OSError as exc:
            self.warn(display, f"could not be read ({exc.strerror or exc}), skipped")
            return
        if data is None or _is_binary(data):
            self.binary_skipped += 1
            self.warn(display, "binary file skipped")
            return
        text = self.text(data, display)
        del data
        suffix = path.suffix.lower()
        content: Any = text
        try:
            if suffix in _JSON_SUFFIXES:
                content = _parse_json(text, display)
            elif suffix in _JSONL_SUFFIXES:
                content = _parse_jsonl(text, display)
        except ContextError as exc:
            # One broken fixture must not make a whole directory unloadable.
            self.warn(display, f"{exc}; kept as text")
        out[display] = content

    def is_duplicate(self, out: dict[str, Any], key: str) -> bool:
        if key not in out:
            return False
        self.warn(key, "given more than once; loaded once")
        return True

    # -- directories ---------------------------------------------------------------

    def walk(self, root: Path, prefix: PurePosixPath, out: dict[str, Any]) -> None:
        """Load every file under ``root`` into ``out``, depth first in name order."""
        try:
            root_stat = root.stat()
            root_entries = _sorted_entries(root)
        except OSError as exc:
            raise ContextError(
                f"cannot read directory {str(root)!r}: {exc.strerror or exc}"
            ) from None
        visited = {(root_stat.st_dev, root_stat.st_ino)}
        # Explicit stack of iterators rather than recursion: deep trees cannot overflow it.
        stack: list[tuple[PurePosixPath, Iterator[os.DirEntry[str]]]] = [
            (PurePosixPath(), iter(root_entries))
        ]
        while stack:
            rel_dir, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            if entry.name.startswith("."):
                self.filtered_out += 1
                continue
            rel = rel_dir / entry.name
            display = (prefix / rel).as_posix()
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError as exc:
                self.warn(display, f"could not be inspected ({exc.strerror or exc}), skipped")
                continue
            if is_dir:
                if self.exclude and _matches(self.exclude, rel.as_posix(), entry.name):
                    self.filtered_out += 1
                    continue
                try:
                    st = entry.stat()
                    key = (st.st_dev, st.st_ino)
                    if key in visited:
                        self.warn(
                            display,
                            "directory already visited (symlink loop or second link), skipped",
                        )
                        continue
                    visited.add(key)
                    stack.append((rel, iter(_sorted_entries(Path(entry.path)))))
                except OSError as exc:
                    self.warn(display, f"directory could not be read ({exc.strerror or exc})")
                continue
            if not is_file:
                if entry.is_symlink() and not Path(entry.path).exists():
                    self.warn(display, "broken symbolic link skipped")
                else:
                    self.warn(display, "not a regular file, skipped")
                continue
            rel_str = rel.as_posix()
            if (self.include and not _matches(self.include, rel_str, entry.name)) or (
                self.exclude and _matches(self.exclude, rel_str, entry.name)
            ):
                self.filtered_out += 1
                continue
            self.add_found_file(Path(entry.path), display, out)

    def require_some(self, out: dict[str, Any], paths: Sequence[str]) -> None:
        if out:
            return
        shown = ", ".join(repr(p) for p in paths)
        reasons = []
        if self.include:
            reasons.append(f"include patterns {self.include}")
        if self.exclude:
            reasons.append(f"exclude patterns {self.exclude}")
        filters = f" matching {' and '.join(reasons)}" if reasons else ""
        skipped = []
        if self.binary_skipped:
            skipped.append(f"{self.binary_skipped} binary")
        if self.filtered_out:
            skipped.append(f"{self.filtered_out} hidden or filtered out")
        detail = f" ({', '.join(skipped)} skipped)" if skipped else ""
        raise ContextError(
            f"no text files{filters} found in {shown}{detail}; check the path and the "
            "include/exclude patterns (hidden files and directories are skipped)"
        )


def _clean_pattern(pattern: str) -> str:
    return pattern.removeprefix("./")


def _sorted_entries(directory: Path) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as it:
        return sorted(it, key=lambda e: e.name)


def _read_bytes(path: Path) -> bytes | None:
    """Read a whole file, or return ``None`` when its first bytes show it is binary.

    Regular files are sniffed before being read in full, so a large binary costs 8 KiB.
    ``readall`` on an unbuffered file sizes its buffer from ``fstat``: one allocation.
    """
    with open(path, "rb", buffering=0) as f:
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            head = f.read(_SNIFF_BYTES)
            if head and b"\0" in head:
                return None
            f.seek(0)
        return f.readall()


def _read_named(path: Path, raw: str) -> bytes | None:
    try:
        return _read_bytes(path)
    except OSError as exc:
        raise ContextError(f"cannot read {raw!r}: {exc.strerror or exc}") from None


def _parse_json(text: str, display: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContextError(
            f"{display!r} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}); "
            "fix the file, or rename it to load it as plain text"
        ) from None


def _parse_jsonl(text: str, display: str) -> list[Any]:
    values: list[Any] = []
    for number, line in _iter_lines(text):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ContextError(
                f"{display!r} line {number} is not valid JSON: {exc.msg} (column {exc.colno}); "
                "each line of a .jsonl file must be one JSON value"
            ) from None
    return values


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
