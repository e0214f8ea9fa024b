"""Which target interpreters the installed py-spy reads (preflight), pure: versions are given, no py-spy runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from rqdoctor import preflight
from rqdoctor.deadline import Deadline
from rqdoctor.preflight import FAIL, OK, check_py_spy, interpreter_checks, release_reading

pytestmark = pytest.mark.unit


def test_a_314_target_with_an_older_py_spy_is_a_failed_line_with_the_fix() -> None:
    (check,) = interpreter_checks({"3.14": [41, 42]}, (0, 4, 0), "worker process(es)")
    assert (check.status, check.fix) == (FAIL, ["pip install -U 'py-spy>=0.4.2'"])
    assert "2 worker process(es) run Python 3.14" in check.detail and "reads up to 3.13" in check.detail


def test_a_313_target_needs_0_4_0_and_the_pinned_py_spy_reads_both() -> None:
    (check,) = interpreter_checks({"3.13": [7]}, (0, 3, 14), "worker process(es)")
    assert (check.status, check.fix) == (FAIL, ["pip install -U 'py-spy>=0.4.0'"])
    checks = interpreter_checks({"3.13": [7], "3.14": [8]}, (0, 4, 2), "worker process(es)")
    assert [c.status for c in checks] == [OK, OK]


def test_release_reading() -> None:
    assert (release_reading((3, 11)), release_reading((3, 12)), release_reading((3, 14))) == ("0.3.14", "0.4.0",
                                                                                              "0.4.2")
    assert release_reading((3, 15)) is None


def test_the_py_spy_line_says_which_interpreters_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "find_py_spy", lambda: "/usr/bin/py-spy")
    monkeypatch.setattr(preflight, "py_spy_version", lambda deadline: (0, 4, 2))
    check = check_py_spy(Deadline(5))
    assert check.status == OK and check.detail.endswith("reads CPython up to 3.14")
    monkeypatch.setattr(preflight, "py_spy_version", lambda deadline: (0, 3, 1))
    check = check_py_spy(Deadline(5))
    assert check.status == FAIL and check.fix == ["pip install -U 'py-spy>=0.4.2'"]


def test_the_package_requires_the_py_spy_that_reads_314() -> None:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "py-spy>=0.4.2" in project["dependencies"]
