"""Local socket tables: real TCP and Unix connections held by a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rqdoctor.probes.sockets import LocalSockets, is_loopback, normal_ip, split_host_port

CONNECT = r"""
import socket, sys, time
family, where = sys.argv[1], sys.argv[2]
if family == "unix":
    s = socket.socket(socket.AF_UNIX); s.connect(where)
else:
    s = socket.create_connection(("127.0.0.1", int(where)))
print(s.getsockname()[1] if family == "tcp" else "", flush=True)
time.sleep(60)
"""


@pytest.fixture
def connect() -> Iterator:
    started: list[subprocess.Popen[str]] = []

    def run(family: str, where: str) -> tuple[int, str]:
        proc = subprocess.Popen([sys.executable, "-c", CONNECT, family, where], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        return proc.pid, proc.stdout.readline().strip()

    yield run
    for proc in started:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_tcp_owner_of_a_client_port(connect) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        pid, client_port = connect("tcp", str(port))
        accepted, _ = server.accept()
        try:
            sockets = LocalSockets()
            assert sockets.tcp_owners("localhost", int(client_port), {port}, None) == [pid]
            assert sockets.tcp_owners("127.0.0.1", int(client_port), {port}, None) == [pid]
            assert sockets.tcp_owners("127.0.0.1", int(client_port), {port + 1}, None) == []
            assert sockets.tcp_owners("127.0.0.1", int(client_port), {port}, "10.255.255.1") == []
        finally:
            accepted.close()


def test_unix_peer_owner_via_sock_diag(connect, tmp_path: Path) -> None:
    path = str(tmp_path / "srv.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        pid, _ = connect("unix", path)
        accepted, _ = server.accept()
        try:
            sockets = LocalSockets()
            if not sockets.unix:
                pytest.skip("sock_diag netlink is not available on this kernel")
            (owners,) = sockets.unix_client_owners({path}).values()
            assert owners == [pid]
            assert list(sockets.unix_client_owners({path}, server_pid=os.getpid()).values()) == [[pid]]
            assert sockets.unix_client_owners({path}, server_pid=pid) == {}
            assert sockets.unix_client_owners({path + ".other"}) == {}
        finally:
            accepted.close()


def test_split_host_port() -> None:
    assert split_host_port("localhost:37780") == ("localhost", 37780)
    assert split_host_port("localhost") == ("localhost", None)
    assert split_host_port("10.0.0.5:4242") == ("10.0.0.5", 4242)
    assert split_host_port("::1:4242") == ("::1", 4242)
    assert split_host_port("::1") == ("::1", None)
    assert split_host_port("[::1]:4242") == ("::1", 4242)


def test_address_normalisation() -> None:
    assert normal_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert normal_ip("[fe80::1%eth0]") == "fe80::1"
    assert all(is_loopback(h) for h in ("localhost", "127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1"))
    assert not is_loopback("10.0.0.1") and not is_loopback("db.example")
    sockets = LocalSockets()
    assert sockets.is_local("localhost") and sockets.is_local(socket.gethostname())
    assert not sockets.is_local("192.0.2.77")
