"""The in-process ``local`` sandbox: the shared contract, plus what only it does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from rlmx.exceptions import ConfigError, SandboxError
from rlmx.sandbox import Sandbox, SandboxConfig, available_sandboxes, get_sandbox
from tests.sandbox.contract import OpenSandbox, SandboxContract, ok, run_json


def skip_if_traced_on_311() -> None:
    """Skip a test whose cell gets a timeout while blocked in C, if a tracer runs on 3.11.

    On CPython 3.11, while an asynchronous exception waits for a thread blocked in C,
    every *traced* thread (coverage, debuggers) spins at its next call, event loop
    included, until the C call returns. Fixed in 3.12; without a tracer it does not occur.
    """
    if sys.version_info < (3, 12) and sys.gettrace() is not None:
        pytest.skip("a tracer (coverage) is active: CPython 3.11 spins on a pending async exc")


class TestLocalSandbox(SandboxContract):
    async def make_sandbox(self, config: SandboxConfig) -> Sandbox:
        return get_sandbox("local", config)

    async def test_sleep_times_out(self, open_sandbox: OpenSandbox) -> None:
        skip_if_traced_on_311()
        await super().test_sleep_times_out(open_sandbox)

    # ------------------------------------------------------------ local only
    async def test_kind_and_isolation_flags(self, sandbox: Sandbox) -> None:
        assert sandbox.kind == "local"
        assert sandbox.isolated is False

    async def test_context_is_passed_by_reference(self, open_sandbox: OpenSandbox) -> None:
        value = {"doc": ["a", "b"]}
        sandbox = await open_sandbox(context=value)
        result = ok(await sandbox.execute(f"print(id(context) == {id(value)})"))
        assert result.stdout == "True\n"
        # Same object: a change made by the cell is seen by the host.
        ok(await sandbox.execute("context['doc'].append('c')"))
        assert value["doc"] == ["a", "b", "c"]

    async def test_thread_spawned_by_a_cell_can_print(self, sandbox: Sandbox) -> None:
        code = textwrap.dedent(
            """\
            import threading
            done = []
            def work():
                print('from the thread')
                done.append(True)
            t = threading.Thread(target=work)
            t.start()
            t.join(5)
            print('main', done)
            """
        )
        result = ok(await sandbox.execute(code))
        assert "main [True]" in result.stdout
        assert ok(await sandbox.execute("1 + 1")).stdout == "2\n"

    async def test_native_blocking_cell_is_abandoned(self, open_sandbox: OpenSandbox) -> None:
        """A cell blocked in C (here a lock wait) cannot be interrupted: its thread is left."""
        skip_if_traced_on_311()
        sandbox = await open_sandbox(SandboxConfig(cell_timeout_s=0.5))
        ok(await sandbox.execute("import threading\nev = threading.Event()\nkept = 'yes'"))
        started = time.monotonic()
        result = await sandbox.execute("ev.wait()\nafter_wait = True")
        assert time.monotonic() - started < 6
        assert result.timed_out
        assert result.error is not None
        assert "could not be interrupted" in result.error
        # The sandbox goes on with a new thread and the same namespace...
        assert ok(await sandbox.execute("print(kept)")).stdout == "yes\n"
        # ...while the abandoned cell is still blocked; release it so it ends.
        ok(await sandbox.execute("ev.set()"))
        await asyncio.sleep(0.2)
        # It was abandoned with a timeout pending, so it stopped right after the wait.
        assert await run_json(sandbox, "'after_wait' in globals()") is False

    async def test_gil_holding_regex_past_timeout(self, open_sandbox: OpenSandbox) -> None:
        """Catastrophic backtracking holds the GIL: nothing in-process can preempt it.

        The whole process (event loop included) is frozen until the regex ends, so the
        cell comes back late, either finished or timed out depending on which thread runs
        first when it ends. Whichever: no timeout may leak into the *next* cell.
        """
        sandbox = await open_sandbox(SandboxConfig(cell_timeout_s=0.05))
        ok(await sandbox.execute("import re\nn = 0"))
        for _ in range(25):
            result = await sandbox.execute("n += 1\nre.match(r'(a+)+$', 'a' * 20 + 'b')")
            assert result.final is None
            if result.timed_out:
                assert result.error is not None
            else:
                assert result.error is None
            follow = await sandbox.execute("print('next', n)")
            assert ok(follow).stdout.startswith("next")

    def test_stuck_cell_does_not_keep_the_process_alive(self) -> None:
        script = textwrap.dedent(
            """\
            import asyncio
            from rlmx.sandbox import SandboxConfig, get_sandbox

            async def main():
                sandbox = get_sandbox("local", SandboxConfig(cell_timeout_s=0.2))
                result = await sandbox.execute("import time\\ntime.sleep(120)")
                assert result.timed_out, result
                await sandbox.aclose()
                print("finished")

            asyncio.run(main())
            """
        )
        # Untraced, even under coverage (see skip_if_traced_on_311).
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=40, env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "finished\n"
        assert time.monotonic() - started < 20

    def test_tracer_skipped_tests_pass_untraced(self) -> None:
        """Where skip_if_traced_on_311 skips (CI runs under coverage), run them untraced."""
        if sys.version_info >= (3, 12) or sys.gettrace() is None:
            pytest.skip("the tests themselves ran in this process")
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
        selected = "test_sleep_times_out or test_native_blocking_cell_is_abandoned"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
             "-p", "no:cov", "-k", selected],
            capture_output=True, text=True, timeout=100, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "2 passed" in proc.stdout

    async def test_execute_after_close_raises(self, open_sandbox: OpenSandbox) -> None:
        sandbox = await open_sandbox()
        await sandbox.aclose()
        with pytest.raises(SandboxError, match="closed"):
            await sandbox.execute("1")


def test_both_kinds_are_registered() -> None:
    assert available_sandboxes() == ["isolated", "local"]
    assert get_sandbox("isolated").kind == "isolated"


def test_unknown_sandbox_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Bad option for the 'local' sandbox"):
        get_sandbox("local", memory_mb=100)


def test_unknown_sandbox_kind_lists_the_kinds() -> None:
    with pytest.raises(ConfigError, match="choose one of: isolated, local") as info:
        get_sandbox("docker")
    assert "'docker'" in str(info.value)
    assert "local" in available_sandboxes()


async def test_get_sandbox_builds_config_from_keywords() -> None:
    async with get_sandbox("local", cell_timeout_s=3.0, max_output_chars=123) as sandbox:
        assert sandbox.config == SandboxConfig(cell_timeout_s=3.0, max_output_chars=123)
