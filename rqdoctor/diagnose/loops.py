"""Does a loop only wait? Reads the loop source the stacks probe recorded (pure: no I/O).

A *poll loop* re-checks a condition and sleeps, and does nothing else: its statements are sleeps,
exits (``if …: return/break/raise``), plain bookkeeping (``n += 1``) and assignments whose value feeds
the checks, and at least one check calls something that is not a clock (``client.get(key)``,
``event.is_set()``). A loop that calls anything else (``cur.execute(…)``, ``sock.sendall(…)``,
``doc.insert()``) does work between its sleeps.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass

_CLOCKS = frozenset({
    "time", "monotonic", "perf_counter", "monotonic_ns", "time_ns", "now", "utcnow", "now_datetime", "len", "range",
    "int", "float", "min", "max", "abs", "bool", "str", "isinstance",
})  # fmt: skip
_SLEEPS = frozenset({"sleep"})
_LOGS = frozenset({"debug", "info", "warning", "log", "print", "log_error"})


@dataclass(frozen=True)
class Loop:
    """What a loop's source says."""

    header: str
    """Its first line, stripped."""
    poll: str | None
    """The call it re-checks, when it is a poll loop (only sleeps and re-checks); None otherwise."""
    work: str | None
    """The first statement that does something else, when there is one."""


def read_loop(lines: list[str] | None) -> Loop | None:
    """The loop described by ``Frame.loop`` lines; None when there is none or it is cut or unparsable."""
    if not lines or lines[-1] == "…":
        return None
    try:
        tree = ast.parse(textwrap.dedent("\n".join(lines)))
    except (SyntaxError, ValueError, RecursionError, SystemError, MemoryError):
        return None
    if not tree.body or not isinstance(tree.body[0], (ast.While, ast.For, ast.AsyncFor)):
        return None
    loop = tree.body[0]
    header = lines[0].strip()
    checks: list[ast.AST] = [loop.test] if isinstance(loop, ast.While) else []
    feeding: list[ast.stmt] = []
    for stmt in loop.body:
        if _is_call_of(stmt, _SLEEPS | _LOGS) or isinstance(stmt, (ast.Pass, ast.Continue)):
            continue
        if isinstance(stmt, ast.If) and _exits_only(stmt.body) and _exits_only(stmt.orelse):
            checks.append(stmt.test)
            continue
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            feeding.append(stmt)
            continue
        return Loop(header, None, ast.unparse(stmt).splitlines()[0])
    checked = {n.id for c in checks for n in ast.walk(c) if isinstance(n, ast.Name)}
    for stmt in feeding:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if _calls(stmt.value) and not names & checked:
            return Loop(header, None, ast.unparse(stmt).splitlines()[0])
        if names & checked:
            checks.append(stmt.value)  # type: ignore[arg-type]
    polls = [call for c in checks if c is not None for call in _calls(c)]
    return Loop(header, ast.unparse(polls[0]) if polls else None, None)


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _calls(node: ast.AST | None) -> list[ast.Call]:
    """Calls in ``node`` that are not clocks, conversions or sleeps, outermost first."""
    if node is None:
        return []
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and _name(n) not in _CLOCKS | _SLEEPS]


def _is_call_of(stmt: ast.stmt, names: frozenset[str]) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and _name(stmt.value) in names


def _exits_only(body: list[ast.stmt]) -> bool:
    """Statements that only leave the loop (or log, or set a flag on the way out)."""
    for stmt in body:
        if isinstance(stmt, (ast.Return, ast.Break, ast.Raise, ast.Continue, ast.Pass)) or _is_call_of(stmt, _LOGS):
            continue
        if isinstance(stmt, ast.Assign) and not _calls(stmt.value):
            continue
        return False
    return True
