"""New processes and programs, and raw system calls made through ``ctypes``.

Each payload would create ``marker`` in scratch if it ran a program; the sandbox checks
for it afterwards, so "no program ran" is observed, not assumed.
"""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from rlmx.sandbox import IsolatedSandbox
from tests.sandbox.contract import FakeHandler
from tests.security._helpers import (
    EPERM,
    LOOP_TIMEOUT_S,
    SHORT_GRACE_S,
    Opener,
    attempt,
    blocked,
    run,
    start_sandbox,
)

MARKER = "print('marker' in os.listdir('.'))"


async def _no_marker(sandbox: IsolatedSandbox) -> None:
    r = await run(sandbox, "import os\n" + MARKER)
    assert r.stdout == "False\n"


async def test_subprocess_run(sandbox: IsolatedSandbox) -> None:
    code = "import subprocess\n" + attempt("subprocess.run(['/usr/bin/touch', 'marker'])")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    await _no_marker(sandbox)


async def test_subprocess_shell(sandbox: IsolatedSandbox) -> None:
    code = "import subprocess\n" + attempt(
        "subprocess.check_output('touch marker; cat /etc/passwd', shell=True)"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    await _no_marker(sandbox)


async def test_os_system(sandbox: IsolatedSandbox) -> None:
    """``system(3)`` cannot start the shell: the exit status is 127, nothing ran."""
    code = "import os\nstatus = os.system('touch marker')\nprint(os.waitstatus_to_exitcode(status))"
    r = await run(sandbox, code)
    assert r.stdout == "127\n"
    await _no_marker(sandbox)


async def test_os_popen(sandbox: IsolatedSandbox) -> None:
    r = await run(sandbox, attempt("os.popen('touch marker; id').read()"))
    assert r.stdout == blocked(EPERM)
    await _no_marker(sandbox)


async def test_os_fork(sandbox: IsolatedSandbox) -> None:
    code = attempt(
        "pid = os.fork()\nif pid == 0:\n    open('marker', 'w').close()\n    os._exit(0)"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    await _no_marker(sandbox)


async def test_os_posix_spawn(sandbox: IsolatedSandbox) -> None:
    code = attempt("os.posix_spawn('/usr/bin/touch', ['touch', 'marker'], {})")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    await _no_marker(sandbox)


async def test_os_spawnv(sandbox: IsolatedSandbox) -> None:
    code = attempt("os.spawnv(os.P_WAIT, '/usr/bin/touch', ['touch', 'marker'])")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    await _no_marker(sandbox)


async def test_pty_spawn(sandbox: IsolatedSandbox) -> None:
    """No pty (``/dev/ptmx`` is out of reach) and no fork behind it."""
    code = "import os, pty\ntry:\n    pty.spawn(['/usr/bin/touch', 'marker'])\n"
    code += "except OSError as exc:\n    print('BLOCKED', type(exc).__name__, exc)\n"
    r = await run(sandbox, code)
    assert r.stdout == "BLOCKED OSError out of pty devices\n"
    await _no_marker(sandbox)


async def test_os_execv_replaces_nothing(sandbox: IsolatedSandbox) -> None:
    """``execv`` would replace the worker with another program; it fails and the same
    REPL carries on (its variables intact)."""
    await run(sandbox, "kept = 'same process'")
    code = attempt("os.execv('/usr/bin/touch', ['touch', 'marker'])", then="print('replaced')")
    r = await run(sandbox, code + "print(kept)")
    assert r.stdout == blocked(EPERM) + "same process\n"
    assert not r.restarted
    await _no_marker(sandbox)


async def test_os_execve_of_python(sandbox: IsolatedSandbox) -> None:
    code = attempt("import sys\nos.execve(sys.executable, [sys.executable, '-c', 'pass'], {})")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)


async def test_multiprocessing_fork(sandbox: IsolatedSandbox) -> None:
    code = "import multiprocessing\n" + attempt(
        "ctx = multiprocessing.get_context('fork')\n"
        "p = ctx.Process(target=open, args=('marker', 'w'))\n"
        "p.start()\np.join()"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    await _no_marker(sandbox)


async def test_multiprocessing_spawn(sandbox: IsolatedSandbox) -> None:
    code = "import multiprocessing\n" + attempt(
        "ctx = multiprocessing.get_context('spawn')\n"
        "p = ctx.Process(target=print)\n"
        "p.start()\np.join()"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)


@pytest.mark.parametrize("func", ["fork", "vfork"])
async def test_libc_fork_through_ctypes(sandbox: IsolatedSandbox, func: str) -> None:
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"print(libc.{func}(), ctypes.get_errno())"
    )
    r = await run(sandbox, code)
    assert r.stdout == "-1 1\n"


# ---------------------------------------------------------------- raw system calls

# name: (x86_64 number, aarch64 number, arguments as Python source). The arguments are
# chosen so that a call the filter let through would fail harmlessly with another errno,
# or succeed harmlessly (nonexistent paths, invalid flags, signal 0): EPERM (errno 1) is
# the answer of the seccomp filter (or, for privileged calls, of the capabilities the
# worker no longer has) — never a call that did something.
_SYSCALLS: dict[str, tuple[int | None, int | None, str]] = {
    "fork": (57, None, ""),
    "vfork": (58, None, ""),
    "clone-process": (56, 220, "17, 0, 0, 0, 0"),  # SIGCHLD only: a new process
    "clone-newuser-thread-less": (56, 220, "0x10000000 | 17, 0, 0, 0, 0"),
    "execve": (59, 221, "b'/usr/bin/touch', 0, 0"),
    "execveat": (322, 281, "-100, b'/usr/bin/touch', 0, 0, 0"),
    "socket": (41, 198, "2, 1, 0"),
    "socketpair": (53, 199, "1, 1, 0, 0"),
    "ptrace-peek-parent": (101, 117, "2, os.getppid(), 0, 0"),
    "process_vm_readv-parent": (310, 270, "os.getppid(), 0, 0, 0, 0, 0"),
    "pidfd_open-parent": (434, 434, "os.getppid(), 0"),
    "kill-parent": (62, 129, "os.getppid(), 0"),
    "kill-everyone": (62, 129, "-1, 0"),
    "tgkill-parent": (234, 131, "os.getppid(), os.getppid(), 0"),
    "rt_sigqueueinfo-parent": (129, 138, "os.getppid(), 9, 0"),
    "unshare-user": (272, 97, "0x10000000"),
    "setns": (308, 268, "0, 0"),
    "mount": (165, 40, "b'none', b'/nonexistent-rlmx', b'tmpfs', 0, 0"),
    "umount2": (166, 39, "b'/nonexistent-rlmx', 2"),
    "chroot": (161, 51, "b'.'"),
    "pivot_root": (155, 41, "b'/nonexistent-rlmx', b'/nonexistent-rlmx'"),
    "bpf": (321, 280, "0, 0, 0"),
    "io_uring_setup": (425, 425, "1, 0"),
    "userfaultfd": (323, 282, "0"),
    "perf_event_open": (298, 241, "0, 0, -1, -1, 0"),
    "keyctl": (250, 219, "0, 0"),
    "add_key": (248, 217, "b'user', b'k', 0, 0, -2"),
    "finit_module": (313, 273, "-1, b'', 0"),
    "delete_module": (176, 106, "b'nonexistent', 0"),
    "kexec_load": (246, 104, "0, 0, 0, 0xFFFF0000"),  # invalid flags
    "reboot-bad-magic": (169, 142, "0, 0, 0, 0"),
    "swapoff": (168, 225, "b'/nonexistent'"),
    "setuid-root": (105, 146, "0"),
    "setresuid": (117, 147, "0, 0, 0"),
    "capset": (126, 91, "0, 0"),
    "mknod": (133, None, "b'dev', 0o20666, 0x0103"),
    "mknodat": (259, 33, "-100, b'dev', 0o20666, 0x0103"),
    "open_by_handle_at": (304, 265, "-100, 0, 0"),
    "setrlimit-raise": (160, None, "9, 0"),  # RLIMIT_AS from a NULL pointer
    "prlimit64-set": (302, 261, "0, 9, 1, 0"),  # a new limit at address 1
    "settimeofday": (164, 170, "0, 0"),
    "sethostname": (170, 161, "b'x', -1"),  # an invalid length
    "syslog": (103, 116, "3, 0, 0"),
    "personality": (135, 92, "0x0040000"),  # ADDR_NO_RANDOMIZE
    "iopl": (172, None, "0"),
}

_ARCH = {"x86_64": 0, "aarch64": 1}.get(platform.machine())


def _syscall_cases() -> list[Any]:
    cases = []
    for name, (x86, arm, args) in _SYSCALLS.items():
        number = None if _ARCH is None else (x86, arm)[_ARCH]
        marks = [pytest.mark.skipif(number is None, reason=f"no {name} on {platform.machine()}")]
        cases.append(pytest.param(number or 0, args, id=name, marks=marks))
    return cases


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_sandbox() -> AsyncIterator[IsolatedSandbox]:
    """One sandbox for the whole table: every call is refused, so none changes it (and
    each test checks it still answers)."""
    sandbox = await start_sandbox()
    yield sandbox
    await sandbox.aclose()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("number", "args"), _syscall_cases())
async def test_raw_syscall_denied(shared_sandbox: IsolatedSandbox, number: int, args: str) -> None:
    sandbox = shared_sandbox
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall.restype = ctypes.c_long\n"
        f"args = [{args}]\n"
        "cargs = [a if isinstance(a, bytes) else ctypes.c_long(a) for a in args]\n"
        f"result = libc.syscall(ctypes.c_long({number}), *cargs)\n"
        "print(result, ctypes.get_errno())"
    )
    r = await run(sandbox, code)
    assert r.stdout == "-1 1\n", r.error
    r = await run(sandbox, "print('still here')")
    assert r.stdout == "still here\n"
    assert not r.restarted


async def test_clone3_reports_enosys(sandbox: IsolatedSandbox) -> None:
    """clone3 carries its flags in memory, out of the filter's reach: refused outright
    (ENOSYS, so glibc falls back to the filtered ``clone``)."""
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall.restype = ctypes.c_long\n"
        "print(libc.syscall(ctypes.c_long(435), ctypes.c_long(0), ctypes.c_long(0)), "
        "ctypes.get_errno())"
    )
    r = await run(sandbox, code)
    assert r.stdout == "-1 38\n"


async def test_threads_still_work(sandbox: IsolatedSandbox) -> None:
    """The control for the clone rule: threads (clone with CLONE_THREAD) are allowed."""
    code = (
        "import threading\nout = []\n"
        "t = threading.Thread(target=out.append, args=('from a thread',))\n"
        "t.start(); t.join(); print(out[0])"
    )
    r = await run(sandbox, code)
    assert r.stdout == "from a thread\n"


# ---------------------------------------------------------------- foreign ABIs (x86_64)

_X86_ONLY = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 ABIs")

# The socket syscall through the x32 ABI (number | 0x40000000) and through the i386 ABI
# (``int 0x80`` with eax=359, from a small piece of machine code).
_FOREIGN_ABI = {
    "x32": (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall.restype = ctypes.c_long\n"
        "print(libc.syscall(ctypes.c_long(0x40000000 | 41), ctypes.c_long(2), "
        "ctypes.c_long(1), ctypes.c_long(0)), ctypes.get_errno())"
    ),
    "i386-int80": (
        "import ctypes, mmap\n"
        "code = bytes.fromhex('53b867010000bb02000000b90100000031d2cd805bc3')\n"
        "m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "m.write(code)\n"
        "f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\n"
        "print('socket fd', f())"
    ),
}


@_X86_ONLY
@pytest.mark.parametrize("abi", list(_FOREIGN_ABI))
async def test_socket_through_foreign_abi(
    open_sandbox: Opener, handler: FakeHandler, abi: str
) -> None:
    """seccomp's filter is per ABI: a foreign one is killed, never let through."""
    sandbox = await open_sandbox(
        handler=handler, cell_timeout_s=LOOP_TIMEOUT_S, hard_kill_grace_s=SHORT_GRACE_S
    )
    await run(sandbox, "kept = 1")
    r = await run(sandbox, _FOREIGN_ABI[abi])
    assert "socket fd" not in r.stdout
    assert r.restarted
    assert r.lost_variables == ("kept",)
    assert r.error is not None
    assert "killed" in r.error
    r = await run(sandbox, "print('fresh', 'kept' in globals())")
    assert r.stdout == "fresh False\n"
