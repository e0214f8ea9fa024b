"""The findings catalogue (docs/findings.md) as shipped with the package: one section per code, and where a
user can read it (``more_info``)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

PACKAGED = "findings.md"
"""The catalogue's name inside the installed package (the wheel maps docs/findings.md there)."""
CHECKOUT = Path(__file__).resolve().parent.parent / "docs" / "findings.md"
"""The catalogue in a source checkout (an editable install has no packaged copy)."""
URL_LABEL = "Findings"
"""A ``[project.urls]`` entry of this name (the catalogue page's address) makes ``more_info`` a link to it."""

SECTION = re.compile(
    r'^<a id="(?P<anchor>[^"]*)"></a>\n'
    r"## (?P<code>RQD\d{3}): (?P<title>[^\n]+) \((?P<severity>\w+)(?P<note>;[^)\n]*)?\)\n"
    r"(?P<body>.*?)(?=^<a id=|^---$|\Z)",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Entry:
    """One code's documentation: its heading's parts and its Markdown body."""

    code: str
    title: str
    severity: str
    note: str
    body: str


def text() -> str:
    """The whole catalogue (Markdown)."""
    packaged = resources.files("rqdoctor").joinpath(PACKAGED)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return CHECKOUT.read_text(encoding="utf-8")


@functools.cache
def entries() -> dict[str, Entry]:
    """Every documented code, in catalogue order."""
    return {m["code"]: Entry(m["code"], m["title"], m["severity"], (m["note"] or "").strip("; "), m["body"].strip())
            for m in SECTION.finditer(text())}


@functools.cache
def docs_url() -> str | None:
    """The catalogue page's address, when the installed package's metadata names one (``Project-URL: Findings``)."""
    try:
        urls = metadata.metadata("rqdoctor").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    return next((url.strip() for label, _, url in (u.partition(",") for u in urls) if label.strip() == URL_LABEL),
                None)


def more_info(code: str) -> str:
    """Where to read about ``code``: the catalogue page's section when the project names its address, else the
    command that prints it from the installed package."""
    url = docs_url()
    return f"{url}#{code.lower()}" if url else f"rqdoctor explain {code}"
