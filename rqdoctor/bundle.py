"""Writing a ``rqdoctor report`` bundle safely: owner-only files, secrets masked, hostnames and IPs masked on
request, each by the same token everywhere in the bundle."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rqdoctor.errors import RqdoctorError
from rqdoctor.redact import MASK, is_secret_name, redact_text

HOST_KEYS = frozenset({"host", "hostname", "db_host", "client_host", "remote_host", "peer_host"})
"""JSON keys whose string values name a host."""
URL_KEYS = frozenset({"redis_url", "server", "url", "db_urls"})
"""JSON keys whose string values are URLs naming a host."""
SITE_KEYS = frozenset({"site"})
"""Frappe site names: domain names, masked as hosts."""
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
KEPT = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})
"""Names that identify nothing: never masked."""


def scrub(value: Any) -> Any:
    """A JSON-like value with its secrets masked: in every string, and the whole string under a secret-looking key
    (the probes mask at the source; this is the last pass before a file is written, for what a saved snapshot
    brought along)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: MASK if isinstance(v, str) and v and is_secret_name(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


class HostMasker:
    """Hostnames, Frappe site names (domain names) and IP addresses as ``host-1``, ``site-1``, ``ip-1``…: one token
    per name, the same wherever it occurs."""

    def __init__(self, data: Any) -> None:
        self.tokens: dict[str, str] = {}
        for name, kind in self._names(data):
            if name not in self.tokens and name.lower() not in KEPT:
                kind = "ip" if _is_ip(name) else kind
                self.tokens[name] = f"{kind}-{sum(1 for t in self.tokens.values() if t.startswith(kind + '-')) + 1}"
        names = sorted(self.tokens, key=len, reverse=True)  # "a.b.example" before "b.example"
        self._pattern = re.compile("|".join(rf"(?<![\w.-]){re.escape(n)}(?![\w-]|\.\w)" for n in names)) \
            if names else None

    def _names(self, value: Any, key: str = "") -> Iterable[tuple[str, str]]:
        """(name, kind) of every host, site and IP address in ``value``, in order."""
        if isinstance(value, dict):
            for k, v in value.items():
                yield from self._names(v, k)
        elif isinstance(value, list):
            for v in value:
                yield from self._names(v, key)
        elif isinstance(value, str):
            if key in HOST_KEYS or key in SITE_KEYS:
                yield value, "host" if key in HOST_KEYS else "site"
            elif key in URL_KEYS:
                host = _url_host(value)
                if host:
                    yield host, "host"
            yield from ((m.group(), "ip") for m in IPV4.finditer(value) if _is_ip(m.group()))

    def text(self, text: str) -> str:
        """``text`` with every known name replaced by its token."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.tokens[m.group()], text)

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string masked (keys too: some maps are keyed by host)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _url_host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def bundle_paths(output: Path, suffix: str) -> tuple[Path, Path]:
    """(report, JSON) paths: inside ``output`` when it is a directory or has no suffix (created owner-only),
    else ``output`` itself and the JSON beside it."""
    if output.is_dir() or not output.suffix:
        try:
            output.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RqdoctorError(f"{output}: cannot create the directory ({exc.strerror or exc})") from None
        return output / f"report{suffix}", output / "report.json"
    if output.suffix == ".json":
        raise RqdoctorError(f"{output}: the report is {suffix}; its JSON is written beside it",
                            f"give --output {output.with_suffix(suffix)} or a directory")
    return output, output.with_suffix(".json")


def write_private(path: Path, body: str) -> None:
    """Create ``path`` readable and writable by its owner only; an existing file is never overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise RqdoctorError(f"{path}: already exists; rqdoctor does not overwrite a report",
                            "give another --output") from None
    except OSError as exc:
        raise RqdoctorError(f"{path}: cannot write ({exc.strerror or exc})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)  # whatever the umask
        f.write(body)
