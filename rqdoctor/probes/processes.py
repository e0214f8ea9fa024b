"""Process probe: the local worker processes, their horses and the horses' children (psutil only)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psutil

from rqdoctor.config import dir_id
from rqdoctor.diagnose.link import BIRTH_SLACK, VANISHED
from rqdoctor.model import Connection, ProbeError, ProcessInfo, WorkerInfo
from rqdoctor.probes.namespaces import NamespaceReader, last_nspid, ns_inode
from rqdoctor.probes.sockets import TcpLine, socket_fds, tcp_by_inode
from rqdoctor.redact import MASK, is_secret_name, redact_text

PROBE = "processes"
MAX_DEPTH = 4
"""Generations collected below a worker (worker → horse → child → grandchild)."""
MAX_PROCESSES = 500
"""Hard cap, so a mis-matched pid (say 1) cannot pull in the whole host."""
_WORKER_COMMANDS = {"worker", "worker-pool"}
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
"""How psutil decodes ``/proc/<pid>/environ``."""


class _Row(NamedTuple):
    proc: psutil.Process | None
    """None until :func:`_complete` (and after, when the process is gone)."""
    ppid: int | None
    argv: list[str]
    create_time: float | None


def is_worker_argv(argv: list[str]) -> bool:
    """True when ``argv`` (or the process title it holds) looks like an RQ or Frappe worker."""
    if not argv:
        return False
    if " ".join(argv).startswith("rq:worker:"):
        return True
    for i, arg in enumerate(argv):
        base = os.path.basename(arg)
        if base in ("rqworker", "rqworker-pool"):
            return True
        if arg == "frappe.utils.bench_helper":
            rest = argv[i + 1 :]
            return bool(rest) and rest[0] == "frappe" and _subcommand(rest[1:]) in _WORKER_COMMANDS
        if base == "rq" or (arg in ("rq.cli", "rqdoctor.demo") and i > 0 and argv[i - 1] == "-m"):
            return _subcommand(argv[i + 1 :]) in _WORKER_COMMANDS
    return False


def _subcommand(args: list[str]) -> str | None:
    """First positional argument, skipping options (and the value of ``--site``)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--site":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def redact_argv(argv: list[str]) -> list[str]:
    """Mask secrets in a command line, including the value after a secret-looking ``--option``."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        out.append(MASK if mask_next else redact_text(arg))
        mask_next = not mask_next and arg.startswith("--") and "=" not in arg and is_secret_name(arg)
    return out


def probe_processes(
    workers: list[WorkerInfo], hostname: str, errors: list[ProbeError], cpu_window: float | None = 0.2,
    extra_pids: list[int] | None = None,
) -> list[ProcessInfo]:
    """Collect worker-like local processes, this host's Redis worker pids, ``extra_pids``, and their descendants.

    :func:`start_processes` with its CPU window closed at once (waiting it out); errors go to ``errors``.
    """
    window = start_processes(workers, hostname, cpu_window, extra_pids)
    window.finish(window.read(), errors)
    return window.infos


@dataclass
class EarlyCpu:
    """CPU baselines taken as the command starts, before Redis is read (:func:`prime_early`)."""

    procs: dict[int, psutil.Process]
    """pid → its process, primed (CPU times taken) by :attr:`started`."""
    started: float
    """``time.monotonic()`` once all are primed."""


def prime_early() -> EarlyCpu:
    """Open the CPU window of the worker-like processes and their descendants before Redis is read.

    Their command lines say what they are, so no Redis is needed to find them; the command's start-up (bench
    discovery, the Redis client's import, the Redis read) then runs inside the window instead of before it.
    :func:`start_processes` reuses these baselines for the processes it selects that are still the same
    (same pid, same start time), and primes the others itself.
    """
    table = _scan()
    pids = _select(table, workers=[], hostname="", errors=[], extra_pids=[])  # worker-like ones: no Redis yet
    _complete(table, pids)
    procs = _prime(table, pids)
    return EarlyCpu(procs, time.monotonic())  # after the last priming: no process's window is the shorter


def start_processes(workers: list[WorkerInfo], hostname: str, cpu_window: float | None = 0.2,
                    extra_pids: list[int] | None = None, early: EarlyCpu | None = None) -> CpuWindow:
    """Read every field but CPU of the processes :func:`probe_processes` collects, and open their CPU window.

    CPU percent is measured over one shared window for all processes (None: CPU not read), of at least
    ``cpu_window`` seconds: it opens here and closes in :meth:`CpuWindow.read`, so the caller can do other work
    meanwhile (sample the stacks) instead of waiting. A process that vanishes or denies access gives partial
    data, never an exception, plus an entry in the errors :meth:`CpuWindow.finish` adds: for denied access
    always, for a vanished process only when it is a target (:func:`_targets`); any other process that exits
    before the window closes (a horse's short-lived child, another Redis's worker) is no error, its ``status``
    just says ``vanished``. The host's TCP table is read once, for all of them. ``early``: baselines of
    :func:`prime_early`; when every primed process has one, the window counts from then.
    """
    table = _scan()
    namespaces = NamespaceReader(hostname)
    claimed = _container_claims(table, workers, hostname, namespaces)
    _complete(table, [w.pid for w in workers if w.hostname == hostname and w.pid is not None] + list(claimed))
    truncated: list[ProbeError] = []
    pids = _select(table, workers, hostname, truncated, extra_pids or [], claimed)
    if not pids:
        return CpuWindow([], {}, None, time.monotonic(), truncated)
    _complete(table, pids)
    started = time.monotonic()
    primed: dict[int, psutil.Process] = {}
    if cpu_window is not None:
        reused = _same_processes(early, table, pids) if early is not None else {}
        primed = reused | _prime(table, [pid for pid in pids if pid not in reused])
        if reused and len(reused) == len(primed):
            started = early.started
    denied: dict[int, list[str]] = {}
    tcp = _tcp_tables()
    infos = [_describe(pid, table[pid], denied, tcp, namespaces) for pid in pids]
    return CpuWindow(infos, primed, cpu_window, started, truncated, denied, list(namespaces.failures),
                     _targets(table, workers, hostname, extra_pids or []),
                     {i.pid for i in infos if i.status == VANISHED})


def _prime(table: dict[int, _Row], pids: list[int]) -> dict[int, psutil.Process]:
    """Take the CPU times of each process (psutil's ``cpu_percent`` baseline); pid → the primed process."""
    primed = {}
    for pid in pids:
        proc = table[pid].proc
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                proc.cpu_percent(None)
                primed[pid] = proc
    return primed


def _same_processes(early: EarlyCpu, table: dict[int, _Row], pids: list[int]) -> dict[int, psutil.Process]:
    """The early-primed processes among ``pids`` that are still the ones primed (same start time: no reused pid)."""
    same = {}
    for pid in pids:
        proc, row = early.procs.get(pid), table[pid]
        if proc is not None and row.create_time is not None and _create_time(proc) == row.create_time:
            same[pid] = proc
    return same


def _create_time(proc: psutil.Process) -> float | None:
    try:
        return proc.create_time()
    except psutil.Error:  # psutil caches it from the first look; gone or denied since, then: not the same
        return None


class CpuReading(NamedTuple):
    """What :meth:`CpuWindow.read` found of one process: its CPU use, or why there is none."""

    percent: float | None = None
    """Of one core, since the process was primed (psutil's ``cpu_percent``: its own CPU times over the wall time)."""
    seconds: float | None = None
    """User + system CPU seconds."""
    failure: str | None = None
    """``vanished`` (gone, or its pid now another process's) or ``denied``."""


@dataclass
class CpuWindow:
    """The processes :func:`start_processes` read, and their open CPU window.

    Until :meth:`finish`, ``cpu_percent`` and ``cpu_time`` of every one of :attr:`infos` are None and a process
    that exits meanwhile keeps the status first read: nothing may read those before. :meth:`read` closes the
    window (it sleeps, so it may run in a thread, and touches no info); :meth:`finish` fills the infos in and
    adds the probe's errors, in the caller's thread.
    """

    infos: list[ProcessInfo]
    primed: dict[int, psutil.Process]
    """pid → its process, CPU times taken at :attr:`started`."""
    window: float | None
    """Seconds at least; None: no CPU is read."""
    started: float
    """``time.monotonic()`` of the priming."""
    truncated: list[ProbeError]
    denied: dict[int, list[str]] = field(default_factory=dict)
    """pid → the fields it would not give."""
    namespace_failures: list[str] = field(default_factory=list)
    """Processes whose UTS namespace could not be read."""
    targets: set[int] = field(default_factory=set)
    vanished: set[int] = field(default_factory=set)
    """Pids gone before the window opened."""

    def read(self, max_wait: float | None = None) -> dict[int, CpuReading]:
        """Sleep what remains of the window (``max_wait`` seconds at most), then read each primed process's CPU."""
        if self.window is None:
            return {}
        wait = self.window - (time.monotonic() - self.started)
        time.sleep(max(0.0, wait if max_wait is None else min(wait, max_wait)))
        return {pid: _read_cpu(proc) for pid, proc in self.primed.items()}

    def finish(self, readings: dict[int, CpuReading] | None, errors: list[ProbeError],
               reported: Collection[int] = ()) -> None:
        """Fill in what :meth:`read` found (None: nothing, the read was abandoned) and add the probe's errors.

        A process gone at the read is ``vanished``, an error when it is a target and not in ``reported`` (pids
        whose exit another probe already reported); one marked vanished since :func:`start_processes`
        (:func:`recheck_gone`) keeps that, with no CPU and no second error.
        """
        vanished = set(self.vanished)
        for info in self.infos:
            cpu = (readings or {}).get(info.pid)
            if cpu is None or info.status == VANISHED:
                continue
            if cpu.failure == VANISHED:
                info.status = VANISHED
                if info.pid not in reported:
                    vanished.add(info.pid)
            elif cpu.failure is not None:
                self.denied.setdefault(info.pid, []).append("cpu")
            else:
                info.cpu_percent, info.cpu_time = cpu.percent, cpu.seconds
        errors.extend(self.truncated)
        if self.denied:
            errors.append(_denied_error(self.denied))
        if self.namespace_failures:
            errors.append(ProbeError(
                PROBE, "permission", "could not read the container hostname (UTS namespace) of "
                + ", ".join(self.namespace_failures[:10]) + ": their workers' hashes cannot be matched to them",
                hint="run rqdoctor as root (it uses nsenter -u), see docs/containers.md", subject="uts namespace"))
        errors.extend([_vanished_error(i.pid) for i in self.infos if i.pid in vanished and i.pid in self.targets])


def _targets(table: dict[int, _Row], workers: list[WorkerInfo], hostname: str, extra_pids: list[int]) -> set[int]:
    """Pids the report is about: those this host's Redis worker hashes name, their children (the horses), and
    ``extra_pids``."""
    claimed = {w.pid for w in workers if w.hostname == hostname and w.pid is not None}
    return claimed | {pid for pid, row in table.items() if row.ppid in claimed} | set(extra_pids)


def _scan() -> dict[int, _Row]:
    """One pass over every process: pid → (ppid, argv), from ``/proc/<pid>/stat`` and ``cmdline`` read directly.

    What psutil's ``ppid()`` and ``cmdline()`` give, at a third of the cost: the whole host is scanned, and
    only the few processes selected get a :class:`psutil.Process` (:func:`_complete`).
    """
    table = {}
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                fields, raw = stat.read(), cmdline.read()
            ppid = int(fields[fields.rfind(b")") + 2:].split(None, 2)[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        table[pid] = _Row(None, ppid, split_cmdline(os.fsdecode(raw)), None)
    return table


def split_cmdline(data: str) -> list[str]:
    """``/proc/<pid>/cmdline`` as an argv, split the way psutil splits it.

    NUL-separated; but a process that rewrote its title (setproctitle, as rq does) may use spaces instead.
    A zombie's is empty.
    """
    if not data:
        return []
    sep = "\x00" if data.endswith("\x00") else " "
    data = data.removesuffix(sep)
    argv = data.split(sep)
    if sep == "\x00" and len(argv) == 1 and " " in data:
        argv = data.split(" ")
    return argv


def _complete(table: dict[int, _Row], pids: list[int]) -> None:
    """Give the rows of ``pids`` their :class:`psutil.Process` and start time (no process: a gone one)."""
    for pid in pids:
        row = table.get(pid)
        if row is None or row.proc is not None:
            continue
        try:
            proc = psutil.Process(pid)
            table[pid] = row._replace(proc=proc, create_time=proc.create_time())
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            table[pid] = row._replace(proc=proc)


def _container_claims(table: dict[int, _Row], workers: list[WorkerInfo], hostname: str,
                      namespaces: NamespaceReader) -> dict[int, WorkerInfo]:
    """Host pid -> the worker hash of another hostname that names it: a process in a foreign PID namespace whose
    last ``NSpid`` is the hash's pid, in a UTS namespace of the hash's hostname (a container on this host).

    Only processes of a foreign namespace whose namespace pid some such hash names are looked at further.
    """
    wanted: dict[int, list[WorkerInfo]] = {}
    for w in workers:
        if w.hostname and w.hostname != hostname and w.pid is not None:
            wanted.setdefault(w.pid, []).append(w)
    if not wanted or namespaces.own_pid_ns is None:
        return {}
    claims = {}
    for pid in table:
        pid_ns = ns_inode(pid, "pid")
        if pid_ns is None or pid_ns == namespaces.own_pid_ns:
            continue
        hashes = wanted.get(last_nspid(pid) or -1)
        if not hashes:
            continue
        uts = namespaces.uts_hostname(pid)
        found = next((w for w in hashes if w.hostname == uts), None)
        if found is not None:
            claims[pid] = found
    return claims


def _select(table: dict[int, _Row], workers: list[WorkerInfo], hostname: str, errors: list[ProbeError],
            extra_pids: list[int], claimed: dict[int, WorkerInfo] | None = None) -> list[int]:
    """Worker-like processes, this host's Redis worker pids, the container processes hashes name (``claimed``,
    :func:`_container_claims`) and ``extra_pids``, then descendants (depth-limited).

    A Redis pid is kept so link can say what holds it, but expanded only when its process is worker-like
    and started before the worker's birth (not an unrelated process, not a reused pid). Worker-like
    parents (pool parents) are themselves worker-like, so they are seeds too.
    """
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        if row.ppid is not None:
            children.setdefault(row.ppid, []).append(pid)
    seeds = {pid: None for pid, row in sorted(table.items()) if is_worker_argv(row.argv)}
    expand = set(seeds)
    named = [(w.pid, w) for w in workers if w.hostname == hostname and w.pid is not None]
    for pid, w in [*named, *(claimed or {}).items()]:
        row = table.get(pid)
        if row is None:
            continue
        seeds[pid] = None
        fits = w.birth is None or row.create_time is None or row.create_time <= w.birth + BIRTH_SLACK
        if fits and is_worker_argv(row.argv):
            expand.add(pid)
    for pid in extra_pids:
        if pid in table:
            seeds[pid] = None
            expand.add(pid)
    order = dict(seeds)
    frontier = [pid for pid in order if pid in expand]
    for _ in range(MAX_DEPTH):
        frontier = [c for pid in frontier for c in sorted(children.get(pid, ())) if c not in order]
        order.update(dict.fromkeys(frontier))
    pids = list(order)
    if len(pids) > MAX_PROCESSES:
        message = f"{len(pids)} worker-related processes found; only the first {MAX_PROCESSES} are shown"
        errors.append(ProbeError(PROBE, "truncated", message))
    return pids[:MAX_PROCESSES]


def _tcp_tables() -> Callable[[int], dict[int, TcpLine]]:
    """pid -> the TCP table of its network namespace, each read once (a container's from ``/proc/<pid>/net``)."""
    own = ns_inode("self", "net")
    tables: dict[int | None, dict[int, TcpLine]] = {}

    def table(pid: int) -> dict[int, TcpLine]:
        net = ns_inode(pid, "net")
        key = None if net is None or net == own else net
        if key not in tables:
            tables[key] = tcp_by_inode() if key is None else tcp_by_inode(f"/proc/{pid}/net")
        return tables[key]
    return table


def _describe(pid: int, row: _Row, denied: dict[int, list[str]],
              tcp: Callable[[int], dict[int, TcpLine]], namespaces: NamespaceReader) -> ProcessInfo:
    """Everything but CPU usage (``tcp``: TCP tables by pid); a field that cannot be read stays at its default."""
    proc = row.proc
    worker_like = is_worker_argv(row.argv)
    info = ProcessInfo(
        pid=pid,
        ppid=row.ppid,
        create_time=row.create_time,
        cmdline=redact_argv(row.argv),
        worker_like=worker_like,
        identity=namespaces.identity(pid, row.create_time, worker_like),
    )
    if proc is None:
        info.status = VANISHED
        return info
    readers: dict[str, Callable[[], Any]] = {
        "status": proc.status,
        "username": proc.username,
        "rss": lambda: proc.memory_info().rss,
        "num_threads": proc.num_threads,
        "cwd": proc.cwd,
        "cwd_dir": lambda: dir_id(f"/proc/{pid}/cwd"),
        "supervisor_program": lambda: _environ_value(proc, "SUPERVISOR_PROCESS_NAME"),
        "connections": lambda: _connections(pid, lambda: tcp(pid)),
    }
    try:
        info.pgid = os.getpgid(pid)
        info.sid = os.getsid(pid)
    except ProcessLookupError:
        info.status = VANISHED
        return info
    except OSError:
        denied.setdefault(pid, []).append("pgid")
    try:
        with proc.oneshot():
            for name, read in readers.items():
                try:
                    setattr(info, name, read())
                except psutil.ZombieProcess:
                    pass  # a zombie keeps pid, ppid and status; cwd and environ are gone
                except psutil.AccessDenied:
                    denied.setdefault(pid, []).append(name)
    except psutil.NoSuchProcess:
        info.status = VANISHED
    return info


def _environ_value(proc: psutil.Process, name: str) -> str | None:
    """``proc.environ().get(name)`` without building the whole dict; psutil's own call (and its errors) when
    ``/proc/<pid>/environ`` cannot be read."""
    try:
        with open(f"/proc/{proc.pid}/environ", encoding=_FS_ENCODING, errors=_FS_ERRORS) as environ:
            data = environ.read()
    except OSError:
        return proc.environ().get(name)
    return environ_value(data, name)


def environ_value(block: str, name: str) -> str | None:
    """The value of ``name`` in a NUL-separated environ block, read the way psutil's ``parse_environ_block`` reads
    it: up to the first empty entry, without the unterminated tail, the last assignment winning."""
    entries = block.split("\0")[:-1]
    if "" in entries:
        entries = entries[: entries.index("")]
    prefix = name + "="
    return next((entry[len(prefix):] for entry in reversed(entries) if entry.startswith(prefix)), None)


def _read_cpu(proc: psutil.Process) -> CpuReading:
    """CPU percent since the priming call, and user + system CPU seconds (a pid reused meanwhile: vanished)."""
    try:
        if not proc.is_running():
            return CpuReading(failure=VANISHED)
        with proc.oneshot():
            percent = proc.cpu_percent(None)
            times = proc.cpu_times()
        return CpuReading(percent, times.user + times.system)
    except psutil.NoSuchProcess:
        return CpuReading(failure=VANISHED)
    except psutil.AccessDenied:
        return CpuReading(failure="denied")


def recheck_gone(processes: list[ProcessInfo], pids: list[int], errors: list[ProbeError]) -> None:
    """Mark ``pids`` that exited since they were read (no such process, a zombie, or a new process on the pid).

    Run after stack sampling, so a target that died mid-sampling is reported as gone, not judged.
    """
    by_pid = {p.pid: p for p in processes}
    for pid in pids:
        info = by_pid.get(pid)
        if info is None or info.status == VANISHED:
            continue
        try:
            proc = psutil.Process(pid)
            late = abs(proc.create_time() - info.create_time) if info.create_time is not None else 0.0
            # > 1 s: another process (the boot time psutil adds may shift by 1 s); a new parent: the pid was reused
            gone = proc.status() == psutil.STATUS_ZOMBIE or late > 1.0 or (late > 0.005 and proc.ppid() != info.ppid)
        except psutil.NoSuchProcess:
            gone = True
        except psutil.AccessDenied:
            gone = False
        if gone:
            info.status = VANISHED
            errors.append(_vanished_error(pid))


def _connections(pid: int, tcp: Callable[[], dict[int, TcpLine]]) -> list[Connection]:
    """TCP connections of ``pid`` by descriptor, as psutil's ``net_connections(kind="tcp")`` gives them.

    ``tcp`` is read only when the process holds a socket; its unreadable or missing descriptors raise psutil's
    AccessDenied / NoSuchProcess, as psutil would.
    """
    try:
        fds = socket_fds(pid)
    except PermissionError:
        raise psutil.AccessDenied(pid) from None
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    if not fds:
        return []
    table = tcp()
    lines = [(table[inode], fd) for inode, fd in sorted(fds.items(), key=lambda i: i[1]) if inode in table]
    return [Connection(c.laddr, c.raddr, c.status, fd) for line, fd in lines if (c := line.socket()) is not None]


def _vanished_error(pid: int) -> ProbeError:
    return ProbeError(PROBE, "vanished", f"process {pid} exited while it was being read", subject=f"pid {pid}")


def _denied_error(denied: dict[int, list[str]]) -> ProbeError:
    """One error for every process with unreadable fields; ``subject`` lists all their pids."""
    fields = sorted({name for names in denied.values() for name in names})
    pids = sorted(denied)
    shown = ", ".join(map(str, pids[:10])) + (f" and {len(pids) - 10} more" if len(pids) > 10 else "")
    return ProbeError(
        PROBE,
        "permission",
        f"could not read {', '.join(fields)} of {len(pids)} process(es): {shown}",
        hint="run rqdoctor as the user that runs the workers, or with sudo",
        subject="pids " + ",".join(map(str, pids)),
    )
