"""Local socket tables: which process holds the client end of a database connection.

TCP: psutil's table (read once), matched on the client's 4-tuple; or, for a few known processes,
``/proc/net/tcp{,6}`` read once (:func:`tcp_by_inode`) and joined to each one's descriptors
(:func:`socket_fds`), the way psutil does per process but without re-reading the table for each.
Unix sockets: the kernel's ``sock_diag`` netlink dump gives each socket's path and peer inode;
``/proc/<pid>/fd`` gives the owners. Everything is best effort: a table that cannot be read is simply empty.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
from dataclasses import dataclass
from functools import cached_property

import psutil

LOCALHOST_NAMES = {"localhost", "localhost.localdomain", "[local]"}

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_UDIAG_SHOW_NAME, _UDIAG_SHOW_PEER = 1, 4
_UNIX_DIAG_NAME, _UNIX_DIAG_PEER = 0, 2
_TCP_STATES = {
    "01": psutil.CONN_ESTABLISHED, "02": psutil.CONN_SYN_SENT, "03": psutil.CONN_SYN_RECV,
    "04": psutil.CONN_FIN_WAIT1, "05": psutil.CONN_FIN_WAIT2, "06": psutil.CONN_TIME_WAIT, "07": psutil.CONN_CLOSE,
    "08": psutil.CONN_CLOSE_WAIT, "09": psutil.CONN_LAST_ACK, "0A": psutil.CONN_LISTEN, "0B": psutil.CONN_CLOSING,
}
"""``st`` of ``/proc/net/tcp`` (include/net/tcp_states.h) -> psutil's status names."""


@dataclass(frozen=True)
class UnixSocket:
    """One Unix socket: its bound (or accepted-on) path and its peer's inode (0 when none)."""

    inode: int
    path: str
    peer: int


def normal_ip(ip: str) -> str:
    """``::ffff:127.0.0.1`` -> ``127.0.0.1``; brackets and zone ids dropped."""
    ip = ip.strip("[]").split("%")[0].lower()
    return ip.removeprefix("::ffff:") if ip.startswith("::ffff:") and "." in ip else ip


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host.lower() in LOCALHOST_NAMES:
        return True
    try:
        return ipaddress.ip_address(normal_ip(host)).is_loopback
    except ValueError:
        return False


def split_host_port(value: str) -> tuple[str, int | None]:
    """MySQL ``PROCESSLIST.HOST`` (``localhost:37780``, ``10.0.0.5:4242``, ``::1:4242``, ``localhost``)."""
    head, sep, tail = value.rpartition(":")
    if not sep or not tail.isdigit():
        return value, None
    if ":" in head and not head.startswith("["):  # IPv6: the port is there only if the rest is an address
        try:
            ipaddress.ip_address(head)
        except ValueError:
            return value, None
    return head.strip("[]"), int(tail)


class LocalSockets:
    """This host's socket tables, each read at most once, on first use."""

    @cached_property
    def local_ips(self) -> set[str]:
        """Addresses of this host's interfaces."""
        ips = {"127.0.0.1", "::1"}
        for addrs in psutil.net_if_addrs().values():
            ips.update(normal_ip(a.address) for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
        return ips

    @cached_property
    def hostname(self) -> str:
        return socket.gethostname().lower()

    def is_local(self, host: str) -> bool:
        """True when a client host (address or name) is this machine."""
        return is_loopback(host) or normal_ip(host) in self.local_ips or host.lower() == self.hostname

    @cached_property
    def tcp(self) -> list[psutil._common.sconn]:
        """Every TCP connection with an owner (needs root for other users' sockets)."""
        try:
            return [c for c in psutil.net_connections("tcp") if c.pid and c.raddr]
        except (psutil.Error, OSError):
            return []

    def tcp_owners(self, client_host: str, client_port: int, server_ports: set[int],
                   server_ip: str | None) -> list[int]:
        """Pids holding the local end ``client_host:client_port`` of a connection to the server.

        ``server_ip`` None means the server is this host (reached on any local address).
        """
        owners = []
        for conn in self.tcp:
            if conn.laddr.port != client_port or conn.raddr.port not in server_ports:
                continue
            if not self._same_host(client_host, conn.laddr.ip):
                continue
            remote = normal_ip(conn.raddr.ip)
            if (remote in self.local_ips) if server_ip is None else (remote == normal_ip(server_ip)):
                owners.append(conn.pid)
        return owners

    def _same_host(self, reported: str, local_ip: str) -> bool:
        if is_loopback(reported):
            return is_loopback(local_ip)
        return reported.lower() == self.hostname or normal_ip(reported) == normal_ip(local_ip)

    @cached_property
    def unix(self) -> dict[int, UnixSocket]:
        """Every Unix socket of this network namespace by inode ({} when sock_diag is unavailable)."""
        try:
            return _unix_diag()
        except (OSError, struct.error):
            return {}

    @cached_property
    def socket_owners(self) -> dict[int, list[int]]:
        """Socket inode -> pids with a descriptor on it (all of /proc, read once)."""
        owners: dict[int, list[int]] = {}
        for pid in psutil.pids():
            for inode in fd_socket_inodes(pid):
                owners.setdefault(inode, []).append(pid)
        return owners

    def unix_client_owners(self, paths: set[str], server_pid: int | None = None) -> dict[int, list[int]]:
        """Client socket inode -> owner pids, for connections accepted on ``paths``.

        With ``server_pid``, only connections whose server end that process holds (a PostgreSQL backend).
        """
        mine = fd_socket_inodes(server_pid) if server_pid is not None else None
        found = {}
        for sock in self.unix.values():
            if sock.peer and sock.path in paths and (mine is None or sock.inode in mine):
                found[sock.peer] = self.socket_owners.get(sock.peer, [])
        return found


@dataclass(frozen=True)
class TcpSocket:
    """One TCP socket of ``/proc/net/tcp{,6}``: addresses as ``ip:port`` (``[ip]:port`` for IPv6), psutil's status."""

    laddr: str
    raddr: str
    """Empty when unconnected (a listener)."""
    status: str


def fd_socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process has open ({} when it is gone or not readable)."""
    try:
        return set(socket_fds(pid))
    except OSError:
        return set()


def socket_fds(pid: int) -> dict[int, int]:
    """Socket inode -> descriptor number, for the sockets a process has open.

    Raises ``PermissionError`` when its descriptors are not readable, ``FileNotFoundError`` when it is gone
    (a zombie has none: {}).
    """
    found = {}
    folder = f"/proc/{pid}/fd"
    for name in os.listdir(folder):
        try:
            link = os.readlink(f"{folder}/{name}")
        except OSError:
            continue  # closed since the listing
        if link.startswith("socket:["):
            found.setdefault(int(link[8:-1]), int(name))
    return found


def tcp_by_inode(net_dir: str = "/proc/net") -> dict[int, TcpLine]:
    """Every TCP socket of this network namespace by inode, from ``/proc/net/tcp`` and ``tcp6`` (one read each).

    ``net_dir`` ``/proc/<pid>/net``: those of ``pid``'s network namespace (a container's) instead.

    The same table psutil reads for ``Process.net_connections`` (this process's namespace); a file that
    cannot be read (no IPv6) adds nothing. Sockets without an inode (``TIME_WAIT``) are left out. Addresses
    are decoded on use (:meth:`TcpLine.socket`): a busy host has thousands of sockets, a probe needs a few.
    """
    found: dict[int, TcpLine] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"{net_dir}/{name}", encoding="ascii") as table:
                lines = table.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split(None, 10)
            if len(fields) >= 10 and fields[9].isdigit() and fields[9] != "0":
                found[int(fields[9])] = TcpLine(family, fields[1], fields[2], fields[3])
    return found


@dataclass(frozen=True)
class TcpLine:
    """One line of ``/proc/net/tcp{,6}``, still in the kernel's hex."""

    family: int
    local: str
    remote: str
    state: str

    def socket(self) -> TcpSocket | None:
        """The decoded socket; None for a malformed line."""
        try:
            return TcpSocket(_proc_address(self.local, self.family), _proc_address(self.remote, self.family),
                             _TCP_STATES.get(self.state, psutil.CONN_NONE))
        except ValueError:
            return None


def _proc_address(text: str, family: int) -> str:
    """``0100007F:1538`` -> ``127.0.0.1:5432``; IPv6 as ``[ip]:port``; port 0 (no peer) -> ``""``.

    The kernel prints each 32-bit word of the address in host byte order.
    """
    hex_ip, _, hex_port = text.partition(":")
    port = int(hex_port, 16)
    if not port:
        return ""
    raw = bytes.fromhex(hex_ip)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = socket.inet_ntop(family, raw)
    return f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"


def _unix_diag() -> dict[int, UnixSocket]:
    """One ``SOCK_DIAG_BY_FAMILY`` dump of AF_UNIX sockets with name and peer (linux/unix_diag.h)."""
    request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0,
                          _UDIAG_SHOW_NAME | _UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
    found: dict[int, UnixSocket] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.sendto(header + request, (0, 0))
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < 16:
                    return found
                inode = struct.unpack_from("=I", data, offset + 20)[0]
                path, peer, attr = "", 0, offset + 32
                while attr + 4 <= offset + length:
                    attr_len, attr_type = struct.unpack_from("=HH", data, attr)
                    if attr_len < 4:
                        break
                    if attr_type == _UNIX_DIAG_NAME:
                        path = data[attr + 4 : attr + attr_len].split(b"\0")[0].decode(errors="replace")
                    elif attr_type == _UNIX_DIAG_PEER:
                        peer = struct.unpack_from("=I", data, attr + 4)[0]
                    attr += (attr_len + 3) & ~3
                found[inode] = UnixSocket(inode, path, peer)
                offset += (length + 3) & ~3
