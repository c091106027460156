"""Suite-wide safety: no test may send a paid model request (loopback servers excepted)."""

from __future__ import annotations

import os

import pytest

import rlmx.models

# The sandbox contract's plain asserts get pytest's detailed messages only if rewritten,
# which must be registered before any test module imports it.
pytest.register_assert_rewrite("tests.sandbox.contract")

# Child processes (the CLI under test) inherit the switch through the environment.
os.environ["RLMX_ALLOW_MODEL_REQUESTS"] = "0"
rlmx.models.ALLOW_MODEL_REQUESTS = False


@pytest.fixture(autouse=True)
def _no_model_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rlmx.models, "ALLOW_MODEL_REQUESTS", False)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLMX_MODEL", "RLMX_SUB_MODEL"):
        monkeypatch.delenv(var, raising=False)
