"""The classic Python escapes. They are NOT blocked — by design, the worker leaves Python
whole — so each test shows what the escape reaches and that the kernel still stops it:
``os`` found through ``re``, builtins through ``__globals__``, the worker's own frames and
objects, ``Popen`` through ``object.__subclasses__()``, the confinement code itself.
"""

from __future__ import annotations

import os

from rlmx.sandbox import IsolatedSandbox
from tests.security._helpers import (
    EPERM,
    Opener,
    Server,
    attempt,
    blocked,
    hidden,
    run,
    texts,
)


async def test_os_through_re_enum_cannot_read_shadow(sandbox: IsolatedSandbox) -> None:
    code = (
        "import re\n"
        "o = re.enum.sys.modules['os']\n"
        "try:\n"
        "    fd = o.open('/etc/shadow', o.O_RDONLY)\n"
        "    print(o.read(fd, 4096))\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc.errno)\n"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(hidden(sandbox, "/etc/shadow"))
    assert "root:" not in texts(r)


async def test_socket_through_re_enum_cannot_connect(
    sandbox: IsolatedSandbox, tcp_server: Server
) -> None:
    code = (
        "import re\n"
        "imp = re.enum.sys.modules['builtins'].__import__\n"
        "sock = imp('socket')\n"
        "try:\n"
        f"    sock.create_connection({tcp_server.address!r}, timeout=2)\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc.errno)\n"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    assert await tcp_server.settled_accepts() == 0


async def test_builtins_through_lambda_globals(sandbox: IsolatedSandbox) -> None:
    code = (
        "imp = (lambda: 0).__globals__['__builtins__']['__import__']\n"
        "try:\n"
        "    imp('subprocess').run(['/usr/bin/id'])\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc.errno)\n"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)


async def test_popen_through_object_subclasses(sandbox: IsolatedSandbox) -> None:
    """``().__class__.__base__.__subclasses__()``: the import machinery, then ``Popen``."""
    code = (
        "subs = lambda: ().__class__.__base__.__subclasses__()\n"
        "imp = [c for c in subs() if c.__name__ == 'catch_warnings'][0]()._module"
        ".__builtins__['__import__']\n"
        "imp('subprocess')\n"
        "Popen = [c for c in subs() if c.__name__ == 'Popen'][0]\n"
        "print(Popen.__module__)\n"
        "try:\n"
        "    Popen(['/usr/bin/touch', 'marker'])\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc.errno)\n"
        "print('marker' in imp('os').listdir('.'))"
    )
    r = await run(sandbox, code)
    assert r.stdout == "subprocess\n" + blocked(EPERM) + "False\n"


async def test_str_format_on_globals_reaches_only_the_worker_environment(
    open_sandbox: Opener, host_secrets: list[str]
) -> None:
    sandbox = await open_sandbox()
    code = (
        "print('{0.__init__.__globals__[re].enum.sys.modules[os].environ}'"
        ".format(FINAL.__self__))\n"
        "print('{0.__globals__[__builtins__]}'.format(lambda: 0)[:40])"
    )
    r = await run(sandbox, code)
    assert r.error is None
    assert r.stdout.startswith("environ({'PATH': '/usr/bin:/bin', 'HOME': '/tmp/rlmx-sandbox-")
    for secret in host_secrets:
        assert secret not in texts(r)
    assert "OPENAI_API_KEY" not in r.stdout


async def test_frame_walking_finds_no_host_secret(
    open_sandbox: Opener, host_secrets: list[str]
) -> None:
    """``sys._getframe().f_back`` up to the worker's ``main``: its configuration and
    locals are the worker's own, holding nothing of the host."""
    sandbox = await open_sandbox()
    code = (
        "import sys\n"
        "names, dump = [], []\n"
        "f = sys._getframe()\n"
        "while f is not None:\n"
        "    names.append(f.f_code.co_name)\n"
        "    dump.append(repr(f.f_locals))\n"
        "    dump.append(repr(f.f_globals))\n"
        "    if f.f_code.co_name == 'main':\n"
        "        config = f.f_locals['config']\n"
        "    f = f.f_back\n"
        "print('main' in names, sorted(config['env']))\n"
        "print('\\n'.join(dump))"
    )
    r = await run(sandbox, code)
    assert r.error is None
    first = r.stdout.splitlines()[0]
    assert first == (
        "True ['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONUTF8', 'TMPDIR']"
    )
    for secret in host_secrets:
        assert secret not in texts(r)


async def test_generator_frame_walking_reaches_os_but_not_the_host(
    sandbox: IsolatedSandbox,
) -> None:
    """A generator's frame leads back to the worker's frames and their module globals;
    the ``os`` found there is as confined as any other."""
    code = (
        "def gen():\n"
        "    yield __import__('sys')._getframe().f_back\n"
        "frame = next(gen())\n"
        "while frame.f_code.co_name != 'serve':\n"
        "    frame = frame.f_back\n"
        "worker_os = frame.f_globals['os']\n"
        "try:\n"
        "    worker_os.kill(worker_os.getppid(), 9)\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc.errno)\n"
        "try:\n"
        "    worker_os.listdir('/')\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__, exc.errno)\n"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM) + "BLOCKED PermissionError 13\n"


async def test_reapplying_confinement_cannot_loosen_it(sandbox: IsolatedSandbox) -> None:
    """The worker's confinement code is right there (``sys.modules``): calling it again
    with permissive arguments only stacks more restrictions."""
    code = (
        "import sys, os\n"
        "confine = sys.modules['rlmx.sandbox._confine']\n"
        "try:\n"
        "    confine.apply_landlock(['/'], ['/'])\n"
        "    print('landlock re-applied')\n"
        "except OSError as exc:\n"
        "    print('landlock', type(exc).__name__)\n"
        "try:\n"
        "    confine.apply_rlimits({'memory_bytes': 2**50, 'processes': 10**6})\n"
        "except (OSError, ValueError) as exc:\n"
        "    print('rlimits', type(exc).__name__)\n"
        + attempt("open('/etc/passwd').read()")
        + attempt("os.fork()")
        + attempt("__import__('socket').socket()")
    )
    r = await run(sandbox, code)
    lines = r.stdout.splitlines()
    assert lines[0] in {"landlock re-applied", "landlock PermissionError"}
    assert lines[1] == "rlimits ValueError"
    assert lines[2:] == [
        blocked(hidden(sandbox, "/etc/passwd")).strip(),
        blocked(EPERM).strip(),
        blocked(EPERM).strip(),
    ]


async def test_host_process_memory_is_out_of_reach(sandbox: IsolatedSandbox) -> None:
    """No object of the host lives in the worker: ``gc`` finds no trace of this test's
    own locals (a separate process, not a restricted namespace)."""
    marker = "host-only-object-" + os.urandom(8).hex()
    code = (
        "import gc\n"
        "found = [o for o in gc.get_objects() if isinstance(o, str) and o.startswith("
        "'host-only-object-')]\n"
        "print(found)"
    )
    assert marker  # lives in this (host) process only
    r = await run(sandbox, code)
    assert r.stdout == "[]\n"
