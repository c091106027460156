"""The public surface is exactly what is exported, and every export exists."""

from __future__ import annotations

import importlib

import pytest

import rlmx

EXPECTED_TOP_LEVEL = {
    "RLM",
    "RLMResult",
    "Limits",
    "RunUsage",
    "RequestUsage",
    "ModelUsage",
    "RLMError",
    "UserError",
    "ConfigError",
    "ContextError",
    "ModelError",
    "ModelAPIError",
    "ModelConnectionError",
    "SandboxError",
    "LimitExceeded",
    "__version__",
}


def test_top_level_exports() -> None:
    assert set(rlmx.__all__) == EXPECTED_TOP_LEVEL


@pytest.mark.parametrize(
    "module",
    [
        "rlmx",
        "rlmx.models",
        "rlmx.sandbox",
        "rlmx.exceptions",
        "rlmx.trace",
        "rlmx.usage",
        "rlmx.limits",
        "rlmx.context",
        "rlmx.parsing",
        "rlmx.pricing",
    ],
)
def test_every_exported_name_exists(module: str) -> None:
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{module}.{name} is exported but missing"


def test_designed_names_are_reachable() -> None:
    from rlmx.models import FunctionModel, Model, ScriptedModel, get_model  # noqa: F401
    from rlmx.sandbox import ExecResult, Sandbox, get_sandbox  # noqa: F401

    fields = set(ExecResult.__dataclass_fields__)
    assert {"stdout", "stderr", "error", "final", "timed_out", "duration_s"} <= fields
    limit_fields = set(rlmx.Limits.__dataclass_fields__)
    assert limit_fields == {
        "max_iterations",
        "max_depth",
        "max_sub_calls",
        "max_tokens",
        "max_cost_usd",
        "timeout_s",
        "cell_timeout_s",
        "max_output_chars",
        "max_concurrency",
    }
    result_fields = set(rlmx.RLMResult.__dataclass_fields__)
    assert {
        "answer",
        "output",
        "usage",
        "cost_usd",
        "iterations",
        "sub_calls",
        "depth_reached",
        "elapsed_s",
        "stopped_by",
        "trace_path",
    } <= result_fields
