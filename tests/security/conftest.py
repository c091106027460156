"""Fixtures of the attack suite: confined sandboxes, a victim process, live local servers."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from rlmx.sandbox import IsolatedSandbox, _spawn
from tests.sandbox.contract import FakeHandler
from tests.security._helpers import Opener, Server, SignalLog, start_sandbox

if not sys.platform.startswith("linux"):  # the kernel layers under test are Linux's
    collect_ignore_glob = ["test_*.py"]

SECRET_ENV = {
    "RLMX_TEST_SECRET": "rlmx-secret-" + uuid.uuid4().hex,
    "OPENAI_API_KEY": "sk-test-" + uuid.uuid4().hex,
}


@pytest.fixture
async def open_sandbox() -> AsyncIterator[Opener]:
    """Start isolated sandboxes (all layers required); every one is closed at teardown."""
    opened: list[IsolatedSandbox] = []

    async def factory(**options: Any) -> IsolatedSandbox:
        sandbox: IsolatedSandbox = await start_sandbox(**options)
        opened.append(sandbox)
        return sandbox

    yield factory
    for sandbox in opened:
        await sandbox.aclose()


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
async def sandbox(open_sandbox: Opener, handler: FakeHandler) -> IsolatedSandbox:
    """A sandbox with every layer this machine offers, and a recording sub-call handler."""
    return await open_sandbox(handler=handler)


@pytest.fixture(params=["namespaces", "landlock-only"])
def fs_mode(request: pytest.FixtureRequest) -> str:
    """The filesystem layer under test: bubblewrap's mounts (plus Landlock), or Landlock
    alone (what runs where user namespaces are blocked, e.g. Ubuntu 24.04, Docker)."""
    mode = str(request.param)
    if mode == "namespaces" and _spawn.probe().bwrap is None:
        pytest.skip(f"bubblewrap is unusable here: {_spawn.probe().bwrap_problem}")
    return mode


@pytest.fixture
async def fs_sandbox(open_sandbox: Opener, fs_mode: str) -> IsolatedSandbox:
    return await open_sandbox(use_bwrap=fs_mode == "namespaces")


@pytest.fixture
def host_secrets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Secrets in the host's environment (set before any sandbox starts)."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    return list(SECRET_ENV.values())


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """An innocent host process the sandbox tries to signal: it must outlive the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
async def host_signals() -> AsyncIterator[SignalLog]:
    """Catch SIGTERM/SIGINT/SIGHUP in the host (this test process) instead of dying of it."""
    loop = asyncio.get_running_loop()
    log = SignalLog()
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in watched:
        loop.add_signal_handler(signum, log.received.append, signum)
    yield log
    for signum in watched:
        loop.remove_signal_handler(signum)


@pytest.fixture
async def tcp_server() -> AsyncIterator[Server]:
    server = Server(("127.0.0.1", 0))
    start = await asyncio.start_server(server.on_connect, "127.0.0.1", 0)
    server.address = start.sockets[0].getsockname()[:2]
    async with start:
        yield server


@pytest.fixture
async def unix_server(tmp_path: Path) -> AsyncIterator[Server]:
    path = str(tmp_path / "host.sock")
    server = Server(path)
    start = await asyncio.start_unix_server(server.on_connect, path)
    async with start:
        yield server


@pytest.fixture
async def abstract_unix_server() -> AsyncIterator[Server]:
    name = "\0rlmx-security-" + uuid.uuid4().hex
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(name)
    sock.listen()
    server = Server(name)
    start = await asyncio.start_unix_server(server.on_connect, sock=sock)
    async with start:
        yield server


@pytest.fixture
def udp_server() -> Iterator[tuple[socket.socket, tuple[str, int]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock, sock.getsockname()[:2]
    sock.close()
