"""Several "hosts" on this machine: each its own network, PID, UTS and mount namespaces, on one private /24.

A :class:`TestBed` is a bridge in the root namespace (``<prefix>.1``) with one veth pair per host
(``<prefix>.11``, ``.12``, …). Each host has a long-lived leader, PID 1 of its PID namespace, whose hostname
is the host's name; :meth:`Host.run` / :meth:`Host.spawn` run a command inside it with ``nsenter``, so the
command sees only that host's processes, sockets and hostname, as on a real host. A private ``redis-server``
and a private ``mariadbd`` listen on the bridge address, the one place all hosts reach.

The /24 is claimed with an ``O_EXCL`` file under :data:`CLAIM_DIR` naming its owner and what it created
(two checkouts running at once never share one); a claim whose owner is gone is swept first, deleting the
namespaces and links it lists. Teardown kills only the pids started here (a leader's death ends every
process of its PID namespace) and deletes only the namespaces and links created here, even after a failure;
should the test process itself be killed, the leaders and servers get SIGKILL from the kernel (``PDEATHSIG``).
Needs root, ``ip``, ``unshare``, ``nsenter``, ``redis-server``, ``mariadb-install-db`` and ``mariadbd``.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .services import DBInfo, read_line, service_unavailable, tcp_reachable
from .workers import ns_pid

CLAIM_DIR = Path(tempfile.gettempdir()) / "rqdoctor-test-subnets"
TOOLS = ("ip", "unshare", "nsenter", "redis-server", "mariadb-install-db", "mariadbd", "mariadb")
PR_SET_PDEATHSIG = 1
_beds = itertools.count()
FIRST_HOST = 11
"""Host ``i`` (0-based) gets ``<prefix>.<FIRST_HOST + i>``; ``<prefix>.1`` is the bridge."""


def refusal() -> str | None:
    """Why this machine cannot build a test bed (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"not on PATH: {', '.join(missing)}"
    name = f"rqdprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return f"ip netns add failed: {done.stderr.strip()[:200]}"
    try:
        probe = subprocess.run(["ip", "netns", "exec", name, "unshare", "--pid", "--fork", "--mount-proc", "--uts",
                                "true"], capture_output=True, text=True, timeout=20)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
    if probe.returncode != 0:
        return f"unshare in a network namespace failed: {probe.stderr.strip()[:200]}"
    return None


def require_test_bed() -> None:
    """Skip loudly (fail under ``CI=true``) when :func:`refusal` names a reason."""
    reason = refusal()
    if reason is not None:
        service_unavailable(f"multi-host test bed: {reason}")


def _die_with_us() -> None:
    """``preexec_fn``: SIGKILL this child when the test process dies, even by SIGKILL (no teardown then)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


# --- claiming a /24 ---------------------------------------------------------------------------------------------


@dataclass
class Claim:
    """A /24 (``prefix`` = ``10.a.b``) held through a claim file that also lists what we created on it."""

    prefix: str
    path: Path
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def record(self, *, netns: str | None = None, link: str | None = None, directory: Path | None = None) -> None:
        """Note a namespace / link / directory just created, so a sweep after a crash of this run can delete it."""
        if netns:
            self.netns.append(netns)
        if link:
            self.links.append(link)
        if directory:
            self.dirs.append(str(directory))
        self._write()

    def _write(self) -> None:
        me = psutil.Process()
        data = {"pid": me.pid, "started": me.create_time(), "netns": self.netns, "links": self.links,
                "dirs": self.dirs}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _prefix_in_use(prefix: str) -> bool:
    """Any address or route of the root namespace in ``prefix``.0/24 (ours or anyone's)."""
    words = (_ip("-4", "addr", "show").stdout + _ip("-4", "route", "show", "table", "all").stdout).split()
    return any(w.startswith(prefix + ".") for w in words)


def _owner_alive(data: dict[str, object]) -> bool:
    try:
        proc = psutil.Process(int(data["pid"]))  # type: ignore[call-overload]
        return abs(proc.create_time() - float(data["started"])) < 1  # type: ignore[arg-type]
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def sweep_stale_claims() -> None:
    """Delete what dead owners' claims list (their namespaces, links and work directories), then the claims."""
    CLAIM_DIR.mkdir(exist_ok=True)
    for path in CLAIM_DIR.glob("*.claim"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            if time.time() - path.stat().st_mtime > 60:  # a claim never written to: its owner died at once
                path.unlink(missing_ok=True)
            continue
        if _owner_alive(data):
            continue
        for ns in data.get("netns", []):
            _ip("netns", "del", ns, check=False)
        for link in data.get("links", []):
            _ip("link", "del", link, check=False)
        for directory in data.get("dirs", []):
            if Path(directory).name.startswith("rqdbed"):
                shutil.rmtree(directory, ignore_errors=True)
        path.unlink(missing_ok=True)


def claim_subnet(rng: random.Random | None = None) -> Claim:
    """A free ``10.a.b.0/24`` (a in 200-254), claimed atomically; :meth:`Claim.release` gives it back."""
    rng = rng or random.Random()
    sweep_stale_claims()
    for _ in range(50):
        prefix = f"10.{rng.randint(200, 254)}.{rng.randint(0, 255)}"
        path = CLAIM_DIR / f"{prefix}.claim"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        claim = Claim(prefix, path)
        claim.record()
        if _prefix_in_use(prefix):
            claim.release()
            continue
        return claim
    raise RuntimeError(f"no free 10.x.y.0/24 found for a test bed (claims in {CLAIM_DIR})")


# --- hosts --------------------------------------------------------------------------------------------------------


@dataclass
class Host:
    """One namespace "host": its name (= hostname), network namespace, address and leader (PID 1 there)."""

    name: str
    netns: str
    ip: str
    leader: psutil.Process
    leader_popen: subprocess.Popen[str]
    """``ip netns exec … unshare …``, the leader's parent."""

    def enter(self, argv: Sequence[str], cwd: str | os.PathLike[str] = "/") -> list[str]:
        """``argv`` run inside this host (its PID, UTS, network and mount namespaces) with cwd ``cwd``."""
        return ["nsenter", "-t", str(self.leader.pid), "-p", "-u", "-n", "-m", f"--wd={os.fspath(cwd)}", *argv]

    def run(self, argv: Sequence[str], *, cwd: str | os.PathLike[str] = "/", env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host to completion, capturing its output."""
        return subprocess.run(self.enter(argv, cwd), capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)

    def spawn(self, argv: Sequence[str], *, cwd: str | os.PathLike[str] = "/", env: dict[str, str] | None = None,
              log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this host in a session of its own, output appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            return subprocess.Popen(self.enter(argv, cwd), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """SIGKILL the leader (the kernel then ends every process of this PID namespace) and reap it."""
        with suppress(psutil.NoSuchProcess):
            self.leader.send_signal(signal.SIGKILL)  # psutil refuses a reused pid
        with suppress(subprocess.TimeoutExpired):
            self.leader_popen.wait(timeout=10)
        if self.leader_popen.poll() is None:
            self.leader_popen.kill()
            self.leader_popen.wait(timeout=10)


def _start_host(stack: ExitStack, claim: Claim, bridge: str, token: str, index: int, name: str) -> Host:
    """Create ``name``'s namespace and veth pair and start its leader; each undone by ``stack``, once created."""
    netns, outer, inner = f"rqd{token}{name}", f"rqv{token}{index}", f"rqh{token}{index}"
    ip = f"{claim.prefix}.{FIRST_HOST + index}"
    _ip("netns", "add", netns)
    stack.callback(_ip, "netns", "del", netns, check=False)
    claim.record(netns=netns)
    _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
    stack.callback(_ip, "link", "del", outer, check=False)  # gone with the namespace already, unless it failed
    claim.record(link=outer)
    _ip("link", "set", outer, "master", bridge, "up")
    _ip("link", "set", inner, "netns", netns)
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", inner)
    _ip("-n", netns, "link", "set", inner, "up")
    popen = subprocess.Popen(
        ["ip", "netns", "exec", netns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--uts",
         "sh", "-c", 'hostname "$0" && echo ready && exec sleep infinity', name],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=_die_with_us)  # unshare dies with us; --kill-child: the leader too
    try:
        read_line(popen, "ready", timeout=30)
        leader = psutil.Process(popen.pid).children()[0]
    except BaseException:
        popen.kill()
        popen.wait(timeout=10)
        raise
    host = Host(name, netns, ip, leader, popen)
    stack.callback(host.stop)
    assert ns_pid(leader.pid) == 1, f"leader {leader.pid} of {name} is not PID 1 of its namespace"
    return host


# --- services on the bridge ------------------------------------------------------------------------------------


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], ip: str, port: int, what: str, timeout: float,
                    log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}\n{tail}")
        if tcp_reachable(ip, port, timeout=0.3):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {ip}:{port} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


@contextmanager
def bridge_redis(ip: str, workdir: Path) -> Iterator[str]:
    """A private ``redis-server`` bound to ``ip`` (no persistence); yields ``redis://ip:port``."""
    port = free_port(ip)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", ip, "--save", "", "--appendonly", "no",
                             "--databases", "16", "--protected-mode", "no", "--dir", str(workdir), "--logfile", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_us)
    try:
        _wait_listening(proc, ip, port, "redis-server", timeout=20)
        yield f"redis://{ip}:{port}"
    finally:
        _stop(proc)


@contextmanager
def bridge_mariadb(ip: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """A private ``mariadbd`` in a fresh datadir, bound to ``ip``, root (no password) allowed from anywhere."""
    datadir, sock, log = workdir / "data", workdir / "mysqld.sock", workdir / "mariadbd.log"
    install = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                              "--auth-root-authentication-method=normal", "--skip-test-db"],
                             capture_output=True, text=True, timeout=180)
    if install.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {install.stderr[-2000:]}")
    port = free_port(ip)
    with open(log, "ab") as out:
        proc = subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={sock}",
                                 f"--port={port}", f"--bind-address={ip}", "--user=root", "--skip-log-bin",
                                 "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                                 f"--pid-file={workdir / 'mariadbd.pid'}"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_us)
    try:
        _wait_listening(proc, ip, port, "mariadbd", timeout=120, log=log)
        grant = subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e",
                                "CREATE USER 'root'@'%'; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION"],
                               capture_output=True, text=True, timeout=60)
        if grant.returncode != 0:
            raise RuntimeError(f"granting root@'%' failed: {grant.stderr}")
        yield ip, port
    finally:
        _stop(proc, grace=30)


# --- the test bed -------------------------------------------------------------------------------------------------


@dataclass
class TestBed:
    """The hosts, the bridge address they all reach, and the private Redis and MariaDB listening on it."""

    __test__ = False  # not a pytest class

    gateway: str
    hosts: dict[str, Host]
    redis_url: str
    mariadb: tuple[str, int]
    workdir: Path

    def database(self, name: str) -> DBInfo:
        """Create database ``name`` on the private MariaDB (root, no password)."""
        host, port = self.mariadb
        self.sql(f"CREATE DATABASE `{name}`")
        return DBInfo("mariadb", host, port, "root", "", name)

    def sql(self, statement: str) -> list[list[str]]:
        """Run ``statement`` on the private MariaDB from the root namespace; rows as lists of strings."""
        host, port = self.mariadb
        done = subprocess.run(["mariadb", f"-h{host}", f"-P{port}", "-uroot", "--batch", "-N", "-e", statement],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "MYSQL_PWD": ""})
        if done.returncode != 0:
            raise RuntimeError(f"{statement!r} failed: {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines()]

    @property
    def db_url(self) -> str:
        host, port = self.mariadb
        return f"mysql://root@{host}:{port}/"


@contextmanager
def multi_host_bed(names: Sequence[str] = ("hosta", "hostb")) -> Iterator[TestBed]:
    """Build the hosts ``names`` (≤ 6 characters each), the bridge, Redis and MariaDB; tear all down after."""
    assert all(len(n) <= 6 and n.isalnum() for n in names), names
    token = f"{os.getpid()}{next(_beds) % 10}"  # unique among live runs and this run's beds; links ≤ 15 chars
    with ExitStack() as stack:
        claim = claim_subnet()
        stack.callback(claim.release)
        workdir = Path(tempfile.mkdtemp(prefix="rqdbed"))  # short: a unix socket path lives in it
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        claim.record(directory=workdir)
        bridge, gateway = f"rqb{token}", f"{claim.prefix}.1"
        _ip("link", "add", bridge, "type", "bridge")
        stack.callback(_ip, "link", "del", bridge, check=False)
        claim.record(link=bridge)
        _ip("addr", "add", f"{gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        hosts = {name: _start_host(stack, claim, bridge, token, index, name) for index, name in enumerate(names)}
        (workdir / "redis").mkdir()
        (workdir / "mariadb").mkdir()
        redis_url = stack.enter_context(bridge_redis(gateway, workdir / "redis"))
        mariadb = stack.enter_context(bridge_mariadb(gateway, workdir / "mariadb"))
        yield TestBed(gateway, hosts, redis_url, mariadb, workdir)
