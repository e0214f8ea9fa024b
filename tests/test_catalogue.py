"""The findings catalogue: every code has an example that fires and a near miss, and docs/findings.md
says what the registry says.

The meta tests read the test modules with :mod:`ast` (never importing them) and find, for every
registered code, a pure ``test_rqdNNN_fires_<what>`` and a pure ``test_rqdNNN_near_miss_<what>``
(pure: asks for no fixture of tests/conftest.py, all of which start services or processes, and
carries no ``integration``/``cli``/database/``slow`` mark of its own, its class or its module).
Below them are the examples of the codes whose tests live here, on recorded snapshots: the
Frappe 15.54.1 lock-wait bench (tests/data/snapshots) and the Frappe 15.54.1 incident
(tests/data/frappe-15.54.1-incident), each changed only as far as the case needs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rqdoctor.commands.common import load_snapshot
from rqdoctor.diagnose.advice import process_ref, supervisor_restart_workers
from rqdoctor.diagnose.findings import RULES, SEVERITIES, Finding
from rqdoctor.diagnose.run import diagnose
from rqdoctor.model import (
    DbSession,
    Frame,
    JobInfo,
    ProbeError,
    ProcessInfo,
    QueueInfo,
    Snapshot,
    WorkerInfo,
)

TESTS = Path(__file__).parent
DOCS = TESTS.parent / "docs" / "findings.md"
RECORDED = TESTS / "data" / "snapshots" / "frappe-15.54.1-lockwait.json"
INCIDENT = TESTS / "data" / "frappe-15.54.1-incident" / "hangs-site-account.json"

# --- the meta tests -----------------------------------------------------------------------------

CATALOGUE_TEST = re.compile(r"^test_(rqd\d{3})_(fires|near_miss)_\w+$")
NOT_PURE_MARKERS = {"integration", "cli", "mariadb", "postgres", "slow"}
"""Markers of tests outside the pure (``unit``) tier."""


@dataclass(frozen=True)
class CatalogueTest:
    code: str
    kind: str
    """``fires`` or ``near_miss``."""
    where: str
    """``tests/test_x.py::test_name``."""
    pure: bool


def _names(node: ast.AST) -> set[str]:
    """Every name and attribute in an expression (``pytest.mark.cli`` -> ``pytest``, ``mark``, ``cli``)."""
    return {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(node)
            if isinstance(n, ast.Attribute | ast.Name)}


def _marks(body: list[ast.stmt], decorators: list[ast.expr]) -> set[str]:
    """Names used in decorators and in a ``pytestmark = …`` of this module or class body."""
    marks = set().union(*map(_names, decorators))
    for statement in body:
        if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in statement.targets):
            marks |= _names(statement.value)
    return marks


Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(path: Path) -> Iterator[tuple[Function, set[str]]]:
    """Module-level functions and methods of module-level classes, with the marks they inherit."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _marks(tree.body, [])
    for node in tree.body:
        if isinstance(node, Function):
            yield node, module | _marks([], node.decorator_list)
        elif isinstance(node, ast.ClassDef):
            inherited = module | _marks(node.body, node.decorator_list)
            for method in node.body:
                if isinstance(method, Function):
                    yield method, inherited | _marks([], method.decorator_list)


def service_fixtures(root: Path = TESTS) -> set[str]:
    """Names of the fixtures ``root``/conftest.py defines (each needs a service, a venv or a process)."""
    conftest = root / "conftest.py"
    if not conftest.exists():
        return set()
    return {f.name for f, marks in _functions(conftest) if "fixture" in marks}


def module_paths(root: Path = TESTS) -> list[Path]:
    """The files pytest collects tests from (its default ``python_files``)."""
    return sorted({*root.rglob("test_*.py"), *root.rglob("*_test.py")})


def catalogue_tests(root: Path = TESTS) -> list[CatalogueTest]:
    """Every test function under ``root`` named after a finding code."""
    services = service_fixtures(root)
    found = []
    for path in module_paths(root):
        for node, marks in _functions(path):
            match = CATALOGUE_TEST.match(node.name)
            if match is None:
                continue
            arguments = {a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]}
            pure = not (arguments & services or marks & NOT_PURE_MARKERS)
            where = f"{path.relative_to(root.parent)}::{node.name}"
            found.append(CatalogueTest(match[1].upper(), match[2], where, pure))
    return found


def test_every_code_has_a_pure_example_that_fires_and_a_near_miss() -> None:
    tests = catalogue_tests()
    missing = {}
    for code in sorted(RULES):
        kinds = {t.kind for t in tests if t.code == code and t.pure}
        lacking = [f"test_{code.lower()}_{kind}_*" for kind in ("fires", "near_miss") if kind not in kinds]
        if lacking:
            missing[code] = lacking
    assert not missing, "codes without a pure catalogue test of each kind: " + "; ".join(
        f"{code}: {', '.join(names)}" for code, names in missing.items())


def test_catalogue_tests_name_registered_codes() -> None:
    stale = sorted(t.where for t in catalogue_tests() if t.code not in RULES)
    assert not stale, f"tests named after codes the registry does not have: {stale}"


def test_catalogue_test_names_are_unique_per_module() -> None:
    # a second `def` of the same name silently replaces the first, which then never runs
    twice = []
    for path in module_paths():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        twice += sorted({f"{path.name}::{n}" for n in names if names.count(n) > 1 and CATALOGUE_TEST.match(n)})
    assert not twice, twice


def test_the_meta_scan_tells_pure_tests_from_service_tests(tmp_path: Path) -> None:
    # GIVEN a tests tree with a service fixture, marked tests, a cli module and a helper that looks like a test
    root = tmp_path / "tests"
    (root / "unit").mkdir(parents=True)
    (root / "conftest.py").write_text("import pytest\n\n@pytest.fixture\ndef redis_url():\n    yield 'redis://'\n")
    (root / "unit" / "test_x.py").write_text(
        "import pytest\n\n"
        "def test_rqd101_fires_live(redis_url):\n    pass\n\n"
        "@pytest.mark.integration\ndef test_rqd101_near_miss_marked():\n    pass\n\n"
        "class TestRqd:\n    def test_rqd102_fires_in_a_class(self, tmp_path):\n        pass\n\n"
        "@pytest.mark.parametrize('x', [1])\ndef test_rqd101_near_miss_pure(monkeypatch, x):\n    pass\n\n"
        "def rqd103_fires_helper():\n    pass\n")
    (root / "test_y_cli.py").write_text("import pytest\n\npytestmark = [pytest.mark.cli]\n\n"
                                        "def test_rqd104_fires_through_the_cli():\n    pass\n")
    # WHEN
    found = catalogue_tests(root)
    # THEN
    assert set(found) == {
        CatalogueTest("RQD101", "fires", "tests/unit/test_x.py::test_rqd101_fires_live", False),
        CatalogueTest("RQD101", "near_miss", "tests/unit/test_x.py::test_rqd101_near_miss_marked", False),
        CatalogueTest("RQD102", "fires", "tests/unit/test_x.py::test_rqd102_fires_in_a_class", True),
        CatalogueTest("RQD101", "near_miss", "tests/unit/test_x.py::test_rqd101_near_miss_pure", True),
        CatalogueTest("RQD104", "fires", "tests/test_y_cli.py::test_rqd104_fires_through_the_cli", False),
    }
    assert len(found) == 5
    assert {"redis_url", "workers", "mariadb", "postgres", "bench"} <= service_fixtures()


@dataclass(frozen=True)
class DocSection:
    """One ``<a id="rqdNNN"></a>`` / ``## RQDNNN: Title (severity…)`` section of docs/findings.md."""

    anchor: str
    code: str
    title: str
    severity: str
    note: str
    """What follows the severity in the heading (``; critical for scheduled jobs``), or empty."""
    body: str


SECTION = re.compile(
    r'^<a id="(?P<anchor>[^"]*)"></a>\n'
    r"## (?P<code>RQD\d{3}): (?P<title>[^\n]+) \((?P<severity>\w+)(?P<note>;[^)\n]*)?\)\n"
    r"(?P<body>.*?)(?=^<a id=|^---$|\Z)",
    re.MULTILINE | re.DOTALL,
)


def doc_sections(text: str) -> list[DocSection]:
    """The catalogue sections, in order (the shape a future ``rqdoctor explain`` can read)."""
    return [DocSection(m["anchor"], m["code"], m["title"], m["severity"], (m["note"] or "").strip("; "),
                       m["body"].strip()) for m in SECTION.finditer(text)]


def test_every_finding_heading_is_a_well_formed_section() -> None:
    text = DOCS.read_text(encoding="utf-8")
    headings = re.findall(r"^## RQD.*$", text, flags=re.MULTILINE)
    sections = doc_sections(text)
    parsed = [f"## {s.code}: {s.title} ({s.severity}{'; ' + s.note if s.note else ''})" for s in sections]
    assert parsed == headings, "a `## RQD…` heading lacks its anchor line or its `(severity)`"
    codes = [s.code for s in sections]
    assert len(codes) == len(set(codes)), f"documented twice: {sorted({c for c in codes if codes.count(c) > 1})}"
    for s in sections:
        assert s.anchor == s.code.lower(), f"{s.code}: anchor {s.anchor!r}, Finding.more_info links #{s.code.lower()}"
        assert s.severity in SEVERITIES, s.code
        assert s.body, f"{s.code}: empty section"


def test_docs_and_registry_have_the_same_codes_titles_and_severities() -> None:
    sections = {s.code: s for s in doc_sections(DOCS.read_text(encoding="utf-8"))}
    undocumented = sorted(set(RULES) - set(sections))
    unregistered = sorted(set(sections) - set(RULES))
    assert not undocumented, f"registered but not in docs/findings.md: {undocumented}"
    assert not unregistered, f"in docs/findings.md but not registered: {unregistered}"
    drift = {code: ((s.title, s.severity), (RULES[code].title, RULES[code].severity))
             for code, s in sections.items() if (s.title, s.severity) != (RULES[code].title, RULES[code].severity)}
    assert not drift, f"docs (title, severity) != registry: {drift}"


def test_codes_are_stable_and_well_formed() -> None:
    for code, registered in RULES.items():
        assert re.fullmatch(r"RQD[123456]\d\d", code)
        assert registered.code == code
        assert registered.severity in SEVERITIES


def test_doc_sections_parser_reads_anchor_title_severity_and_note() -> None:
    text = ('<a id="rqd901"></a>\n## RQD901: A (nested) title (warning; critical when it hurts)\n\nBody one.\n\n'
            '<a id="rqd902"></a>\n## RQD902: Plain (info)\n\nBody two.\n\n---\n\n# Elsewhere\n')
    assert doc_sections(text) == [
        DocSection("rqd901", "RQD901", "A (nested) title", "warning", "critical when it hurts", "Body one."),
        DocSection("rqd902", "RQD902", "Plain", "info", "", "Body two."),
    ]


# --- the recorded snapshots and helpers ---------------------------------------------------------

HOLD = "diag.localhost::holdlock"
"""Recorded job in horse 19302 of worker SHORT_WORKER (pid 18619): idle in transaction, session 83."""
SHORT_WORKER = "3e6904cd5aa043dd92bafc83fa1546ac"
LONG_WORKER = "265fc20cbe22415cb480a89bf0e4445e"
DEFAULT_QUEUE = "home-frappe-frappe-bench:default"
REDIS_CLI = "redis-cli -h 127.0.0.1 -p 11000"
"""The recorded bench's Redis (redis://127.0.0.1:11000)."""
SUPERVISOR = ["bench setup supervisor", "sudo supervisorctl reread && sudo supervisorctl update"]


def recorded() -> Snapshot:
    """The Frappe 15.54.1 lock-wait bench: two busy workers, a row-lock victim job and its blocker job."""
    return load_snapshot(RECORDED)


def incident() -> Snapshot:
    """The Frappe 15.54.1 incident bench (8 workers, a custom `reports` queue nobody listens on)."""
    return load_snapshot(INCIDENT)


def now(snapshot: Snapshot) -> float:
    assert snapshot.redis is not None
    return snapshot.redis.server_time


def job(snapshot: Snapshot, job_id: str) -> JobInfo:
    assert snapshot.redis is not None
    return next(j for j in snapshot.redis.jobs if j.job_id == job_id)


def worker(snapshot: Snapshot, name: str) -> WorkerInfo:
    assert snapshot.redis is not None
    return next(w for w in snapshot.redis.workers if w.name == name)


def queue(snapshot: Snapshot, name: str) -> QueueInfo:
    assert snapshot.redis is not None
    return next(q for q in snapshot.redis.queues if q.name == name)


def process(snapshot: Snapshot, pid: int) -> ProcessInfo:
    return next(p for p in snapshot.processes if p.pid == pid)


def drop_processes(snapshot: Snapshot, *pids: int) -> None:
    """The processes are gone (e.g. the OOM killer took a worker and its horse)."""
    snapshot.processes = [p for p in snapshot.processes if p.pid not in pids]
    snapshot.stacks = [s for s in snapshot.stacks if s.pid not in pids]


def run_for(snapshot: Snapshot, job_id: str, seconds: float) -> None:
    """The job started ``seconds`` before the snapshot."""
    job(snapshot, job_id).started_at = now(snapshot) - seconds


def findings(snapshot: Snapshot, code: str) -> list[Finding]:
    return [f for f in diagnose(snapshot).findings if f.code == code]


def only(snapshot: Snapshot, code: str) -> Finding:
    found = findings(snapshot, code)
    assert len(found) == 1, [(f.code, f.subject) for f in diagnose(snapshot).findings]
    return found[0]


def test_recorded_snapshots_are_healthy_where_the_examples_change_them() -> None:
    # the near misses below rest on this: unchanged, neither bench has any of these findings
    mine = {"RQD101", "RQD102", "RQD104", "RQD108", "RQD201", "RQD202", "RQD203", "RQD204", "RQD403", "RQD404",
            "RQD405", "RQD502", "RQD503", "RQD504"}
    assert not [(f.code, f.subject) for f in diagnose(recorded()).findings if f.code in mine | {"RQD501"}]
    assert not [(f.code, f.subject) for f in diagnose(incident()).findings if f.code in mine - {"RQD104"}]


# --- RQD101 / RQD102: timeouts ------------------------------------------------------------------


def test_rqd101_fires_horse_running_past_its_timeout() -> None:
    # GIVEN the blocker job (timeout 3600 s) running for 3630 s in its horse
    snapshot = recorded()
    run_for(snapshot, HOLD, 3630)
    # WHEN
    finding = only(snapshot, "RQD101")
    # THEN
    assert (finding.severity, finding.subject, finding.job_id, finding.pid, finding.worker) == (
        "critical", f"job {HOLD}", HOLD, 19302, SHORT_WORKER)
    assert finding.evidence[:3] == [
        "hangjobs.jobs.hold_lock on site diag.localhost, queue home-frappe-frappe-bench:short",
        f"pid 19302 (horse) of worker {SHORT_WORKER}", "running 3630 s, timeout 3600 s"]
    assert finding.evidence[3].startswith("SIGALRM (JobTimeoutException) did not stop it")
    assert finding.commands == ["kill -KILL -19302"]
    assert process_ref(process(snapshot, 19302)) in finding.fix
    assert finding.data == {"running_for_s": 3630.0, "timeout_s": 3600,
                            "hard_kill_at": job(snapshot, HOLD).started_at + 3660}
    assert finding.remedy is not None and finding.remedy.action == "stop_horse"
    assert (finding.remedy.pid, finding.remedy.pgid, finding.remedy.job_id) == (19302, 19302, HOLD)


def test_rqd101_fires_past_the_hard_kill_says_the_parent_did_not_kill_it() -> None:
    snapshot = recorded()
    run_for(snapshot, HOLD, 3700)
    finding = only(snapshot, "RQD101")
    assert "running 3700 s, timeout 3600 s" in finding.evidence
    assert any(line.startswith("RQ's worker parent should have killed it 40 s ago (timeout + 60 s)")
               for line in finding.evidence)


def test_rqd101_near_miss_just_inside_its_timeout() -> None:
    # GIVEN 3599 s of 3600: close to the timeout (RQD102), not past it
    snapshot = recorded()
    run_for(snapshot, HOLD, 3599)
    assert findings(snapshot, "RQD101") == []
    assert only(snapshot, "RQD102").subject == f"job {HOLD}"


def test_rqd101_near_miss_job_without_a_timeout() -> None:
    # GIVEN timeout -1 (RQ: no timeout) and a day of running
    snapshot = recorded()
    job(snapshot, HOLD).timeout = -1
    run_for(snapshot, HOLD, 86_400)
    assert findings(snapshot, "RQD101") == [] and findings(snapshot, "RQD102") == []


def test_rqd102_fires_at_81_percent_of_its_timeout() -> None:
    snapshot = recorded()
    run_for(snapshot, HOLD, 2916)  # 81 % of 3600 s
    finding = only(snapshot, "RQD102")
    assert (finding.severity, finding.subject, finding.pid) == ("warning", f"job {HOLD}", 19302)
    assert "running 2916 s of its 3600 s timeout (81%)" in finding.evidence
    assert finding.commands == []  # let it finish: no stop command
    assert finding.fix.startswith("If it is progressing, let it finish")
    assert finding.data == {"running_for_s": 2916.0, "timeout_s": 3600}


def test_rqd102_near_miss_at_79_percent_of_its_timeout() -> None:
    snapshot = recorded()
    run_for(snapshot, HOLD, 2844)  # 79 % of 3600 s
    assert findings(snapshot, "RQD102") == [] and findings(snapshot, "RQD101") == []


# --- RQD104: waiting on a child process ---------------------------------------------------------

SUBPROCESS = [Frame("Popen._communicate", "/usr/lib/python3.11/subprocess.py", 2115),
              Frame("Popen.communicate", "/usr/lib/python3.11/subprocess.py", 1209),
              Frame("run", "/usr/lib/python3.11/subprocess.py", 550)]


def printing_pdf(running_s: float, cpu_per_sample: float = 0.0) -> Snapshot:
    """The blocker's horse 19302 waits in subprocess.run on wkhtmltopdf (pid 19400)."""
    snapshot = recorded()
    run_for(snapshot, HOLD, running_s)
    snapshot.processes.append(ProcessInfo(
        pid=19400, ppid=19302, pgid=19302, sid=19302, create_time=now(snapshot) - running_s + 1,
        cmdline=["/usr/local/bin/wkhtmltopdf", "--quiet", "/tmp/wkhtmltopdf1.html", "/tmp/out.pdf"],
        status="sleeping", cpu_percent=0.0))
    stacks = next(s for s in snapshot.stacks if s.pid == 19302)
    for i, sample in enumerate(stacks.samples):
        main = next(t for t in sample.threads if t.name == "MainThread")
        main.frames = [*SUBPROCESS, *main.frames]
        sample.cpu_time = 1.0 + i * cpu_per_sample
    return snapshot


def test_rqd104_fires_recorded_incident_job_waiting_on_its_shell_child() -> None:
    # GIVEN the incident's job eca8b743: os.system("sleep 3600") in horse 18539
    snapshot = incident()
    finding = only(snapshot, "RQD104")
    assert (finding.severity, finding.subject, finding.pid) == (
        "warning", "job rqd1.localhost::eca8b743-566a-4493-a5b1-5572a161b30e", 18539)
    assert "waiting on child pid 18540: `sh -c sleep 3600`" in finding.evidence
    assert "child CPU 0 %, state sleeping" in finding.evidence
    assert finding.commands == ["kill -KILL -18539"]
    assert "subprocess.run(..., timeout=N)" in finding.fix and process_ref(process(snapshot, 18539)) in finding.fix
    assert finding.data == {"child_pid": 18540, "child_cmdline": "sh -c sleep 3600"}


def test_rqd104_fires_wkhtmltopdf_with_the_print_format_advice() -> None:
    finding = only(printing_pdf(running_s=60), "RQD104")
    assert (finding.subject, finding.pid, finding.data["child_pid"]) == (f"job {HOLD}", 19302, 19400)
    assert "waiting on child pid 19400: `/usr/local/bin/wkhtmltopdf --quiet /tmp/wkhtmltopdf1.html /tmp/out.pdf`" \
        in finding.evidence
    assert "`host_name`" in finding.fix
    assert finding.commands == ["kill -KILL -19302"]


def test_rqd104_near_miss_print_younger_than_min_age() -> None:
    # a PDF usually takes a few seconds: a 5 s wait on the child is normal
    assert findings(printing_pdf(running_s=5), "RQD104") == []


def test_rqd104_near_miss_horse_working_through_the_childs_output() -> None:
    # the same frames, but the horse uses 20 % CPU reading what the child writes: progressing, not stalled
    assert findings(printing_pdf(running_s=60, cpu_per_sample=0.08), "RQD104") == []


# --- RQD108: SimpleWorker -----------------------------------------------------------------------


def test_rqd108_fires_job_running_inside_its_worker() -> None:
    # GIVEN the short worker (pid 18619) without a work-horse: it runs its job itself
    snapshot = recorded()
    drop_processes(snapshot, 19302)
    finding = only(snapshot, "RQD108")
    assert (finding.severity, finding.subject, finding.pid, finding.worker) == (
        "warning", f"job {HOLD}", 18619, SHORT_WORKER)
    assert f"pid 18619 (worker) of worker {SHORT_WORKER}" in finding.evidence
    in_process = finding.evidence[2]
    assert in_process.startswith("the job runs inside the worker process itself") and "no work-horse" in in_process
    assert finding.commands == ["kill -TERM 18619"]
    assert process_ref(process(snapshot, 18619)) in finding.fix


def test_rqd108_near_miss_job_in_a_forked_horse() -> None:
    # the recorded bench: the same job, in work-horse 19302 of a forking worker
    assert findings(recorded(), "RQD108") == []


# --- RQD201-RQD204: workers ---------------------------------------------------------------------


def test_rqd201_fires_worker_and_horse_gone() -> None:
    # GIVEN the short worker and its horse killed; its hash still names this host and pid 18619
    snapshot = recorded()
    drop_processes(snapshot, 18619, 19302)
    finding = only(snapshot, "RQD201")
    assert (finding.severity, finding.subject, finding.pid, finding.worker) == (
        "warning", f"worker {SHORT_WORKER}", 18619, SHORT_WORKER)
    assert finding.evidence == ["Redis says pid 18619 on host vm; no such process here",
                                "process missing: no process 18619 on vm",
                                f"its current job {HOLD} stays 'started' until a cleanup runs",
                                "worker key expires in 75 s",
                                f"no process on this host runs its started job {HOLD}"]
    assert finding.remedy is not None
    assert (finding.remedy.action, finding.remedy.job_id, finding.remedy.host, finding.remedy.expected) == (
        "fail_started", HOLD, snapshot.host, "failed")
    assert finding.remedy.member == HOLD  # rq 1.15: the bare job id
    assert finding.commands == ["dmesg | grep -i -e oom -e killed",
                                supervisor_restart_workers(snapshot.target)]  # only the workers, not the web


def test_rqd201_near_miss_process_table_not_readable() -> None:
    # GIVEN the same dead-looking worker, but the process probe failed: not seeing is no verdict
    snapshot = recorded()
    drop_processes(snapshot, 18619, 19302)
    snapshot.errors.append(ProbeError("processes", "error", "the process table could not be read"))
    assert findings(snapshot, "RQD201") == []


def test_rqd201_near_miss_worker_that_registered_its_death() -> None:
    # a clean exit (`death` set) is not a crash, even with the process gone
    snapshot = recorded()
    drop_processes(snapshot, 18619, 19302)
    worker(snapshot, SHORT_WORKER).death = now(snapshot) - 5
    assert findings(snapshot, "RQD201") == []


GHOST = "9f1c2e7b4d3a4b5c8e6f0a1b2c3d4e5f"


def ghost_hash(ttl: int) -> Snapshot:
    """The recorded bench plus a worker hash with only counters (no pid, birth, hostname)."""
    snapshot = recorded()
    assert snapshot.redis is not None
    snapshot.redis.workers.append(WorkerInfo(name=GHOST, key=f"rq:worker:{GHOST}", ttl=ttl, successful_job_count=1,
                                             total_working_time=12.5))
    return snapshot


def test_rqd202_fires_persistent_partial_worker_hash() -> None:
    finding = only(ghost_hash(ttl=-1), "RQD202")
    assert (finding.severity, finding.subject, finding.worker) == ("warning", f"worker {GHOST}", GHOST)
    assert finding.evidence[0] == f"rq:worker:{GHOST} has no pid/birth and no TTL"
    assert finding.commands == [f"{REDIS_CLI} DEL rq:worker:{GHOST}", f"{REDIS_CLI} SREM rq:workers rq:worker:{GHOST}"]


def test_rqd202_near_miss_partial_hash_with_a_ttl() -> None:
    # the same partial hash with a TTL expires on its own
    assert findings(ghost_hash(ttl=60), "RQD202") == []


def test_rqd203_fires_busy_worker_heartbeat_121_s_old() -> None:
    snapshot = recorded()
    worker(snapshot, SHORT_WORKER).last_heartbeat = now(snapshot) - 121
    finding = only(snapshot, "RQD203")
    assert (finding.severity, finding.subject, finding.pid) == ("warning", f"worker {SHORT_WORKER}", 18619)
    assert finding.evidence == ["state busy, last heartbeat 121 s ago (limit 120 s)"]
    assert finding.commands == ["rqdoctor stack 18619"]


def test_rqd203_near_miss_busy_worker_heartbeat_119_s_old() -> None:
    snapshot = recorded()
    worker(snapshot, SHORT_WORKER).last_heartbeat = now(snapshot) - 119
    assert findings(snapshot, "RQD203") == []


def test_rqd203_near_miss_idle_worker_blocked_in_dequeue_for_400_s() -> None:
    # an idle worker heartbeats before each dequeue, which may block up to worker_ttl - 15 = 405 s
    snapshot = recorded()
    idle = worker(snapshot, SHORT_WORKER)
    idle.state, idle.current_job, idle.last_heartbeat = "idle", None, now(snapshot) - 400
    assert findings(snapshot, "RQD203") == []


def test_rqd204_fires_worker_set_member_without_its_key() -> None:
    snapshot = recorded()
    assert snapshot.redis is not None
    snapshot.redis.workers.append(WorkerInfo(name="gone", key="rq:worker:gone", ttl=-2, key_type="none"))
    finding = only(snapshot, "RQD204")
    assert (finding.severity, finding.subject, finding.worker) == ("info", "worker gone", "gone")
    assert finding.evidence == ["rq:workers lists rq:worker:gone but the key does not exist"]
    assert finding.commands == [f"{REDIS_CLI} SREM rq:workers rq:worker:gone"]


def test_rqd204_near_miss_worker_key_about_to_expire() -> None:
    # one second left on a live worker's key: it still exists
    snapshot = recorded()
    worker(snapshot, SHORT_WORKER).ttl = 1
    assert findings(snapshot, "RQD204") == []


# --- RQD401-RQD405: database (the firing examples are in tests/test_db_join.py) -------------------


def test_rqd401_near_miss_lock_wait_whose_victim_is_no_job() -> None:
    # GIVEN the recorded row-lock wait, but the waiting session is a `bench console`, not the job's horse
    snapshot = recorded()
    assert snapshot.database is not None
    snapshot.processes.append(ProcessInfo(
        pid=20100, ppid=1, pgid=20100, sid=20100, create_time=now(snapshot) - 600,
        cmdline=["/home/frappe/frappe-bench/env/bin/python", "-m", "frappe.utils.bench_helper", "frappe", "--site",
                 "diag.localhost", "console"]))
    victim = next(s for s in snapshot.database.sessions if s.session_id == 85)
    victim.client_pid = 20100
    # THEN no job waits (no RQD401), but the idle blocker is still named
    assert findings(snapshot, "RQD401") == []
    blocker = only(snapshot, "RQD402")
    assert (blocker.subject, blocker.commands) == ("db session 83", ["KILL 83;"])


def test_rqd403_near_miss_connection_idle_for_999_s_outside_a_transaction() -> None:
    # a pooled connection that sleeps between jobs holds no transaction and no locks
    snapshot = recorded()
    assert snapshot.database is not None
    snapshot.database.lock_waits = []
    idle: DbSession = next(s for s in snapshot.database.sessions if s.session_id == 83)
    idle.time_s, idle.trx_age_s, idle.idle_in_transaction = 999.0, None, False
    assert findings(snapshot, "RQD403") == []


def test_rqd404_near_miss_row_lock_wait() -> None:
    # the recorded wait is on a row of tabUser, not on the table's metadata
    snapshot = recorded()
    assert [f.code for f in diagnose(snapshot).findings if f.code.startswith("RQD40")] == ["RQD401", "RQD402"]
    assert findings(snapshot, "RQD404") == []


# --- RQD501-RQD504: queues and Redis ------------------------------------------------------------


def test_rqd501_fires_recorded_incident_custom_queue_nobody_listens_on() -> None:
    finding = only(incident(), "RQD501")
    assert (finding.severity, finding.subject) == ("critical", "queue home-frappe-frappe-bench:reports")
    assert finding.evidence == [
        "1 job(s) queued, 0 workers listening",
        "oldest queued job rqd1.localhost::2c6eca61-fc7f-4744-8b7a-a6ebac6b1bc3 has waited 18 s"]
    assert finding.data == {"queue": "home-frappe-frappe-bench:reports", "queued": 1}
    assert finding.commands == SUPERVISOR


def only_default_listener(alive: bool) -> Snapshot:
    """The recorded bench where only the short worker (pid 18619) listens on `default` (1 job queued)."""
    snapshot = recorded()
    worker(snapshot, LONG_WORKER).queues.remove(DEFAULT_QUEUE)
    if not alive:
        drop_processes(snapshot, 18619, 19302)
    return snapshot


def test_rqd501_fires_queue_whose_only_listener_is_dead() -> None:
    finding = only(only_default_listener(alive=False), "RQD501")
    assert (finding.severity, finding.subject) == ("critical", f"queue {DEFAULT_QUEUE}")
    assert finding.evidence == ["1 job(s) queued, 0 workers listening",
                                "oldest queued job diag.localhost::sleep-callable has waited 10 s"]
    assert finding.commands == SUPERVISOR


def test_rqd501_near_miss_queue_whose_only_listener_is_alive() -> None:
    assert findings(only_default_listener(alive=True), "RQD501") == []


def test_rqd502_fires_suspended_rq_with_the_benchs_redis_and_password_prompt() -> None:
    # GIVEN the incident bench (Redis on 16379 with a password) with rq:suspended set
    snapshot = incident()
    assert snapshot.redis is not None
    snapshot.redis.suspended = True
    finding = only(snapshot, "RQD502")
    assert (finding.severity, finding.subject) == ("critical", "redis rq:suspended")
    assert finding.evidence == ["the key rq:suspended exists (set by `rq suspend`)"]
    assert finding.commands == ["redis-cli -h 127.0.0.1 -p 16379 --askpass DEL rq:suspended"]


def test_rqd502_near_miss_resumed_but_a_worker_still_says_suspended() -> None:
    # `rq resume` deleted the key; a worker hash keeps state "suspended" until its next loop
    snapshot = recorded()
    worker(snapshot, SHORT_WORKER).state = "suspended"
    assert findings(snapshot, "RQD502") == []


def abandoned(horse_alive: bool) -> Snapshot:
    """The recorded blocker job's started-registry entry expired 120 s ago."""
    snapshot = recorded()
    job(snapshot, HOLD).registry_expires_at = now(snapshot) - 120
    if not horse_alive:
        drop_processes(snapshot, 18619, 19302)
    return snapshot


def test_rqd503_fires_expired_entry_of_a_dead_workers_job() -> None:
    finding = only(abandoned(horse_alive=False), "RQD503")
    assert (finding.severity, finding.subject, finding.job_id, finding.worker) == (
        "warning", f"job {HOLD}", HOLD, SHORT_WORKER)
    assert finding.evidence[:2] == ["started-registry entry expired 120 s ago (no heartbeat)",
                                    f"worker {SHORT_WORKER} is not running it any more"]
    assert finding.evidence[2].startswith("the 1 worker(s) listening on home-frappe-frappe-bench:short are busy")
    assert finding.remedy is not None and finding.remedy.action == "fail_started"
    assert finding.commands == []  # a worker's maintenance cleans it up; nothing to run by hand
    assert "did not complete" in finding.fix


def test_rqd503_near_miss_expired_entry_whose_horse_still_runs() -> None:
    # a late heartbeat, but horse 19302 still runs the job: not abandoned
    assert findings(abandoned(horse_alive=True), "RQD503") == []


def backlog(listening: bool) -> Snapshot:
    """The recorded `default` queue's job has waited 900 s."""
    snapshot = recorded()
    queue(snapshot, DEFAULT_QUEUE).oldest_enqueued_at = now(snapshot) - 900
    if not listening:
        for name in (SHORT_WORKER, LONG_WORKER):
            worker(snapshot, name).queues.remove(DEFAULT_QUEUE)
    return snapshot


def test_rqd504_fires_job_waiting_900_s_while_workers_listen() -> None:
    finding = only(backlog(listening=True), "RQD504")
    assert (finding.severity, finding.subject) == ("warning", f"queue {DEFAULT_QUEUE}")
    assert finding.evidence == ["1 queued, oldest waited 900 s", "2 of 2 listening workers busy"]
    assert finding.data == {"queue": DEFAULT_QUEUE, "queued": 1}
    assert finding.commands[0].startswith("rqdoctor hangs ") and finding.commands[1:] == SUPERVISOR


def test_rqd504_near_miss_backlog_no_worker_listens_to_is_rqd501() -> None:
    snapshot = backlog(listening=False)
    assert findings(snapshot, "RQD504") == []
    assert only(snapshot, "RQD501").subject == f"queue {DEFAULT_QUEUE}"
