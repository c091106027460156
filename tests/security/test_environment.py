"""The host's environment (API keys, tokens) and other processes' ``/proc`` entries.

``host_secrets`` puts secrets in this (the host) process's environment before the
sandbox starts; none may appear in any field of any result.
"""

from __future__ import annotations

import json
import os

from rlmx.sandbox import IsolatedSandbox
from tests.security._helpers import (
    EACCES,
    ENOENT,
    Opener,
    attempt,
    blocked,
    has_namespaces,
    run,
    texts,
)

WORKER_ENV_NAMES = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE"}


async def _secret_sandbox(open_sandbox: Opener, host_secrets: list[str]) -> IsolatedSandbox:
    for secret in host_secrets:
        assert secret in os.environ.values()  # the host really has them
    return await open_sandbox()


async def test_os_environ_has_no_host_secrets(
    open_sandbox: Opener, host_secrets: list[str]
) -> None:
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    r = await run(sandbox, "import os, json\nprint(json.dumps(dict(os.environ)))")
    assert r.error is None
    for secret in host_secrets:
        assert secret not in texts(r)
    assert "OPENAI_API_KEY" not in r.stdout
    assert "RLMX_TEST_SECRET" not in r.stdout
    assert set(json.loads(r.stdout)) <= WORKER_ENV_NAMES  # never eval() sandbox output


async def test_getenv_of_known_secret_names(open_sandbox: Opener, host_secrets: list[str]) -> None:
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    code = "import os\nprint([os.getenv(k) for k in ('OPENAI_API_KEY', 'RLMX_TEST_SECRET')])"
    r = await run(sandbox, code)
    assert r.stdout == "[None, None]\n"


async def test_c_level_environ_has_no_host_secrets(
    open_sandbox: Opener, host_secrets: list[str]
) -> None:
    """The process's own ``environ`` array (what C code and ``getenv(3)`` see)."""
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    code = (
        "import ctypes, json\n"
        "envp = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), 'environ')\n"
        "entries = []\n"
        "while envp[len(entries)]:\n"
        "    entries.append(envp[len(entries)].decode())\n"
        "print(json.dumps(sorted(e.split('=', 1)[0] for e in entries)))\n"
        "print(entries)"
    )
    r = await run(sandbox, code)
    assert r.error is None
    names = json.loads(r.stdout.splitlines()[0])
    assert set(names) <= WORKER_ENV_NAMES
    for secret in host_secrets:
        assert secret not in texts(r)


async def test_proc_self_environ(open_sandbox: Opener, host_secrets: list[str]) -> None:
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    code = attempt("data = open('/proc/self/environ', 'rb').read()", then="print(data)")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EACCES)  # Landlock grants nothing under /proc


async def test_proc_1_environ(open_sandbox: Opener, host_secrets: list[str]) -> None:
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    code = attempt("data = open('/proc/1/environ', 'rb').read()", then="print(data)")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EACCES)
    for secret in host_secrets:
        assert secret not in texts(r)


async def test_proc_parent_environ(open_sandbox: Opener, host_secrets: list[str]) -> None:
    """The worker's parent: bubblewrap inside namespaces, the host process without."""
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    code = attempt("data = open(f'/proc/{os.getppid()}/environ', 'rb').read()", then="print(data)")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EACCES)
    for secret in host_secrets:
        assert secret not in texts(r)


async def test_proc_host_pid_environ(open_sandbox: Opener, host_secrets: list[str]) -> None:
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    path = f"/proc/{os.getpid()}/environ"
    r = await run(sandbox, attempt(f"data = open({path!r}, 'rb').read()", then="print(data)"))
    # In its own pid namespace the host's pid does not exist; without, Landlock refuses.
    assert r.stdout == blocked(ENOENT if has_namespaces(sandbox) else EACCES)
    for secret in host_secrets:
        assert secret not in texts(r)


async def test_proc_host_pid_mem(open_sandbox: Opener, host_secrets: list[str]) -> None:
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    path = f"/proc/{os.getpid()}/mem"
    r = await run(sandbox, attempt(f"f = open({path!r}, 'rb')"))
    assert r.stdout == blocked(ENOENT if has_namespaces(sandbox) else EACCES)


async def test_proc_host_pid_cmdline_and_fds(open_sandbox: Opener, host_secrets: list[str]) -> None:
    sandbox = await _secret_sandbox(open_sandbox, host_secrets)
    code = attempt(f"names = os.listdir('/proc/{os.getpid()}/fd')", then="print(names)")
    r = await run(sandbox, code)
    assert r.stdout == blocked(ENOENT if has_namespaces(sandbox) else EACCES)


async def test_list_proc(open_sandbox: Opener) -> None:
    sandbox = await open_sandbox()
    r = await run(sandbox, attempt("names = os.listdir('/proc')", then="print(names)"))
    assert r.stdout == blocked(EACCES)


async def test_read_sys(open_sandbox: Opener) -> None:
    sandbox = await open_sandbox()
    r = await run(sandbox, attempt("names = os.listdir('/sys')", then="print(names)"))
    # bubblewrap mounts no /sys at all.
    assert r.stdout == blocked(ENOENT if has_namespaces(sandbox) else EACCES)


async def test_worker_sees_its_own_environment_only(open_sandbox: Opener) -> None:
    """The control: the worker's environment is the fixed one (HOME and TMPDIR: scratch)."""
    sandbox = await open_sandbox()
    r = await run(
        sandbox, "import os\nprint(os.environ['HOME'] == os.getcwd() == os.environ['TMPDIR'])"
    )
    assert r.stdout == "True\n"
