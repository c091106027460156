"""rlmx: Recursive Language Models that are correct, isolated, fast and measurable.

A model answers a query over a context far larger than its window by programming a
REPL in which the context is a variable, calling sub-models on pieces of it, and
finishing with ``FINAL(answer)``::

    from rlmx import RLM, Limits
    rlm = RLM("openai:gpt-5", sub_model="openai:gpt-5-mini", sandbox="local",
              limits=Limits(max_iterations=30, max_cost_usd=2.0))
    result = rlm.completion(context, "Which users asked about locations most?")
"""

from rlmx.exceptions import (
    ConfigError,
    ContextError,
    LimitExceeded,
    ModelAPIError,
    ModelConnectionError,
    ModelError,
    RLMError,
    SandboxError,
    UserError,
)
from rlmx.limits import Limits
from rlmx.result import RLMResult
from rlmx.rlm import RLM
from rlmx.usage import ModelUsage, RequestUsage, RunUsage

__version__ = "0.1.0"

__all__ = [
    "RLM",
    "ConfigError",
    "ContextError",
    "LimitExceeded",
    "Limits",
    "ModelAPIError",
    "ModelConnectionError",
    "ModelError",
    "ModelUsage",
    "RLMError",
    "RLMResult",
    "RequestUsage",
    "RunUsage",
    "SandboxError",
    "UserError",
    "__version__",
]
