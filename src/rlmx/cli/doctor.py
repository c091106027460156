"""``rlmx doctor``: what this machine offers — sandboxes and configured providers."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

from rlmx.cli import EXIT_OK

__all__ = ["add_parser", "handle", "report"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="report sandboxes and configured providers")
    p.set_defaults(handler=handle)


def report() -> list[str]:
    from rlmx import __version__
    from rlmx.models import known_providers
    from rlmx.models.openai import PRESETS
    from rlmx.sandbox import available_sandboxes

    lines = [
        f"rlmx {__version__} on Python {platform.python_version()} ({platform.system()})",
        "",
        "Sandboxes:",
    ]
    kinds = available_sandboxes()
    lines.append(
        "  local     available — UNSAFE: model code runs in this process (trusted code only)"
        if "local" in kinds
        else "  local     missing"
    )
    if "isolated" in kinds:
        lines += _isolation_lines()
    lines += ["", "Providers (API keys are never shown):"]
    for name in known_providers():
        preset = PRESETS.get(name)
        if name in _NATIVE:
            lines.append(f"  {name:<16} {_native_state(name)}")
            continue
        if preset is None:
            lines.append(f"  {name:<16} registered")
            continue
        if preset.key_env is None:
            state = f"no key needed (default {preset.base_url})"
        elif os.environ.get(preset.key_env):
            state = f"{preset.key_env} is set"
        elif preset.key_required:
            state = f"{preset.key_env} is not set"
        else:
            state = f"no key needed (default {preset.base_url})"
        lines.append(f"  {name:<16} {state}")
    for var in ("RLMX_MODEL", "RLMX_SUB_MODEL"):
        lines.append(f"{var}={os.environ.get(var, '(not set)')}")
    from rlmx.models.cache import default_cache_path

    lines.append(f"Response cache (--cache): {default_cache_path()}")
    return lines


# provider -> (import name, pip extra, key variables)
_NATIVE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "anthropic": ("anthropic", "anthropic", ("ANTHROPIC_API_KEY",)),
    "gemini": ("google.genai", "gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY")),
    "llamacpp": ("llama_cpp", "llamacpp", ()),
}


def _native_state(name: str) -> str:
    import importlib.util

    module, extra, key_vars = _NATIVE[name]
    try:
        installed = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        return f'not installed: pip install "rlmx[{extra}]"'
    if not key_vars:
        return "installed (embedded: a GGUF file path, no key)"
    found = next((var for var in key_vars if os.environ.get(var)), None)
    if found:
        return f"installed, {found} is set"
    return f"installed, {' or '.join(key_vars)} is not set"


def _isolation_lines() -> list[str]:
    from rlmx.sandbox._spawn import probe

    found = probe()
    layers = found.available_layers
    strong = {"namespaces", "landlock", "seccomp"} & set(layers)
    verdict = "available" if strong else "WEAK — only rlimits: model code may read your files"
    lines = [f"  isolated  {verdict} (default); layers: {', '.join(layers)}"]
    lines.append(
        f"    namespaces (bubblewrap): {'yes, ' + found.bwrap if found.bwrap else 'no — '}"
        f"{found.bwrap_problem or ''}"
    )
    landlock = (
        f"yes, ABI {found.landlock_abi}"
        + (" (filesystem + TCP)" if found.landlock_abi >= 4 else " (filesystem only)")
        if found.landlock_abi
        else "no — not in this kernel"
    )
    lines.append(f"    landlock: {landlock}")
    lines.append(
        f"    seccomp: {'yes' if found.seccomp_problem is None else 'no — '}"
        f"{found.seccomp_problem or ''}"
    )
    lines.append("    rlimits: yes (memory, CPU, files, processes, no core dumps)")
    return lines


def handle(args: argparse.Namespace) -> int:
    sys.stdout.write("\n".join(report()) + "\n")
    return EXIT_OK
