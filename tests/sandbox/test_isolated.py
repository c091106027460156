"""The ``isolated`` sandbox: the shared contract, plus what only a worker process does.

Attacks on the confinement live in ``tests/security/``; these are the REPL's behaviour
across the process boundary: restarts, crashes, limits, the context file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import rlmx
from rlmx.exceptions import ContextError, SandboxError
from rlmx.sandbox import (
    IsolatedSandbox,
    IsolationWarning,
    Sandbox,
    SandboxConfig,
    _spawn,
    get_sandbox,
)
from rlmx.sandbox._spawn import IsolationProbe, probe
from tests.sandbox.contract import FakeHandler, OpenSandbox, SandboxContract, ok


class TestIsolatedSandbox(SandboxContract):
    async def make_sandbox(self, config: SandboxConfig) -> Sandbox:
        return get_sandbox("isolated", config)

    async def test_kind_and_isolation_flags(self, sandbox: Sandbox) -> None:
        assert sandbox.kind == "isolated"
        assert sandbox.isolated is True

    # ------------------------------------------------------------ isolated only
    async def test_report_names_the_layers_applied(self, sandbox: Sandbox) -> None:
        ok(await sandbox.execute("1"))
        report = sandbox.describe()
        assert report["sandbox"] == "isolated"
        expected = probe().available_layers
        assert report["layers"] == expected
        assert report["confined"] is True

    async def test_code_runs_in_another_process_without_the_host_environment(
        self, open_sandbox: OpenSandbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("RLMX_HOST_SECRET", "s3cr3t-value")
        sandbox = await open_sandbox()
        result = ok(await sandbox.execute("import os\nprint(os.getpid(), sorted(os.environ))"))
        pid, names = result.stdout.split(" ", 1)
        assert int(pid) != os.getpid()
        assert "RLMX_HOST_SECRET" not in names
        assert "s3cr3t-value" not in result.stdout

    async def test_c_loop_is_hard_killed_and_the_model_told_what_was_lost(
        self, open_sandbox: OpenSandbox
    ) -> None:
        sandbox = await open_sandbox(
            SandboxConfig(cell_timeout_s=0.5), context="the context survives"
        )
        ok(await sandbox.execute("alpha = 1\nbeta = [2]"))
        result = await sandbox.execute("sum(range(10**13))")
        assert result.timed_out and result.restarted
        assert result.lost_variables == ("alpha", "beta")
        assert result.error is not None
        assert "Variables lost: alpha, beta" in result.error
        after = ok(await sandbox.execute("print(context, 'alpha' in globals())"))
        assert after.stdout == "the context survives False\n"
        assert not after.restarted

    @pytest.mark.parametrize(
        ("code", "how"),
        [
            ("import ctypes\nctypes.string_at(0)", "killed by SIGSEGV"),
            ("import os\nos._exit(3)", "exited with status 3"),
            ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
        ],
    )
    async def test_crash_is_reported_and_a_fresh_worker_continues(
        self, open_sandbox: OpenSandbox, code: str, how: str
    ) -> None:
        sandbox = await open_sandbox(context="ctx")
        ok(await sandbox.execute("kept = 1"))
        result = await sandbox.execute(code)
        assert result.restarted
        assert result.lost_variables == ("kept",)
        assert result.error is not None
        assert how in result.error
        assert ok(await sandbox.execute("context")).stdout == "'ctx'\n"

    async def test_segfault_shows_the_python_stack(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox()
        result = await sandbox.execute(
            "import ctypes\ndef crash():\n    ctypes.string_at(0)\ncrash()"
        )
        assert result.error is not None
        assert "Segmentation fault" in result.error
        assert "crash" in result.error

    async def test_worker_killed_between_cells_is_reported_on_the_next_cell(
        self, open_sandbox: OpenSandbox
    ) -> None:
        sandbox = await open_sandbox()
        assert isinstance(sandbox, IsolatedSandbox)
        ok(await sandbox.execute("gone = 'soon'"))
        assert sandbox.worker_pid is not None
        os.killpg(sandbox.worker_pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        result = await sandbox.execute("print('fresh')")
        assert result.stdout == "fresh\n"
        assert result.restarted
        assert result.lost_variables == ("gone",)
        assert result.error is not None
        assert result.error.startswith("Before this cell, the REPL process was killed by SIGKILL")

    async def test_memory_exhaustion_is_a_memory_error(self) -> None:
        async with IsolatedSandbox(SandboxConfig(cell_timeout_s=20), memory_mb=1024) as sandbox:
            ok(await sandbox.execute("small = 'still here'"))
            result = await sandbox.execute("hog = bytearray(4 * 1024**3)")
            assert result.error is not None
            assert "MemoryError" in result.error
            assert not result.restarted
            assert ok(await sandbox.execute("small")).stdout == "'still here'\n"

    async def test_output_flood_is_capped_in_the_worker(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(SandboxConfig(cell_timeout_s=20, max_output_chars=1000))
        result = ok(await sandbox.execute("for _ in range(100):\n    print('x' * 10**6)"))
        assert len(result.stdout) < 1200
        assert result.truncated_chars > 99 * 10**6

    @pytest.mark.parametrize(
        "value",
        [
            "plain ascii\n" * 1000,
            "non-ascii: é, ü, 漢字, 🙂 and a lone surrogate \udc80",
            "",
            ["a", "é", {"k": [1, 2.5, None, True]}],
            {"doc": "text", "n": 3},
        ],
        ids=["ascii", "unicode", "empty", "list", "dict"],
    )
    async def test_context_arrives_intact(self, open_sandbox: OpenSandbox, value: Any) -> None:
        sandbox = await open_sandbox(context=value)
        result = ok(await sandbox.execute("import json\nprint(json.dumps(context))"))
        assert json.loads(result.stdout) == value

    async def test_large_ascii_context_is_read_in_place(self, open_sandbox: OpenSandbox) -> None:
        text = "".join(f"line {i:08d} of the context\n" for i in range(800_000))  # ~22 MB
        sandbox = await open_sandbox(context=text)
        code = "import hashlib\nprint(len(context), hashlib.sha256(context.encode()).hexdigest())"
        result = ok(await sandbox.execute(code))
        assert result.stdout == f"{len(text)} {hashlib.sha256(text.encode()).hexdigest()}\n"
        # A str built in place must behave like any other: hashing, dict keys, equality.
        ok(await sandbox.execute("d = {context: 1}\nassert d[context[:]] == 1"))

    async def test_context_that_is_not_json_data_is_a_context_error(
        self, open_sandbox: OpenSandbox
    ) -> None:
        loop: list[Any] = []
        loop.append(loop)
        sandbox = await open_sandbox()
        with pytest.raises(ContextError, match="JSON data"):
            await sandbox.load_context(loop)

    async def test_non_json_items_arrive_as_text(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context=[Decimal("1.5"), "x"])
        assert ok(await sandbox.execute("context")).stdout == "['1.5', 'x']\n"

    async def test_the_context_file_cannot_be_changed_by_the_code(
        self, open_sandbox: OpenSandbox
    ) -> None:
        sandbox = await open_sandbox(SandboxConfig(cell_timeout_s=0.5), context="original")
        code = (
            "import os\npath = os.path.join(os.path.dirname(os.getcwd()), 'context', 'context')\n"
            "print(open(path).read())\n"
            "try:\n    open(path, 'w').write('forged')\nexcept Exception as e:\n"
            "    print(type(e).__name__)"
        )
        result = ok(await sandbox.execute(code))
        # Readable (the worker loads it from there), never writable: Landlock or a read-only mount.
        assert result.stdout in ("original\nPermissionError\n", "original\nOSError\n")
        await sandbox.execute("sum(range(10**13))")  # hard kill: the context is read again
        assert ok(await sandbox.execute("context")).stdout == "'original'\n"

    async def test_bigger_context_restarts_the_worker_with_more_memory(self) -> None:
        async with IsolatedSandbox(SandboxConfig()) as sandbox:
            await sandbox.load_context("small")
            first = sandbox.worker_pid
            sandbox._worker_memory = 1  # as if it had started with too small a limit
            await sandbox.load_context("next")
            assert sandbox.worker_pid != first
            assert ok(await sandbox.execute("context")).stdout == "'next'\n"

    async def test_threads_in_the_cell_make_concurrent_sub_calls(
        self, open_sandbox: OpenSandbox
    ) -> None:
        handler = _CountingHandler()
        sandbox = await open_sandbox(SandboxConfig(handler=handler, cell_timeout_s=20))
        code = (
            "import threading\nout = []\n"
            "ts = [threading.Thread(target=lambda i=i: out.append(llm_query(str(i)))) "
            "for i in range(4)]\n"
            "[t.start() for t in ts]\n[t.join() for t in ts]\nsorted(out)"
        )
        result = ok(await sandbox.execute(code))
        assert result.stdout == "['ok:0', 'ok:1', 'ok:2', 'ok:3']\n"
        assert handler.max_in_flight == 4  # served at once on the host, not one by one

    async def test_handler_failure_is_an_error_in_the_cell(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(SandboxConfig(handler=_BrokenHandler(), cell_timeout_s=5))
        result = await sandbox.execute("llm_query('x')")
        assert result.error is not None
        assert "RuntimeError: ValueError: handler bug" in result.error
        assert ok(await sandbox.execute("1")).stdout == "1\n"

    async def test_non_str_model_name_is_a_type_error(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(SandboxConfig(handler=FakeHandler(), cell_timeout_s=5))
        result = await sandbox.execute("llm_query('x', model=42)")
        assert result.error is not None
        assert "TypeError: model must be a str" in result.error

    async def test_unencodable_rlm_context_is_a_type_error(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(SandboxConfig(handler=FakeHandler(), cell_timeout_s=5))
        result = await sandbox.execute("x = []\nx.append(x)\nrlm_query('q', context=x)")
        assert result.error is not None
        assert "TypeError: rlm_query context must be JSON-compatible" in result.error

    async def test_aclose_removes_the_scratch_directory(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox(context="c")
        result = ok(await sandbox.execute("import os\nopen('f', 'w').write('x')\nos.getcwd()"))
        scratch = result.stdout.strip().strip("'")
        assert Path(scratch).exists()
        await sandbox.aclose()
        assert not Path(scratch).exists()

    async def test_variable_of_a_dead_worker_is_none(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox()
        assert isinstance(sandbox, IsolatedSandbox)
        ok(await sandbox.execute("answer = 'x'"))
        assert await sandbox.variable("answer") == "x"
        assert sandbox.worker_pid is not None
        os.killpg(sandbox.worker_pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert await sandbox.variable("answer") is None

    async def test_threads_working_after_their_cell_stop_the_worker(
        self, open_sandbox: OpenSandbox
    ) -> None:
        sandbox = await open_sandbox(SandboxConfig(cell_timeout_s=5), context="c")
        code = (
            "import threading\nstate = {'n': 0}\ndef spin():\n    while True:\n"
            "        state['n'] += 1\nthreading.Thread(target=spin, daemon=True).start()"
        )
        ok(await sandbox.execute(code))
        await asyncio.sleep(1.5)  # idle: the worker notices CPU use without a cell
        result = await sandbox.execute("print(context)")
        assert result.stdout == "c\n"
        assert result.restarted
        assert result.lost_variables == ("state", "spin")
        assert result.error is not None
        assert "threads started by an earlier cell kept working" in result.error

    async def test_idle_threads_left_by_a_cell_are_tolerated(
        self, open_sandbox: OpenSandbox
    ) -> None:
        sandbox = await open_sandbox()
        code = "from concurrent.futures import ThreadPoolExecutor\npool = ThreadPoolExecutor(4)"
        ok(await sandbox.execute(code + "\nlist(pool.map(abs, [-1, -2]))"))
        await asyncio.sleep(1.0)
        result = ok(await sandbox.execute("list(pool.map(abs, [-3]))"))
        assert result.stdout == "[3]\n"
        assert not result.restarted

    async def test_sub_calls_outside_a_cell_are_refused(self, open_sandbox: OpenSandbox) -> None:
        handler = FakeHandler()
        sandbox = await open_sandbox(SandboxConfig(handler=handler, cell_timeout_s=5))
        code = (
            "import threading, time\nerrors = []\ndef later():\n    time.sleep(0.3)\n"
            "    try:\n        llm_query('late')\n    except RuntimeError as e:\n"
            "        errors.append(str(e))\nthreading.Thread(target=later).start()"
        )
        ok(await sandbox.execute(code))
        await asyncio.sleep(0.6)
        result = ok(await sandbox.execute("print(errors)"))
        assert "only possible while a cell runs" in result.stdout
        assert handler.llm_calls == []


class _CountingHandler:
    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0

    async def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(100):  # until every thread's call has arrived, or 5 s
                if self.max_in_flight >= 4:
                    break
                await asyncio.sleep(0.05)
            return [f"ok:{p}" for p in prompts]
        finally:
            self.in_flight -= 1

    async def rlm_query_batched(self, prompts: list[str], contexts: list[Any] | None) -> list[str]:
        return []


class _BrokenHandler(_CountingHandler):
    async def llm_query_batched(self, prompts: list[str], model: str | None) -> list[str]:
        raise ValueError("handler bug")


# ---------------------------------------------------------------- weaker machines


def _weak_probe() -> IsolationProbe:
    return IsolationProbe(
        platform="linux",
        bwrap=None,
        bwrap_problem="not installed",
        landlock_abi=0,
        seccomp_problem="no libseccomp",
    )


async def test_only_rlimits_warns_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_spawn, "probe", _weak_probe)
    async with IsolatedSandbox(SandboxConfig()) as sandbox:
        with pytest.warns(IsolationWarning, match="only these layers: rlimits"):
            ok(await sandbox.execute("1"))
        assert sandbox.describe()["confined"] is False


async def test_require_isolation_refuses_weak_confinement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_spawn, "probe", _weak_probe)
    async with IsolatedSandbox(SandboxConfig(), require_isolation=True) as sandbox:
        with pytest.raises(SandboxError, match="require_isolation=True"):
            await sandbox.execute("1")


async def test_use_bwrap_true_without_bwrap_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_spawn, "probe", _weak_probe)
    async with IsolatedSandbox(SandboxConfig(), use_bwrap=True) as sandbox:
        with pytest.raises(SandboxError, match="bubblewrap is unusable: not installed"):
            await sandbox.execute("1")


@pytest.mark.skipif(probe().landlock_abi == 0, reason="no Landlock in this kernel")
async def test_without_namespaces_landlock_and_seccomp_still_confine() -> None:
    async with IsolatedSandbox(SandboxConfig(), use_bwrap=False) as sandbox:
        code = (
            "import socket\nfor what in (lambda: open('/etc/hostname').read(), socket.socket):\n"
            "    try:\n        what()\n    except OSError as e:\n        print(type(e).__name__)"
        )
        result = ok(await sandbox.execute(code))
        assert result.stdout == "PermissionError\nPermissionError\n"
        assert sandbox.describe()["layers"] == ["landlock", "seccomp", "rlimits"]


def test_bwrap_can_be_turned_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLMX_BWRAP", "0")
    assert _spawn._find_bwrap() == (None, "disabled by RLMX_BWRAP")
    monkeypatch.setenv("RLMX_BWRAP", "/nonexistent/bwrap")
    path, problem = _spawn._find_bwrap()
    assert path is None
    assert problem is not None and "could not run" in problem


def test_worker_import_path_leaves_out_the_project_checkout() -> None:
    paths = _spawn.worker_sys_path()
    project = str(Path(__file__).resolve().parents[2])
    assert all(not p.startswith(project + "/tests") for p in paths)
    assert project not in paths
    readable = _spawn.interpreter_paths()
    assert str(Path(rlmx.__file__).parent) in readable or any(
        str(Path(rlmx.__file__).parent).startswith(p + "/") for p in readable
    )
