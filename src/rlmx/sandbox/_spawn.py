"""How the host starts an isolated worker: which layers exist here, the command, the paths.

:func:`probe` finds out once per process what this machine offers (a working
``bwrap``, the Landlock ABI, seccomp) — ``rlmx doctor`` prints it. :func:`worker_command`
builds the command line: the interpreter with ``-I -S -B`` running ``_bootstrap.py``,
wrapped in bubblewrap when it works. The worker applies Landlock, rlimits and seccomp
to itself (``_confine``) once started.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlmx.sandbox import _confine

__all__ = [
    "DEVICES",
    "NOBODY",
    "IsolationProbe",
    "interpreter_paths",
    "probe",
    "worker_command",
    "worker_env",
    "worker_sys_path",
]

NOBODY = 65534
BOOTSTRAP = str(Path(__file__).with_name("_bootstrap.py"))
PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)

# System paths the interpreter and C extensions may need, read-only.
_SYSTEM_PATHS = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
)
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


def _python() -> str:
    return os.path.realpath(sys.executable)


def _prefixes() -> list[str]:
    found = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    found.add(str(Path(_python()).parent.parent))
    return sorted(os.path.realpath(p) for p in found)


def worker_sys_path() -> list[str]:
    """The host's import path minus anything outside the interpreter and its packages.

    Keeps the standard library and site-packages (so model code can import what is
    installed), drops the current directory, a project checkout or test folders.
    """
    prefixes = _prefixes()
    keep: list[str] = []
    for entry in sys.path:
        if not entry:
            continue
        real = os.path.realpath(entry)
        inside = any(real == p or real.startswith(p + os.sep) for p in prefixes)
        if (inside or real.endswith(("site-packages", "dist-packages"))) and real not in keep:
            keep.append(real)
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    if stdlib not in keep:
        keep.insert(0, stdlib)
    return keep


def interpreter_paths() -> list[str]:
    """Everything the worker must be able to read: system libraries, Python, rlmx."""
    paths = [p for p in _SYSTEM_PATHS if os.path.lexists(p)]
    for p in [*_prefixes(), *worker_sys_path(), PACKAGE_DIR]:
        if Path(p).exists() and not any(p == q or p.startswith(q + os.sep) for q in paths):
            paths.append(p)
    return paths


def worker_env(scratch: str) -> dict[str, str]:
    """The worker's whole environment: fixed values, nothing copied from the host."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "PYTHONUTF8": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _bwrap_args(*, scratch: str, context_dir: str) -> list[str]:
    args = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--hostname",
        "rlmx-sandbox",
    ]
    # The private /tmp first: paths bound later (an interpreter or a checkout that lives
    # under /tmp, the sandbox's own directories) are mounted on top of it, not hidden.
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in interpreter_paths():
        link = Path(path)
        if link.is_symlink() and link.parent == Path("/"):
            args += ["--symlink", str(link.readlink()), path]
        else:
            args += ["--ro-bind-try", path, path]
    args += ["--bind", scratch, scratch, "--ro-bind", context_dir, context_dir]
    for key, value in worker_env(scratch).items():
        args += ["--setenv", key, value]
    args += ["--chdir", scratch]
    return args


def worker_command(
    *, bwrap: str | None, scratch: str, context_dir: str, fds: tuple[int, int]
) -> list[str]:
    python = [_python(), "-I", "-S", "-B", BOOTSTRAP, str(fds[0]), str(fds[1])]
    if bwrap is None:
        return python
    return [bwrap, *_bwrap_args(scratch=scratch, context_dir=context_dir), "--", *python]


@dataclass(frozen=True, slots=True)
class IsolationProbe:
    """What this machine can do, found once per process."""

    platform: str
    bwrap: str | None
    """Path of a ``bwrap`` that works here (user namespaces allowed), else ``None``."""
    bwrap_problem: str | None
    landlock_abi: int
    seccomp_problem: str | None

    @property
    def available_layers(self) -> list[str]:
        layers = ["rlimits"]
        if self.bwrap:
            layers.insert(0, "namespaces")
        if self.landlock_abi:
            layers.insert(-1, "landlock")
        if self.seccomp_problem is None:
            layers.insert(-1, "seccomp")
        return layers

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "layers": self.available_layers,
            "bwrap": self.bwrap,
            "bwrap_problem": self.bwrap_problem,
            "landlock_abi": self.landlock_abi,
            "seccomp_problem": self.seccomp_problem,
        }


def _find_bwrap() -> tuple[str | None, str | None]:
    """A working bwrap, or why there is none. ``RLMX_BWRAP=0`` turns it off."""
    setting = os.environ.get("RLMX_BWRAP", "")
    if setting.lower() in {"0", "off", "no", "false"}:
        return None, "disabled by RLMX_BWRAP"
    path = setting or shutil.which("bwrap")
    if not path:
        return None, "bwrap is not installed (apt-get install bubblewrap)"
    scratch = context_dir = str(Path(BOOTSTRAP).resolve().parent)
    cmd = [path, *_bwrap_args(scratch=scratch, context_dir=context_dir), "--", _python()]
    try:
        done = subprocess.run(
            [*cmd, "-I", "-S", "-c", "pass"], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bwrap could not run: {exc}"
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:300]
        return None, f"bwrap fails here (user namespaces blocked?): {err}"
    return path, None


@functools.cache
def probe() -> IsolationProbe:
    if sys.platform.startswith("linux"):
        bwrap, bwrap_problem = _find_bwrap()
        abi = _confine.landlock_abi()
    else:
        bwrap, bwrap_problem, abi = None, "namespaces are Linux-only", 0
    return IsolationProbe(
        platform=sys.platform,
        bwrap=bwrap,
        bwrap_problem=bwrap_problem,
        landlock_abi=abi,
        seccomp_problem=_confine.seccomp_unavailable_reason(),
    )
