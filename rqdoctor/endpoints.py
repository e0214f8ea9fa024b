"""``host:port`` of the services rqdoctor knows, written the way psutil writes connections (pure)."""

from __future__ import annotations

from urllib.parse import urlsplit

from rqdoctor.redact import password_needs_encoding


def address(host: str, port: int) -> str:
    """``host:port`` (``[ip6]:port``), ``localhost`` written as ``127.0.0.1``."""
    host = "127.0.0.1" if host == "localhost" else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redis_host_port(url: str) -> tuple[str, int] | None:
    """Host and port of a ``redis://`` / ``rediss://`` URL (None for a unix socket or an unusable URL)."""
    if password_needs_encoding(url):
        return None  # its "host" and "port" would be pieces of the password
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        return None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return None
    return parts.hostname, port


def redis_address(url: str) -> str | None:
    """:func:`address` of a Redis URL."""
    found = redis_host_port(url)
    return address(*found) if found else None
