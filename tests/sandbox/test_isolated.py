"""The ``isolated`` sandbox: the shared contract, plus what only a worker process does.

Attacks on the confinement live in ``tests/security/``; these are the REPL's behaviour
across the process boundary: restarts, crashes, limits, the context file.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.sandbox.contract")

from rlmx.sandbox import Sandbox, SandboxConfig, get_sandbox  # noqa: E402
from tests.sandbox.contract import SandboxContract  # noqa: E402


class TestIsolatedSandbox(SandboxContract):
    async def make_sandbox(self, config: SandboxConfig) -> Sandbox:
        return get_sandbox("isolated", config)

    async def test_kind_and_isolation_flags(self, sandbox: Sandbox) -> None:
        assert sandbox.kind == "isolated"
        assert sandbox.isolated is True
