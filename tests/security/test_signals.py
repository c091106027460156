"""Signals out of the sandbox: to its parent, to the host, to anyone, to another sandbox.

The host (this test process) catches SIGTERM/SIGINT/SIGHUP through ``host_signals`` so a
signal that got through is counted instead of ending the run; ``victim`` is an innocent
host process that must still be alive afterwards.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess

import pytest

from rlmx.sandbox import IsolatedSandbox
from tests.security._helpers import (
    EPERM,
    ESRCH,
    LOOP_TIMEOUT_S,
    SHORT_GRACE_S,
    Opener,
    SignalLog,
    attempt,
    blocked,
    has_namespaces,
    process_alive,
    run,
)


async def _still_works(sandbox: IsolatedSandbox) -> None:
    r = await run(sandbox, "print('still here', kept)")
    assert r.stdout == "still here 1\n"
    assert not r.restarted


async def _settle() -> None:
    await asyncio.sleep(0.1)  # a delivered signal would have been handled by now


async def test_sigkill_to_parent(sandbox: IsolatedSandbox, host_signals: SignalLog) -> None:
    await run(sandbox, "kept = 1")
    r = await run(sandbox, attempt("os.kill(os.getppid(), 9)"))
    assert r.stdout == blocked(EPERM)
    await _settle()
    assert host_signals.received == []
    await _still_works(sandbox)


async def test_sigterm_to_host_pid(sandbox: IsolatedSandbox, host_signals: SignalLog) -> None:
    await run(sandbox, "kept = 1")
    r = await run(sandbox, "import signal\n" + attempt(f"os.kill({os.getpid()}, signal.SIGTERM)"))
    assert r.stdout == blocked(EPERM)
    await _settle()
    assert host_signals.received == []
    await _still_works(sandbox)


async def test_sigkill_to_host_process(
    sandbox: IsolatedSandbox, victim: subprocess.Popen[bytes]
) -> None:
    await run(sandbox, "kept = 1")
    r = await run(sandbox, attempt(f"os.kill({victim.pid}, 9)"))
    assert r.stdout == blocked(EPERM)
    await _settle()
    assert victim.poll() is None
    await _still_works(sandbox)


async def test_sigkill_to_everyone(
    sandbox: IsolatedSandbox, victim: subprocess.Popen[bytes], host_signals: SignalLog
) -> None:
    await run(sandbox, "kept = 1")
    r = await run(sandbox, attempt("os.kill(-1, 9)"))
    assert r.stdout == blocked(EPERM)
    await _settle()
    assert victim.poll() is None
    assert host_signals.received == []
    await _still_works(sandbox)


async def test_killpg_own_group(sandbox: IsolatedSandbox) -> None:
    await run(sandbox, "kept = 1")
    r = await run(sandbox, attempt("os.killpg(os.getpgid(0), 9)"))
    assert r.stdout == blocked(EPERM)
    await _still_works(sandbox)


async def test_killpg_host_group(sandbox: IsolatedSandbox, host_signals: SignalLog) -> None:
    await run(sandbox, "kept = 1")
    pgid = os.getpgid(0)
    r = await run(sandbox, "import signal\n" + attempt(f"os.killpg({pgid}, signal.SIGTERM)"))
    assert r.stdout == blocked(EPERM)
    await _settle()
    assert host_signals.received == []
    await _still_works(sandbox)


async def test_killpg_victim_group(
    sandbox: IsolatedSandbox, victim: subprocess.Popen[bytes]
) -> None:
    await run(sandbox, "kept = 1")
    r = await run(sandbox, attempt(f"os.killpg({os.getpgid(victim.pid)}, 9)"))
    assert r.stdout == blocked(EPERM)
    await _settle()
    assert victim.poll() is None


async def test_pidfd_signal_to_parent(sandbox: IsolatedSandbox) -> None:
    await run(sandbox, "kept = 1")
    code = "import signal\n" + attempt(
        "fd = os.pidfd_open(os.getppid())\nsignal.pidfd_send_signal(fd, 9)"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    await _still_works(sandbox)


async def test_sigio_redirected_to_host_process(
    sandbox: IsolatedSandbox, victim: subprocess.Popen[bytes]
) -> None:
    """F_SETOWN + F_SETSIG make the kernel itself send a signal of our choice to another
    process whenever a file descriptor becomes ready — a ``kill`` seccomp never sees."""
    code = (
        "import os, fcntl, signal\n"
        "r, w = os.pipe()\n"
        "try:\n"
        f"    fcntl.fcntl(r, fcntl.F_SETOWN, {victim.pid})\n"
        "    fcntl.fcntl(r, 10, signal.SIGKILL)  # F_SETSIG\n"
        "    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)\n"
        "    os.write(w, b'x')\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc.errno)\n"
        "else:\n"
        "    print('armed')\n"
    )
    r = await run(sandbox, code)
    # In its own pid namespace the victim's pid does not exist (ESRCH); without one the
    # owner is set, but Landlock's signal scope stops the delivery.
    assert r.stdout in {"BLOCKED ProcessLookupError 3\n", "armed\n"}
    await _settle()
    assert victim.poll() is None


async def test_signal_to_another_sandbox(open_sandbox: Opener) -> None:
    first = await open_sandbox()
    second = await open_sandbox()
    await run(first, "kept = 1")
    target = first.worker_pid
    assert target is not None
    r = await run(second, attempt(f"os.kill({target}, 9)"))
    assert r.stdout == blocked(EPERM)
    await _settle()
    assert process_alive(target)
    await _still_works(first)


_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}.get(platform.machine(), 251)


@pytest.mark.parametrize(
    "call",
    [
        "os.setpriority(os.PRIO_PROCESS, VICTIM, 19)",
        "os.sched_setaffinity(VICTIM, {0})",
        "os.sched_setscheduler(VICTIM, os.SCHED_IDLE, os.sched_param(0))",
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"if libc.syscall({_IOPRIO_SET}, 1, VICTIM, 3 << 13) != 0:  # ioprio_set: idle class\n"
        "    raise OSError(ctypes.get_errno(), 'ioprio_set')",
    ],
    ids=["renice", "pin-to-one-cpu", "sched-idle", "io-idle"],
)
async def test_starve_a_host_process(
    sandbox: IsolatedSandbox, victim: subprocess.Popen[bytes], call: str
) -> None:
    """Scheduling another process (nice, CPU affinity, policy, I/O class) is no signal:
    Landlock's signal scope and the kill filter do not see it."""
    affinity = os.sched_getaffinity(victim.pid)
    r = await run(sandbox, f"VICTIM = {victim.pid}\n" + attempt(call))
    # Absent from the worker's pid namespace; refused by the kernel without one.
    assert r.stdout == blocked(ESRCH if has_namespaces(sandbox) else EPERM)
    assert os.getpriority(os.PRIO_PROCESS, victim.pid) == 0
    assert os.sched_getaffinity(victim.pid) == affinity
    assert os.sched_getscheduler(victim.pid) == os.SCHED_OTHER


async def test_sigkill_to_itself_only_restarts_the_worker(sandbox: IsolatedSandbox) -> None:
    """Signals to its own pid are allowed: the worker can only kill itself, and the host
    replaces it."""
    await run(sandbox, "kept = 1")
    r = await run(sandbox, "import os\nos.kill(os.getpid(), 9)")
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert r.error is not None
    assert "SandboxCrash: the REPL process was killed by SIGKILL" in r.error
    r = await run(sandbox, "print('fresh', 'kept' in globals(), context[:6])")
    assert r.stdout == "fresh False public\n"


async def test_sigstop_to_itself_cannot_stop_the_host_clock(
    open_sandbox: Opener, host_signals: SignalLog
) -> None:
    """SIGSTOP to itself (allowed) freezes only the worker: the host's clock still ends
    the cell by killing it."""
    sandbox = await open_sandbox(cell_timeout_s=LOOP_TIMEOUT_S, hard_kill_grace_s=SHORT_GRACE_S)
    await run(sandbox, "kept = 1")
    r = await run(sandbox, "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)")
    assert r.timed_out
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert host_signals.received == []
    r = await run(sandbox, "print('fresh')")
    assert r.stdout == "fresh\n"
