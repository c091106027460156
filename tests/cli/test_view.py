"""``rlmx view``: a trace file becomes a page, a folder becomes an index of pages, and bad
input gets one clear line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
import webbrowser
from pathlib import Path

import pytest

from rlmx.cli import EXIT_OK, EXIT_USAGE, main
from tests.view.traces import NEEDLE_ANSWER, bench_record, depth_two_run


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    depth_two_run(path)
    return path


def test_view_writes_a_page_beside_the_trace(
    trace_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["view", str(trace_path)]) == EXIT_OK
    page = trace_path.with_suffix(".html")
    assert capsys.readouterr().out.strip() == str(page)
    assert NEEDLE_ANSWER in page.read_text()


def test_view_end_to_end_in_a_subprocess(trace_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "pages" / "page.html"
    proc = subprocess.run(
        [sys.executable, "-m", "rlmx", "view", str(trace_path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and out.stat().st_size > 10_000


def test_open_hands_the_page_to_the_browser(
    trace_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    out = tmp_path / "v.html"
    assert main(["view", str(trace_path), "--out", str(out), "--open"]) == EXIT_OK
    assert opened == [out.resolve().as_uri()]


def test_a_killed_run_is_viewable_with_a_warning(
    trace_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = trace_path.read_text().splitlines(keepends=True)
    cut = tmp_path / "killed.jsonl"
    cut.write_text("".join(lines[:10]) + lines[10][:30])
    assert main(["view", str(cut)]) == EXIT_OK
    assert "did not finish" in capsys.readouterr().err
    assert cut.with_suffix(".html").exists()


def test_a_folder_gets_an_index_with_benchmark_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bench"
    (folder / "traces").mkdir(parents=True)
    depth_two_run(folder / "traces" / "a.jsonl")
    depth_two_run(folder / "traces" / "b.jsonl")
    records = [bench_record("a", "rlm", 1.0), bench_record("b", "rlm", 0.0)]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["view", str(folder)]) == EXIT_OK
    index = folder / "view" / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    text = index.read_text()
    assert '"score":1.0' in text and '"method":"rlm"' in text
    assert (folder / "view" / "traces__a.html").exists()
    assert (folder / "view" / "traces__b.html").exists()
    # viewing again does not list the pages it wrote, nor the results file, as traces
    assert main(["view", str(folder)]) == EXIT_OK
    assert index.read_text().count('"trace":') == 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "No such trace file or folder"),
        ("not_a_trace", "holds no rlmx trace events"),
        ("empty_dir", "No trace files under"),
        ("overwrite", "would overwrite the trace itself"),
        ("tiny_limit", "--max-text-chars must be at least 100"),
    ],
)
def test_bad_input_is_one_clear_line(
    setup: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args: list[str]
    if setup == "missing":
        args = [str(tmp_path / "nope.jsonl")]
    elif setup == "not_a_trace":
        (tmp_path / "notes.jsonl").write_text("hello\n")
        args = [str(tmp_path / "notes.jsonl")]
    elif setup == "empty_dir":
        args = [str(tmp_path)]
    elif setup == "overwrite":
        depth_two_run(tmp_path / "t.jsonl")
        args = [str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "t.jsonl")]
    else:
        args = [str(tmp_path), "--max-text-chars", "5"]
    assert main(["view", *args]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
