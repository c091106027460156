"""Tests for rlmx.context: loading paths, validating values, describing and flattening."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

import rlmx.context as context_module
from rlmx.context import (
    ContextDescription,
    LoadedContext,
    LoadWarning,
    context_text,
    describe_context,
    load_context,
    normalize_context,
)
from rlmx.exceptions import ContextError, UserError


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def load(
    *paths: Path | str, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> LoadedContext:
    return load_context([str(p) for p in paths], include=include, exclude=exclude)


# -- single files --------------------------------------------------------------------


def test_single_text_file_is_a_str(tmp_path: Path) -> None:
    f = write(tmp_path / "notes.txt", "héllo\nworld\n")
    loaded = load(f)
    assert loaded.value == "héllo\nworld\n"
    assert loaded.warnings == []
    assert loaded.files == 1
    assert loaded.total_chars == len("héllo\nworld\n")


def test_single_path_given_as_bare_string(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "abc")
    assert load_context(str(f)).value == "abc"


def test_empty_file_loads_with_a_warning(tmp_path: Path) -> None:
    loaded = load(write(tmp_path / "empty.txt", ""))
    assert loaded.value == ""
    assert [w.message for w in loaded.warnings] == ["file is empty"]


def test_single_json_file_is_parsed(tmp_path: Path) -> None:
    f = write(tmp_path / "data.json", json.dumps({"a": [1, 2], "b": "x"}))
    assert load(f).value == {"a": [1, 2], "b": "x"}
    g = write(tmp_path / "list.JSON", "[1, 2, 3]")
    assert load(g).value == [1, 2, 3]
    h = write(tmp_path / "s.json", '"just text"')
    assert load(h).value == "just text"


@pytest.mark.parametrize(("raw", "kind"), [("42", "number"), ("null", "null"), ("true", "boolean")])
def test_json_scalar_at_top_level_is_rejected(tmp_path: Path, raw: str, kind: str) -> None:
    f = write(tmp_path / "n.json", raw)
    with pytest.raises(ContextError, match="object, array or string") as info:
        load(f)
    assert kind in str(info.value)


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.json", '{"a": 1,\n  oops}')
    with pytest.raises(ContextError, match=r"bad\.json.*not valid JSON.*line 2"):
        load(f)


def test_jsonl_file_is_a_list_and_skips_blank_lines(tmp_path: Path) -> None:
    f = write(tmp_path / "rows.jsonl", '{"id": 1}\n\n  \r\n"two"\r\n[3]')
    loaded = load(f)
    assert loaded.value == [{"id": 1}, "two", [3]]


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "rows.jsonl", '{"id": 1}\n\n{"id": 2\n{"id": 4}\n')
    with pytest.raises(ContextError, match=r"rows\.jsonl.*line 3") as info:
        load(f)
    assert "line 1 " not in str(info.value)


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    f = write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello")
    loaded = load(f)
    assert loaded.value == "hello"
    assert loaded.warnings == []
    j = write(tmp_path / "bom.json", b'\xef\xbb\xbf{"a": 1}')
    assert load(j).value == {"a": 1}


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    # Two bad sequences, plus a genuine U+FFFD that must not be counted as a replacement.
    f = write(tmp_path / "bad.txt", b"ok \xff here \xc3( and \xef\xbf\xbd real")
    loaded = load(f)
    assert isinstance(loaded.value, str)
    assert loaded.value.count("\ufffd") == 3
    assert loaded.warnings == [
        LoadWarning(str(f), "invalid UTF-8 replaced (2 replacement characters)")
    ]


def test_invalid_utf8_singular_message(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.txt", b"\xef\xbb\xbfa\xffb")
    loaded = load(f)
    assert loaded.value == "a\ufffdb"
    assert loaded.warnings[0].message == "invalid UTF-8 replaced (1 replacement character)"
    assert str(loaded.warnings[0]) == f"{f}: invalid UTF-8 replaced (1 replacement character)"


def test_binary_single_file_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(ContextError, match="binary"):
        load(f)


def test_nul_after_the_sniff_window_is_text(tmp_path: Path) -> None:
    f = write(tmp_path / "late.txt", b"a" * 9000 + b"\x00")
    assert load(f).value == "a" * 9000 + "\x00"


# -- missing paths and errors ----------------------------------------------------------


def test_missing_path_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ContextError) as info:
        load(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "check the path, or pass - to read standard input" in message
    assert isinstance(info.value, UserError)


def test_missing_path_among_several_fails_before_reading_stdin(tmp_path: Path) -> None:
    ok = write(tmp_path / "a.txt", "a")
    stdin = io.BytesIO(b"unread")
    with pytest.raises(ContextError, match="nope"):
        load_context(["-", str(ok), str(tmp_path / "nope")], stdin=stdin)
    assert stdin.tell() == 0


def test_path_objects_are_accepted(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "a")
    b = write(tmp_path / "b.txt", "b")
    loaded = load_context([a, b])  # type: ignore[list-item]
    assert loaded.value == {str(a): "a", str(b): "b"}


def test_broken_symlink_named_explicitly(tmp_path: Path) -> None:
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "gone.txt")
    with pytest.raises(ContextError, match="missing target"):
        load(link)


def test_no_paths_and_empty_path() -> None:
    with pytest.raises(ContextError, match="no context paths"):
        load_context([])
    with pytest.raises(ContextError, match="empty context path"):
        load_context([""])


def test_stdin_only_once() -> None:
    with pytest.raises(ContextError, match="only once"):
        load_context(["-", "-"], stdin=io.BytesIO(b"x"))


# -- standard input ------------------------------------------------------------------


def test_stdin_is_read_as_text() -> None:
    loaded = load_context(["-"], stdin=io.BytesIO(b"\xef\xbb\xbffrom a pipe \xff"))
    assert loaded.value == "from a pipe \ufffd"
    assert loaded.files == 1
    assert loaded.warnings == [
        LoadWarning("<stdin>", "invalid UTF-8 replaced (1 replacement character)")
    ]


def test_binary_stdin_alone_is_an_error() -> None:
    with pytest.raises(ContextError, match="standard input looks binary"):
        load_context(["-"], stdin=io.BytesIO(b"a\x00b"))


def test_stdin_among_several_paths(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "file")
    loaded = load_context([str(f), "-"], stdin=io.BytesIO(b"piped"))
    assert loaded.value == {str(f): "file", "<stdin>": "piped"}


def test_binary_stdin_among_several_is_skipped(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "file")
    loaded = load_context([str(f), "-"], stdin=io.BytesIO(b"\x00"))
    assert loaded.value == {str(f): "file"}
    assert loaded.warnings == [LoadWarning("<stdin>", "binary input skipped")]


class _FakeStdin:
    def __init__(self, data: bytes, tty: bool) -> None:
        self.buffer = io.BytesIO(data)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_stdin_defaults_to_sys_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _FakeStdin(b"piped in", tty=False))
    assert load_context(["-"]).value == "piped in"


def test_stdin_terminal_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _FakeStdin(b"", tty=True))
    with pytest.raises(ContextError, match="terminal; pipe"):
        load_context(["-"])
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(ContextError, match="no standard input"):
        load_context(["-"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_given_explicitly_is_read(tmp_path: Path) -> None:
    # What a shell's process substitution, --context <(cmd), hands over.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)

    def feed() -> None:
        with open(pipe, "wb") as f:
            f.write(b"streamed text")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert load(pipe).value == "streamed text"
    finally:
        writer.join()


def test_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Running as root makes chmod 000 ineffective, so simulate the failing read.
    write(tmp_path / "d" / "a.txt", "a")
    write(tmp_path / "d" / "locked.txt", "b")
    real_read = context_module._read_bytes

    def fake_read(path: Path) -> bytes | None:
        if path.name == "locked.txt":
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    monkeypatch.setattr(context_module, "_read_bytes", fake_read)
    loaded = load(tmp_path / "d")
    assert loaded.value == {"a.txt": "a"}
    assert loaded.warnings == [
        LoadWarning("locked.txt", "could not be read (Permission denied), skipped")
    ]
    with pytest.raises(ContextError, match=r"cannot read .*locked\.txt.*Permission denied"):
        load(tmp_path / "d" / "locked.txt")


# -- directories and several paths ---------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root / "README.md", "# readme\n")
    write(root / "src" / "main.py", "print('hi')\n")
    write(root / "src" / "util" / "helpers.py", "def f(): ...\n")
    write(root / "src" / "data.json", '{"k": [1]}')
    write(root / "docs" / "guide.md", "guide\n")
    write(root / "docs" / "api" / "ref.md", "ref\n")
    write(root / "rows.jsonl", '{"n": 1}\n{"n": 2}\n')
    write(root / ".env", "SECRET=1\n")
    write(root / ".git" / "config", "[core]\n")
    write(root / "src" / ".cache" / "x.py", "hidden\n")
    write(root / "logo.png", b"\x89PNG\x00\x00binary")
    return root


def test_directory_is_a_sorted_dict_of_relative_paths(tree: Path) -> None:
    loaded = load(tree)
    assert isinstance(loaded.value, dict)
    assert list(loaded.value) == [
        "README.md",
        "docs/api/ref.md",
        "docs/guide.md",
        "rows.jsonl",
        "src/data.json",
        "src/main.py",
        "src/util/helpers.py",
    ]
    assert loaded.value["src/data.json"] == {"k": [1]}
    assert loaded.value["rows.jsonl"] == [{"n": 1}, {"n": 2}]
    assert loaded.value["README.md"] == "# readme\n"
    assert loaded.files == 7
    assert loaded.warnings == [LoadWarning("logo.png", "binary file skipped")]


def test_directory_load_is_deterministic(tree: Path) -> None:
    assert load(tree).value == load(tree).value
    assert list(load(tree).value) == list(load(tree).value)


def test_hidden_files_and_directories_are_skipped(tree: Path) -> None:
    keys = list(load(tree).value)
    assert not any(part.startswith(".") for key in keys for part in key.split("/"))


def test_hidden_file_named_explicitly_is_loaded(tree: Path) -> None:
    assert load(tree / ".env").value == "SECRET=1\n"


def test_include_patterns_match_name_or_relative_path(tree: Path) -> None:
    assert list(load(tree, include=["*.py"]).value) == ["src/main.py", "src/util/helpers.py"]
    assert list(load(tree, include=["docs/*"]).value) == ["docs/api/ref.md", "docs/guide.md"]
    assert list(load(tree, include=["./docs/*.md", "README.md"]).value) == [
        "README.md",
        "docs/api/ref.md",
        "docs/guide.md",
    ]


def test_exclude_patterns_and_directory_pruning(tree: Path) -> None:
    keys = list(load(tree, exclude=["*.md", "*.png"]).value)
    assert keys == ["rows.jsonl", "src/data.json", "src/main.py", "src/util/helpers.py"]
    pruned = list(load(tree, exclude=["util", "docs"]).value)
    assert pruned == ["README.md", "rows.jsonl", "src/data.json", "src/main.py"]
    both = list(load(tree, include=["*.py"], exclude=["src/util/*"]).value)
    assert both == ["src/main.py"]


def test_nothing_matched_mentions_the_patterns(tree: Path) -> None:
    with pytest.raises(ContextError) as info:
        load(tree, include=["*.rs"], exclude=["*.md"])
    message = str(info.value)
    assert "no text files" in message
    assert "*.rs" in message
    assert "*.md" in message


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ContextError, match=r"no text files found in .*empty"):
        load(empty)


def test_directory_with_only_hidden_or_binary_files_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "d" / ".hidden", "x")
    write(tmp_path / "d" / "blob.bin", b"\x00\x01")
    with pytest.raises(ContextError, match=r"1 binary, 1 hidden or filtered out"):
        load(tmp_path / "d")


def test_symlinked_file_is_followed(tmp_path: Path) -> None:
    target = write(tmp_path / "outside.txt", "followed")
    d = tmp_path / "d"
    d.mkdir()
    (d / "link.txt").symlink_to(target)
    assert load(d).value == {"link.txt": "followed"}


def test_directory_symlink_loop_terminates(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "a" / "file.txt", "x")
    (d / "a" / "back").symlink_to(d)
    (d / "a" / "self").symlink_to(d / "a")
    (d / "b").symlink_to(d / "a")
    loaded = load(d)
    assert loaded.value == {"a/file.txt": "x"}
    skipped = sorted(w.path for w in loaded.warnings)
    assert skipped == ["a/back", "a/self", "b"]
    assert all("already visited" in w.message for w in loaded.warnings)


def test_broken_symlink_in_directory_is_skipped(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "ok.txt", "ok")
    (d / "dangling").symlink_to(tmp_path / "missing")
    loaded = load(d)
    assert loaded.value == {"ok.txt": "ok"}
    assert loaded.warnings == [LoadWarning("dangling", "broken symbolic link skipped")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_in_directory_is_skipped_not_read(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "ok.txt", "ok")
    os.mkfifo(d / "pipe")
    loaded = load(d)
    assert loaded.value == {"ok.txt": "ok"}
    assert loaded.warnings == [LoadWarning("pipe", "not a regular file, skipped")]


def test_malformed_json_in_directory_is_kept_as_text(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "broken.json", "{nope")
    write(d / "broken.jsonl", "1\n{\n")
    loaded = load(d)
    assert loaded.value == {"broken.json": "{nope", "broken.jsonl": "1\n{\n"}
    assert [w.path for w in loaded.warnings] == ["broken.json", "broken.jsonl"]
    assert "kept as text" in loaded.warnings[0].message
    assert "line 2" in loaded.warnings[1].message


def test_invalid_utf8_in_directory_warns_with_relative_path(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "sub" / "latin1.txt", "café".encode("latin-1"))
    loaded = load(d)
    assert loaded.value == {"sub/latin1.txt": "caf\ufffd"}
    assert loaded.warnings == [
        LoadWarning("sub/latin1.txt", "invalid UTF-8 replaced (1 replacement character)")
    ]


def test_several_paths_give_a_dict_keyed_as_given(tmp_path: Path, tree: Path) -> None:
    extra = write(tmp_path / "extra.txt", "extra")
    data = write(tmp_path / "d.json", "[1]")
    loaded = load(extra, data, tree / "docs")
    assert loaded.value == {
        str(extra): "extra",
        str(data): [1],
        f"{tree}/docs/api/ref.md": "ref\n",
        f"{tree}/docs/guide.md": "guide\n",
    }
    assert loaded.files == 4
    assert loaded.total_chars == len("extra") + len("[1]") + len("ref\n") + len("guide\n")


def test_several_relative_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    loaded = load("./docs/", "README.md")
    assert list(loaded.value) == ["docs/api/ref.md", "docs/guide.md", "README.md"]
    monkeypatch.chdir(tree / "docs")
    assert list(load(".", "../README.md").value) == ["api/ref.md", "guide.md", "../README.md"]


def test_duplicate_paths_are_loaded_once(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "a")
    loaded = load(f, f)
    assert loaded.value == {str(f): "a"}
    assert loaded.files == 1
    assert loaded.warnings == [LoadWarning(str(f), "given more than once; loaded once")]


def test_explicit_binary_among_several_is_skipped(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "a")
    b = write(tmp_path / "b.bin", b"\x00")
    loaded = load(f, b)
    assert loaded.value == {str(f): "a"}
    assert loaded.warnings == [LoadWarning(str(b), "binary file skipped")]


def test_explicit_malformed_json_among_several_raises(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "a")
    j = write(tmp_path / "b.jsonl", "{\n")
    with pytest.raises(ContextError, match=r"b\.jsonl.*line 1"):
        load(f, j)


def test_only_binary_explicit_files_is_an_error(tmp_path: Path) -> None:
    a = write(tmp_path / "a.bin", b"\x00")
    b = write(tmp_path / "b.bin", b"\x00")
    with pytest.raises(ContextError, match="2 binary"):
        load(a, b)


# -- normalize_context ---------------------------------------------------------------


def test_normalize_keeps_str_list_and_dict_identity() -> None:
    text = "x" * 1000
    assert normalize_context(text) is text
    items = ["a", 1, {"b": 2}]
    assert normalize_context(items) is items
    mapping = {"k": "v", "n": [1]}
    assert normalize_context(mapping) is mapping


def test_normalize_converts_tuple_mapping_and_bytes() -> None:
    assert normalize_context(("a", "b")) == ["a", "b"]
    from types import MappingProxyType

    assert normalize_context(MappingProxyType({"a": 1})) == {"a": 1}
    assert normalize_context(b"caf\xc3\xa9 \xff") == "café \ufffd"
    assert normalize_context(bytearray(b"\xef\xbb\xbfx")) == "x"


@pytest.mark.parametrize("value", [42, 3.5, None, object(), {1, 2}])
def test_normalize_rejects_other_types(value: object) -> None:
    with pytest.raises(ContextError, match="context must be a str, a list or a dict, got") as info:
        normalize_context(value)
    message = str(info.value)
    assert type(value).__name__ in message
    assert "json.dumps or str" in message


def test_normalize_rejects_non_str_dict_keys() -> None:
    with pytest.raises(ContextError, match=r"keys must be str.*int"):
        normalize_context({"a": 1, 2: "b"})


# -- describe_context ----------------------------------------------------------------


def test_describe_str() -> None:
    desc = describe_context("x" * 5_242_880)
    assert desc == ContextDescription("str", 5_242_880, None, [], [])
    assert desc.summary() == "The context is a str of 5,242,880 characters."


def test_describe_list_of_str() -> None:
    desc = describe_context(["a" * 100, "b" * 2000, ""])
    assert desc.type_name == "list[str]"
    assert desc.item_count == 3
    assert desc.total_chars == 2100
    assert desc.item_lengths == [100, 2000, 0]
    assert desc.item_keys == []
    assert desc.summary() == (
        "The context is a list of 3 str items, 2,100 characters in total.\n"
        "Item lengths: [100, 2000, 0]."
    )


def test_describe_long_list_caps_lengths() -> None:
    desc = describe_context(["ab"] * 250)
    assert desc.item_count == 250
    assert desc.total_chars == 500
    assert len(desc.item_lengths) == 100
    summary = desc.summary()
    assert "(first 100 of 250 shown)" in summary
    assert len(summary.splitlines()) == 2


def test_describe_mixed_list_measures_json() -> None:
    desc = describe_context(["abc", {"ключ": 1}, None])
    assert desc.type_name == "list"
    assert desc.item_lengths == [3, len('{"ключ": 1}'), 4]
    assert desc.total_chars == 3 + len('{"ключ": 1}') + 4
    assert "not all str" in desc.summary()


def test_describe_dict() -> None:
    desc = describe_context({"a.txt": "hello", "b.json": [1, 2]})
    assert desc.type_name == "dict"
    assert desc.item_count == 2
    assert desc.item_keys == ["a.txt", "b.json"]
    assert desc.item_lengths == [5, len("[1, 2]")]
    assert desc.total_chars == 5 + 6
    lines = desc.summary().splitlines()
    assert len(lines) == 3
    assert lines[0] == (
        "The context is a dict with 2 str keys, 11 characters in its values in total."
    )
    assert lines[1] == "Keys: ['a.txt', 'b.json']."
    assert lines[2] == "Value lengths: [5, 6]."


def test_describe_large_dict_caps_keys() -> None:
    desc = describe_context({f"k{i}": "v" for i in range(150)})
    assert len(desc.item_keys) == 100
    assert len(desc.item_lengths) == 100
    assert desc.total_chars == 150
    assert desc.summary().count("(first 100 of 150 shown)") == 2


def test_describe_empty_containers() -> None:
    assert describe_context([]).summary() == "The context is an empty list."
    assert describe_context({}).summary() == "The context is an empty dict."
    assert describe_context("").summary() == "The context is a str of 0 characters."


def test_describe_rejects_bad_values() -> None:
    with pytest.raises(ContextError):
        describe_context(12)


# -- context_text --------------------------------------------------------------------


def test_context_text_str_is_the_same_object() -> None:
    text = "some long text " * 100
    assert context_text(text) is text


def test_context_text_list_headers() -> None:
    assert context_text(["alpha", "beta\n", {"x": "é"}, 5]) == (
        '=== [0] ===\nalpha\n=== [1] ===\nbeta\n\n=== [2] ===\n{"x": "é"}\n=== [3] ===\n5'
    )


def test_context_text_dict_headers() -> None:
    value = {"a.txt": "A", "b.json": {"when": "now"}, "c": [1, "two"]}
    assert context_text(value) == (
        '=== a.txt ===\nA\n=== b.json ===\n{"when": "now"}\n=== c ===\n[1, "two"]'
    )


def test_context_text_renders_unusual_values() -> None:
    from datetime import date

    cyclic: list[object] = []
    cyclic.append(cyclic)
    text = context_text([date(2024, 1, 2), {1: (2, 3)}, cyclic])
    assert '"2024-01-02"' in text
    assert '{"1": [2, 3]}' in text
    assert "[[...]]" in text


def test_context_text_tolerates_values_rebound_in_the_repl() -> None:
    assert context_text(42) == "42"  # type: ignore[arg-type]
    assert context_text(("a", "b")) == "=== [0] ===\na\n=== [1] ===\nb"  # type: ignore[arg-type]
    assert context_text({1: "x"}) == "=== 1 ===\nx"  # type: ignore[dict-item]


def test_context_text_empty() -> None:
    assert context_text([]) == ""
    assert context_text({}) == ""
