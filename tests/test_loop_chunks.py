"""The loop around a frame, found by parsing only the top-level statement around it, equals the whole file's answer.

``probes.stacks`` parses the ``def``/``class`` statement around a frame's line instead of the whole module
(10-40 x faster). Checked here on real sources (the standard library's and the installed drivers' modules
that hung jobs wait in), at every line where a statement or expression starts (where a frame can be), and on
the layouts that make the column-0 scan stop early: strings holding column-0 code, black's ``) -> None:``,
decorators, methods, module-level loops.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from rqdoctor.probes import stacks

MODULES = ("socket", "ssl", "selectors", "subprocess", "threading", "queue", "http.client", "urllib.request",
           "asyncio.base_events", "concurrent.futures._base", "json.decoder", "email.message",
           "pymysql.connections", "psycopg.connection", "redis.connection", "redis.client", "psutil._pslinux",
           "rich.console", "rqdoctor.scenarios")


def _code_lines(tree: ast.Module) -> list[int]:
    return sorted({n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt | ast.expr)})


def _chunked(path: str, lines: list[str], line: int,
             trees: dict[tuple[str, int], tuple[int, ast.Module | None]]) -> tuple[tuple[int, int, bool] | None, int]:
    """The innermost block by the chunked parse, in file lines, and the offset used (0: whole file)."""
    offset, tree = stacks._tree_around(path, lines, line, trees)
    block = None if tree is None else stacks._innermost_block(tree, line - offset)
    return (None if block is None else (block[0] + offset, block[1] + offset, block[2])), offset


def _compare(path: str, text: str) -> tuple[int, int]:
    """(lines compared, lines answered from a chunk); asserts every answer equals the whole file's."""
    lines = text.splitlines()
    whole = ast.parse(text)
    trees: dict[tuple[str, int], tuple[int, ast.Module | None]] = {}
    chunked = 0
    code = _code_lines(whole)
    for line in code:
        block, offset = _chunked(path, lines, line, trees)
        assert block == stacks._innermost_block(whole, line), f"{path}:{line}"
        chunked += offset > 0
    return len(code), chunked


@pytest.mark.parametrize("name", MODULES)
def test_chunked_parse_agrees_with_the_whole_file_on_real_modules(name: str) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.skip(f"{name} is not installed")
    compared, chunked = _compare(spec.origin, Path(spec.origin).read_text())
    assert compared > 50
    assert chunked > compared // 2, "most lines are in functions: the chunk must serve most of them"


LAYOUTS = '''\
import time

TEMPLATE = """
def fake():
    while True:
        pass
"""


@decorator
@other(
    arg=1,
)
def decorated(
    a: int,
) -> None:
    while a:
        time.sleep(1)


class Worker:
    doc = """
class Fake:
    pass
"""

    def poll(self) -> None:
        for _ in range(3):
            time.sleep(0.1)
        text = """
x
"""
        while True:
            time.sleep(0.2)


while True:
    time.sleep(5)
'''


def test_layouts_that_stop_the_scan_early_still_give_the_whole_files_answer() -> None:
    compared, chunked = _compare("/layouts.py", LAYOUTS)
    assert compared > 15 and chunked > 0


def test_a_chunk_is_used_for_a_method_and_the_whole_file_for_module_code() -> None:
    lines = LAYOUTS.splitlines()
    trees: dict[tuple[str, int], tuple[int, ast.Module | None]] = {}
    sleep_in_decorated = lines.index("        time.sleep(1)") + 1
    block, offset = _chunked("/layouts.py", lines, sleep_in_decorated, trees)
    assert offset > 0 and block == (sleep_in_decorated - 1, sleep_in_decorated, True)
    module_sleep = lines.index("    time.sleep(5)") + 1
    block, offset = _chunked("/layouts.py", lines, module_sleep, trees)
    assert offset == 0 and block == (module_sleep - 1, module_sleep, True)
    # the scan up from the last loop of ``poll`` stops at the column-0 end of a string: no ``def`` or ``class``
    # starts there, so the whole file answers
    last_sleep = lines.index("            time.sleep(0.2)") + 1
    block, offset = _chunked("/layouts.py", lines, last_sleep, trees)
    assert offset == 0 and block == (last_sleep - 1, last_sleep, True)


def test_a_line_past_the_end_of_the_file_falls_back_to_the_whole_file() -> None:
    """A source file shortened on disk since the process loaded it: no chunk, no IndexError."""
    lines = LAYOUTS.splitlines()
    trees: dict[tuple[str, int], tuple[int, ast.Module | None]] = {}
    offset, tree = stacks._tree_around("/layouts.py", lines, len(lines) + 40, trees)
    assert offset == 0 and tree is not None and stacks._top_level_statement(lines, 0) == (None, 0)
