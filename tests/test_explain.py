"""``rqdoctor explain CODE``: the catalogue section, from the installed package, in every format."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from rich.console import Console

from rqdoctor import catalogue
from rqdoctor.commands.explain import explain_report
from rqdoctor.commands.options import Format
from rqdoctor.diagnose.findings import RULES, Finding
from rqdoctor.render.formats import renderer

ROOT = Path(__file__).resolve().parent.parent


def rqdoctor(*args: str, cwd: Path = ROOT, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "100", "PATH": "/usr/bin:/bin", **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    return subprocess.run([sys.executable, "-m", "rqdoctor", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd)


@pytest.mark.unit
def test_every_registered_code_is_explained_in_every_format() -> None:
    codes = set(RULES)
    assert codes <= set(catalogue.entries())
    for code in codes:
        for fmt in Format:
            out = io.StringIO()
            renderer(fmt)(explain_report(catalogue.entries()[code]), Console(file=out, width=100, color_system=None))
            assert code in out.getvalue() and "What it means" in out.getvalue(), (code, fmt)


@pytest.mark.unit
def test_more_info_is_the_explain_command_without_a_project_url() -> None:
    assert catalogue.docs_url() is None  # pyproject.toml names no catalogue page (see docs/json.md)
    assert Finding("RQD401", "critical", "t", "s").more_info == "rqdoctor explain RQD401"


@pytest.mark.unit
def test_the_wheel_maps_the_catalogue_into_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"] == {
        "docs/findings.md": f"rqdoctor/{catalogue.PACKAGED}"}


@pytest.mark.cli
def test_explain_prints_the_section_and_refuses_an_unknown_code(tmp_path: Path) -> None:
    run = rqdoctor("explain", "rqd401", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("RQD401: Job waits on a database lock (critical)")
    assert "End the blocker, not the victim" in " ".join(run.stdout.split())
    data = json.loads(rqdoctor("explain", "RQD401", "--format", "json").stdout)
    assert (data["code"], data["severity"], data["more_info"]) == ("RQD401", "critical", "rqdoctor explain RQD401")
    unknown = rqdoctor("explain", "RQD999")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert len(unknown.stderr.splitlines()) == 1
    assert unknown.stderr.startswith("rqdoctor: error: unknown finding code 'RQD999'; the known ones: RQD101")


@pytest.mark.cli
@pytest.mark.slow
def test_explain_from_the_built_wheel(tmp_path: Path) -> None:
    # GIVEN the wheel, unpacked away from the source tree (no docs/ next to it)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("rqdoctor-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        assert f"rqdoctor/{catalogue.PACKAGED}" in z.namelist()
        z.extractall(tmp_path / "site")
    # WHEN explain runs from it THEN it reads the packaged catalogue
    run = rqdoctor("explain", "RQD202", cwd=tmp_path, pythonpath=str(tmp_path / "site"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("RQD202: Ghost worker")
    where = subprocess.run([sys.executable, "-c", "from importlib import resources; "
                            "print(resources.files('rqdoctor').joinpath('findings.md').is_file())"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env={"PYTHONPATH": str(tmp_path / "site")})
    assert where.stdout.strip() == "True"
