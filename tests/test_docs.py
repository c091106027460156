"""The README's Python example runs, and its test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", README, flags=re.DOTALL | re.MULTILINE)
    assert blocks, "the README should show a runnable Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_ci_runs_the_readme_test_command() -> None:
    match = re.search(r"## Run the tests\n\n```bash\n(.+?)\n```", README)
    assert match is not None
    command = match.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"exec {command}" in ci


def test_readme_documents_every_exit_code() -> None:
    from rlmx.cli import EXIT_CODES

    for code in EXIT_CODES:
        assert f"`{code}`" in README


def test_viewer_doc_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "viewer.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    assert blocks
    monkeypatch.chdir(tmp_path)  # the example writes run.jsonl
    for block in blocks:
        exec(compile(block, "docs/viewer.md", "exec"), {"__name__": "doc"})
    assert (tmp_path / "run.jsonl").exists()
