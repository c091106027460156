"""Exhausting the machine: fork, thread and memory bombs, huge files, endless loops, crashes.

The host must stay responsive: bombs end in an error inside the cell, loops end at the
cell's time limit (interrupted, or the worker killed when stuck in C), crashes end in a
fresh worker — and the next cell always works.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from rlmx.sandbox import ExecResult, IsolatedSandbox
from tests.sandbox.contract import FakeHandler
from tests.security._helpers import (
    EPERM,
    HARD_KILL_GRACE_S,
    LOOP_TIMEOUT_S,
    SHORT_GRACE_S,
    Opener,
    attempt,
    blocked,
    process_alive,
    run,
    run_while_ticking,
    scratch_dir,
)

# A killed cell comes back after timeout + grace; allow for a loaded CI machine.
KILL_BOUND_S = LOOP_TIMEOUT_S + HARD_KILL_GRACE_S + 3.0


async def _loop_sandbox(
    open_sandbox: Opener, hard_kill_grace_s: float = HARD_KILL_GRACE_S
) -> IsolatedSandbox:
    sandbox = await open_sandbox(cell_timeout_s=LOOP_TIMEOUT_S, hard_kill_grace_s=hard_kill_grace_s)
    r = await run(sandbox, "kept = 'before'")
    assert r.error is None
    return sandbox


async def _timed(sandbox: IsolatedSandbox, code: str) -> tuple[ExecResult, float]:
    """Run a cell while a host task keeps ticking: the host's loop is never frozen."""
    r, elapsed, ticks = await run_while_ticking(sandbox, code, period=0.05)
    assert ticks >= int(elapsed / 0.05) // 4, "the host's event loop was starved"
    return r, elapsed


async def _interrupted_keeping_state(open_sandbox: Opener, code: str) -> None:
    sandbox = await _loop_sandbox(open_sandbox)
    r, elapsed = await _timed(sandbox, code)
    assert r.timed_out
    assert not r.restarted
    assert r.error == "TimeoutError: the cell ran past its time limit and was interrupted."
    assert LOOP_TIMEOUT_S <= elapsed < KILL_BOUND_S
    r = await run(sandbox, "print(kept)")
    assert r.stdout == "before\n"


async def _killed_and_replaced(open_sandbox: Opener, code: str) -> None:
    sandbox = await _loop_sandbox(open_sandbox, SHORT_GRACE_S)
    r, elapsed = await _timed(sandbox, code)
    assert r.timed_out
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert r.error is not None
    assert r.error.startswith(f"TimeoutError: the cell ran past cell_timeout_s={LOOP_TIMEOUT_S}")
    assert "so its process was killed" in r.error
    assert "Variables lost: kept." in r.error
    assert LOOP_TIMEOUT_S + SHORT_GRACE_S <= elapsed < KILL_BOUND_S
    r = await run(sandbox, "print('fresh', 'kept' in globals(), context[:6])")
    assert r.stdout == "fresh False public\n"
    assert not r.restarted


# ---------------------------------------------------------------- processes and threads


async def test_fork_bomb(sandbox: IsolatedSandbox) -> None:
    code = "n = 0\n" + attempt("while True:\n    os.fork()\n    n += 1") + "print(n)"
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM) + "0\n"


async def test_thread_bomb(open_sandbox: Opener) -> None:
    sandbox = await open_sandbox(memory_mb=1024)
    code = (
        "import threading\n"
        "stop = threading.Event()\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        threading.Thread(target=stop.wait, daemon=True).start()\n"
        "        n += 1\n"
        "except RuntimeError as exc:\n"
        "    print('BLOCKED', exc, n < 1000)\n"
    )
    r = await run(sandbox, code)
    assert r.stdout == "BLOCKED can't start new thread True\n"
    r = await run(sandbox, "stop.set()\nprint('alive')")
    assert r.stdout == "alive\n"
    assert not r.restarted


# ---------------------------------------------------------------- memory


async def test_memory_bomb_bytes(sandbox: IsolatedSandbox) -> None:
    await run(sandbox, "kept = 'before'")
    r = await run(sandbox, "b'x' * 10**12")
    assert r.error is not None
    assert r.error.endswith("MemoryError")
    assert not r.restarted
    r = await run(sandbox, "print(kept)")
    assert r.stdout == "before\n"


async def test_memory_bomb_bytearray(sandbox: IsolatedSandbox) -> None:
    r = await run(sandbox, "bytearray(10**12)")
    assert r.error is not None
    assert r.error.endswith("MemoryError")
    assert not r.restarted


async def test_memory_bomb_list_growth(open_sandbox: Opener) -> None:
    sandbox = await open_sandbox(memory_mb=512)
    await run(sandbox, "kept = 'before'")
    code = (
        "def grow():\n    hoard = []\n    while True:\n        hoard.append(bytes(10**7))\ngrow()"
    )
    r = await run(sandbox, code)
    assert r.error is not None
    assert r.error.endswith("MemoryError")
    assert "hoard.append(bytes(10**7))" in r.error
    assert not r.restarted
    r = await run(sandbox, "print(kept, len(bytes(10**7)))")  # memory is usable again
    assert r.stdout == "before 10000000\n"


async def test_memory_bomb_anonymous_mmap(sandbox: IsolatedSandbox) -> None:
    r = await run(sandbox, "import mmap\n" + attempt("m = mmap.mmap(-1, 2**40)"))
    assert r.stdout == blocked("OSError 12")  # ENOMEM: the address-space limit


async def test_cannot_raise_memory_limit(sandbox: IsolatedSandbox) -> None:
    code = (
        "import resource\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)\n"
        "except (ValueError, OSError) as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc)\n"
        "print(resource.getrlimit(resource.RLIMIT_AS)[1] < 2**40)"
    )
    r = await run(sandbox, code)
    assert r.stdout == "BLOCKED ValueError not allowed to raise maximum limit\nTrue\n"


async def test_file_size_limit(sandbox: IsolatedSandbox) -> None:
    """A sparse 2 GiB file: refused by the file-size limit at once (no disk used)."""
    code = attempt("f = open('huge', 'wb')\nf.seek(2**31)\nf.write(b'x')\nf.close()")
    r = await run(sandbox, code)
    assert r.stdout == blocked("OSError 27")  # EFBIG (SIGXFSZ is ignored by Python)
    r = await run(sandbox, "print('alive')")
    assert r.stdout == "alive\n"


async def test_flood_of_raw_stdout_stays_bounded(sandbox: IsolatedSandbox) -> None:
    """20 MB written straight to fd 1 (past the cell's capture) reach the host, which
    keeps only a bounded piece of them for its crash report."""
    code = (
        "import os, signal\n"
        "for _ in range(200):\n"
        "    os.write(1, b'z' * 100_000)\n"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    r, _elapsed = await _timed(sandbox, code)
    assert r.restarted
    assert r.error is not None
    assert r.error.startswith("SandboxCrash: the REPL process was killed by SIGKILL.")
    assert "zzzz" in r.error
    assert len(r.error) < 2000
    assert r.stdout == ""


# ---------------------------------------------------------------- endless loops


async def test_infinite_python_loop(open_sandbox: Opener) -> None:
    await _interrupted_keeping_state(open_sandbox, "while True:\n    pass")


async def test_sleep_forever(open_sandbox: Opener) -> None:
    await _interrupted_keeping_state(open_sandbox, "import time\ntime.sleep(10**6)")


async def test_catastrophic_regex_backtracking(open_sandbox: Opener) -> None:
    """Backtracking runs in C, but CPython's regex engine checks for signals: the
    timeout interrupts it and the REPL keeps its state."""
    await _interrupted_keeping_state(open_sandbox, "import re\nre.match('(a+)+$', 'a' * 40 + 'b')")


async def test_infinite_c_loop(open_sandbox: Opener) -> None:
    await _killed_and_replaced(open_sandbox, "sum(range(10**12))")


async def test_c_loop_in_ctypes_sleep(open_sandbox: Opener) -> None:
    """A blocking C call that retries on EINTR (``sleep(3)`` loops with ``nanosleep``)."""
    code = "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.sleep(1000)"
    # ``sleep(3)`` returns early on the signal, so the Python loop gets it back:
    await _interrupted_keeping_state(open_sandbox, code)


@pytest.mark.parametrize(
    "evasion",
    [
        "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)",
        "import signal\nsignal.setitimer(signal.ITIMER_REAL, 0)",
        "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})",
        "import signal\nsignal.signal(signal.SIGALRM, lambda *args: None)",
    ],
    ids=["ignore-sigalrm", "disarm-timer", "block-sigalrm", "no-op-handler"],
)
async def test_loop_that_disables_the_soft_timeout(open_sandbox: Opener, evasion: str) -> None:
    await _killed_and_replaced(open_sandbox, evasion + "\nwhile True:\n    pass")


async def test_loop_that_swallows_the_timeout(open_sandbox: Opener) -> None:
    code = (
        "n = 0\n"
        "while True:\n"
        "    try:\n"
        "        while True:\n"
        "            n += 1\n"
        "    except BaseException:\n"
        "        pass"
    )
    await _killed_and_replaced(open_sandbox, code)


async def test_sleep_that_swallows_the_timeout(open_sandbox: Opener) -> None:
    code = (
        "import time\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(100)\n"
        "    except BaseException:\n"
        "        pass"
    )
    await _killed_and_replaced(open_sandbox, code)


async def test_timeout_swallowed_in_finally(open_sandbox: Opener) -> None:
    code = "try:\n    while True:\n        pass\nfinally:\n    while True:\n        pass"
    await _killed_and_replaced(open_sandbox, code)


# ---------------------------------------------------------------- work that outlives its cell


async def test_background_thread_cpu_stops_the_worker(open_sandbox: Opener) -> None:
    """A thread left spinning after its cell would escape the cell's time limit: the
    worker is stopped, and the next cell runs in a fresh one, told why."""
    sandbox = await open_sandbox(cell_timeout_s=LOOP_TIMEOUT_S)
    code = (
        "import threading\n"
        "state = {'n': 0}\n"
        "def spin():\n"
        "    while True:\n"
        "        state['n'] += 1\n"
        "threading.Thread(target=spin, daemon=True).start()\n"
        "print('started')"
    )
    r = await run(sandbox, code)
    assert r.stdout == "started\n"
    assert not r.restarted
    pids = _worker_pids(await scratch_dir(sandbox))
    for _ in range(100):  # the worker notices within about a second of CPU
        if not any(process_alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    assert not any(process_alive(pid) for pid in pids), "model code still runs between cells"
    r = await run(sandbox, "print('fresh', 'state' in globals())")
    assert r.stdout == "fresh False\n"
    assert r.restarted
    assert "state" in r.lost_variables
    assert r.error is not None
    assert r.error.startswith(
        "Before this cell, the REPL process was stopped because threads started by an "
        "earlier cell kept working after that cell ended"
    )


async def test_background_sub_calls_are_refused(open_sandbox: Opener, handler: FakeHandler) -> None:
    """A thread calling ``llm_query`` after its cell ended would spend money between
    cells: refused, and the handler is not called again."""
    sandbox = await open_sandbox(handler=handler, cell_timeout_s=LOOP_TIMEOUT_S)
    code = (
        "import threading, time\n"
        "errors = []\n"
        "def ask():\n"
        "    time.sleep(0.1)  # the cell has returned by now\n"
        "    try:\n"
        "        while True:\n"
        "            llm_query('background')\n"
        "            time.sleep(0.02)\n"
        "    except RuntimeError as exc:\n"
        "        errors.append(str(exc))\n"
        "threading.Thread(target=ask, daemon=True).start()\n"
        "print('started')"
    )
    r = await run(sandbox, code)
    assert r.stdout == "started\n"
    await asyncio.sleep(0.5)
    assert handler.llm_calls == []
    r = await run(sandbox, "print(errors)")
    assert r.stdout == (
        "['sub-calls are only possible while a cell runs: a thread started by a cell must "
        "finish (be joined) within that cell']\n"
    )
    assert handler.llm_calls == []


# ---------------------------------------------------------------- crashes


async def test_segfault(sandbox: IsolatedSandbox) -> None:
    await run(sandbox, "kept = 'before'")
    r = await run(sandbox, "import ctypes\nctypes.string_at(0)")
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert r.error is not None
    assert r.error.startswith("SandboxCrash: the REPL process was killed by SIGSEGV.")
    r = await run(sandbox, "print('fresh', 'kept' in globals())")
    assert r.stdout == "fresh False\n"


async def test_os_exit(sandbox: IsolatedSandbox) -> None:
    await run(sandbox, "kept = 'before'")
    r = await run(sandbox, "import os\nos._exit(0)")
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert r.error is not None
    assert r.error.startswith("SandboxCrash: the REPL process exited with status 0.")
    r = await run(sandbox, "print('fresh')")
    assert r.stdout == "fresh\n"


# ---------------------------------------------------------------- nothing outlives the sandbox


def _worker_pids(scratch: Path) -> list[int]:
    """Host pids of every process whose working directory is this sandbox's scratch."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(scratch):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_no_process_outlives_the_sandbox(sandbox: IsolatedSandbox) -> None:
    """Even a worker that ignores every catchable signal, has cleared its parent-death
    signal and keeps threads busy is gone once the sandbox is closed."""
    code = (
        "import ctypes, signal, threading\n"
        "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG: none\n"
        "threading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=False).start()\n"
        "print('armed')"
    )
    r = await run(sandbox, code)
    assert r.stdout == "armed\n"
    pids = _worker_pids(await scratch_dir(sandbox))
    assert pids, "the worker should be visible from the host"
    await sandbox.aclose()
    for _ in range(50):
        if not any(process_alive(pid) for pid in pids):
            break
        await asyncio.sleep(0.05)
    assert not any(process_alive(pid) for pid in pids)
