"""The confinement layers one by one, each applied to a fresh Python process.

The isolated sandbox applies them all at once inside its worker; here each layer runs
alone in a child process so a failure points at the layer, not at the sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlmx.sandbox import _confine
from rlmx.sandbox._spawn import interpreter_paths

needs_seccomp = pytest.mark.skipif(
    _confine.seccomp_unavailable_reason() is not None, reason="no seccomp here"
)
needs_landlock = pytest.mark.skipif(_confine.landlock_abi() == 0, reason="no Landlock here")


def run_confined(body: str) -> str:
    """Run ``body`` in a child Python and return its stdout (it must exit cleanly)."""
    code = "from rlmx.sandbox import _confine\n" + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_seccomp
def test_seccomp_denies_sockets_processes_and_foreign_signals() -> None:
    out = run_confined(
        """
        import os, socket, threading
        report = _confine.apply_seccomp()
        print(report["denied"] > 50)
        for name, call in [
            ("socket", lambda: socket.socket()),
            ("socketpair", lambda: socket.socketpair()),
            ("fork", os.fork),
            ("exec", lambda: os.execv("/bin/true", ["true"])),
            ("kill parent", lambda: os.kill(os.getppid(), 0)),
            ("kill all", lambda: os.kill(-1, 0)),
        ]:
            try:
                call()
                print(name, "allowed")
            except OSError as e:
                print(name, e.errno)
        t = threading.Thread(target=lambda: print("thread ran"))
        t.start(); t.join()
        os.kill(os.getpid(), 0)
        print("own pid ok")
        """
    )
    assert out.splitlines() == [
        "True",
        "socket 1",
        "socketpair 1",
        "fork 1",
        "exec 1",
        "kill parent 1",
        "kill all 1",
        "thread ran",
        "own pid ok",
    ]


@needs_landlock
def test_landlock_allows_only_listed_paths(tmp_path: Path) -> None:
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "f").write_text("readable")
    (tmp_path / "hidden").write_text("secret")
    out = run_confined(
        f"""
        import os, socket
        ro = {[*interpreter_paths(), str(tmp_path / "ro")]!r}
        report = _confine.apply_landlock(ro, [{str(tmp_path / "rw")!r}])
        print(report["abi"] >= 1)
        print(open({str(tmp_path / "ro" / "f")!r}).read())
        open({str(tmp_path / "rw" / "new")!r}, "w").write("ok")
        print("wrote scratch")
        for path in [{str(tmp_path / "hidden")!r}, "/etc/hostname"]:
            try:
                open(path).read()
                print("read", path)
            except PermissionError:
                print("denied")
        try:
            open({str(tmp_path / "ro" / "g")!r}, "w")
        except PermissionError:
            print("read-only")
        if report["network"]:
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", 9))
            except PermissionError:
                print("tcp denied")
        else:
            print("tcp denied")
        """
    )
    assert out.splitlines() == [
        "True",
        "readable",
        "wrote scratch",
        "denied",
        "denied",
        "read-only",
        "tcp denied",
    ]
    assert (tmp_path / "rw" / "new").read_text() == "ok"


def test_rlimits_are_lowered_for_good() -> None:
    out = run_confined(
        """
        import resource
        applied = _confine.apply_rlimits(
            {"memory_bytes": 2 * 1024**3, "open_files": 64, "core_bytes": 0, "unknown": 1}
        )
        print(sorted(applied))
        print(resource.getrlimit(resource.RLIMIT_NOFILE))
        try:
            bytearray(3 * 1024**3)
        except MemoryError:
            print("MemoryError")
        """
    )
    assert out.splitlines() == [
        "['core_bytes', 'memory_bytes', 'open_files']",
        "(64, 64)",
        "MemoryError",
    ]


@needs_seccomp
def test_without_capabilities_and_with_seccomp_limits_cannot_be_raised() -> None:
    out = run_confined(
        """
        import resource
        _confine.apply_rlimits({"open_files": 64})
        _confine.drop_capabilities()
        _confine.apply_seccomp()
        print(resource.getrlimit(resource.RLIMIT_NOFILE))
        for new in [(128, 128), (32, 32)]:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, new)
                print("changed")
            except (ValueError, OSError) as e:
                print(type(e).__name__)
        """
    )
    # Both fail with EPERM, which Python reports as ValueError. The kernel itself always
    # allows lowering a limit: the second refusal can only come from the filter.
    assert out.splitlines() == ["(64, 64)", "ValueError", "ValueError"]


def test_capabilities_are_dropped() -> None:
    out = run_confined(
        """
        held = _confine.drop_capabilities()
        print(held)
        print(open("/proc/self/status").read().split("CapEff:")[1].split()[0])
        """
    )
    held, effective = out.split()
    assert held == str(os.geteuid() == 0)
    assert int(effective, 16) == 0


def test_landlock_abi_is_a_version_number() -> None:
    assert _confine.landlock_abi() >= 0
    assert _confine._fs_rights(1) == (1 << 13) - 1
    assert _confine._fs_rights(5) & (1 << 15)
