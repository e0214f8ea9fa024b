"""Masking of secrets at the boundary: URLs, call strings, locals, SQL text."""

from __future__ import annotations

import re

MASK = "***"

SECRET_NAME = re.compile(
    r"(pass(word|wd|phrase)?(?![a-z])|password|pwd|secret|token|api[_-]?key|apikey|auth(?!or(?!iz))|credential"
    r"|(private|encryption)[_-]?key|signature|session[_-]?id|cookie)",
    re.IGNORECASE,
)
"""A key, keyword argument or variable name whose value must never be shown (not ``author``, ``passenger``)."""

# name= / 'name': / "name": / `name`= inside a repr'd call string, dict repr, SQL or free text.
# Each starts only where a word starts (the lookbehinds): otherwise every position of one long word is tried
# again to its end, quadratic in its length (a 200 kB job description took minutes).
_KEY = re.compile(r"""(?P<q>['"`]?)(?<![\w-])-*(?P<name>[A-Za-z_][\w-]*)(?P=q)\s*[=:]\s*""")
# A string literal's prefix (b'', r'', f'', rb''…): part of the value.
_STRING_PREFIX = re.compile(r"""[bBrRuUfF]{1,2}(?=['"])""")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_RQ_CUT = re.compile(r"\.\.\.(?=, [A-Za-z_]\w*=|\)\s*$)")
"""rq's mark of a repr it cut to 75 characters, where the next keyword argument (or the call's end) follows."""

# The password runs to the last ``@`` before any whitespace: unencoded ``/ # ?`` (``u:pa/ss#x@host``) end the
# authority for urllib and redis-py, not for the person who wrote it, so they are masked as password too.
_URL_PASSWORD = re.compile(r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@",
                           re.IGNORECASE)
_URL_DELIMITERS = frozenset("/?#")

_QUERY_SECRET = re.compile(r"([?&](\w+)=)([^&\s]*)")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")

_SQL_PASSWORD = re.compile(
    r"(IDENTIFIED\s+(?:(?:WITH|VIA)\s+\w+\s+)?(?:BY|USING)\s+(?:PASSWORD\s*\(?\s*)?"
    r"|SET\s+PASSWORD(?:\s+FOR\s+\S+)?\s*=\s*(?:PASSWORD\s*\(\s*)?|\bPASSWORD(?:\s*[(=]\s*|\s+))"
    r"('(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\")",
    re.IGNORECASE,
)
"""``IDENTIFIED BY 'x'``, ``SET PASSWORD … = 'x'``, ``PASSWORD('x')``, PostgreSQL ``[WITH] PASSWORD 'x'``."""

_SQL_LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'")
_FRAPPE_AUTH_TABLE = re.compile(r"\b__Auth\b", re.IGNORECASE)
"""Frappe's password table: every literal of a query on it may be a (hashed or encrypted) password."""


def is_secret_name(name: str) -> bool:
    """True when a key or variable name looks like it holds a secret."""
    return bool(SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """Mask the password of a URL (``redis://:pw@host`` -> ``redis://:***@host``) and ``password=`` query values."""
    url = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + (MASK if is_secret_name(m.group(2)) else m.group(3)), url)


def shown_url(url: str) -> str:
    """``url`` as an error message may show it: :func:`redact_url`, or ``***`` when an ``@`` remains outside the
    ``scheme://user:password@`` form (``user:pw@host``, no scheme), where the password cannot be told apart."""
    redacted = redact_url(url)
    return MASK if "@" in url and redacted == url else redacted


def password_needs_encoding(url: str) -> bool:
    """True when the password of ``scheme://user:password@host`` holds an unencoded ``/``, ``?`` or ``#``.

    URL parsers end the host there, so pieces of the password would be read as host, port or path
    (``redis://:12#x@h`` connects to port 12): such a URL must be refused, not parsed.
    """
    match = _URL_PASSWORD.match(url.strip())
    return match is not None and not _URL_DELIMITERS.isdisjoint(match["pw"])


def redact_reason(exc: BaseException) -> str:
    """An exception's text on one line with every quoted value masked.

    URL parsers quote the piece they reject (``Port could not be cast to integer value as 'pa'``),
    which may be part of a password; the URL itself is shown with :func:`redact_url` instead.
    """
    return redact_text(_QUOTED.sub(repr(MASK), " ".join(str(exc).split()))) or type(exc).__name__


def redact_text(text: str) -> str:
    """Mask ``secret_name=value`` pairs, URL passwords and SQL password literals in free text."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _SQL_PASSWORD.sub(lambda m: f"{m.group(1)}'{MASK}'", text)
    if _FRAPPE_AUTH_TABLE.search(text):
        text = _SQL_LITERAL.sub(repr(MASK), text)

    out: list[str] = []
    pos = 0
    for match in _KEY.finditer(text):
        if match.start() < pos or not is_secret_name(match["name"]):
            continue
        value_end = _value_end(text, match.end())
        if value_end == match.end():
            continue
        out.append(text[pos : match.end()])
        out.append(repr(MASK))
        pos = value_end
    out.append(text[pos:])
    return "".join(out)


def _value_end(text: str, start: int) -> int:
    """End of the value starting at ``start``: a (prefixed, triple-)quoted string, a bracketed group,
    or a bare token with any call or subscript after it (``Decimal('1')``, ``env['X']``).

    A value rq cut in a call string (``'abc...``, ``{'k': [1, 2...``) ends at its ``...`` when the
    next keyword argument or the closing parenthesis follows.
    """
    if start >= len(text):
        return start
    prefix = _STRING_PREFIX.match(text, start)
    if prefix:
        start = prefix.end()
    first = text[start]
    if first in "'\"":
        return _string_end(text, start)
    if first in _OPEN:
        depth, i = 0, start
        while i < len(text):
            ch = text[i]
            if _RQ_CUT.match(text, i):
                return i + 3
            if ch in "'\"":
                i = _string_end(text, i)
                if text.endswith("...", 0, i) and _RQ_CUT.match(text, i - 3):
                    return i
                continue
            if ch in _OPEN:
                depth += 1
            elif ch in _OPEN.values():
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return len(text)
    i = start
    while i < len(text) and text[i] not in ",)}] \t\n&;'\"([{":
        i += 1
    if i > start and i < len(text) and text[i] in _OPEN:
        return _value_end(text, i)
    return i


def _string_end(text: str, start: int) -> int:
    """End of the string literal opening at ``start`` (escapes, SQL's doubled quotes, rq's cut)."""
    first = text[start]
    quote = first * 3 if text.startswith(first * 3, start) else first
    i = start + len(quote)
    while i < len(text):
        if _RQ_CUT.match(text, i):
            return i + 3
        if text[i] == "\\":
            i += 1 if _RQ_CUT.match(text, i + 1) else 2  # rq may cut an escape in two
        elif len(quote) == 1 and text.startswith(first * 2, i):
            i += 2  # SQL's doubled quote: 'it''s'
        elif text.startswith(quote, i):
            return i + len(quote)
        else:
            i += 1
    return len(text)


def redact_mapping(values: dict[str, str]) -> dict[str, str]:
    """Mask values whose names look secret, and secrets embedded in the others."""
    return {k: (MASK if is_secret_name(k) else redact_text(v)) for k, v in values.items()}
