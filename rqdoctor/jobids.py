"""Job-id and call-string parsing: started-registry members, Frappe sites and methods.

Pure string functions, no Redis and no ``rq`` import. The shapes they handle:

- started-registry members: ``job_id`` (rq 1.x) or ``job_id:<32-hex execution id>`` (rq >= 2);
- Frappe job ids: ``<site>::<id>`` (v14/v15), ``<site>||<id>`` (v16), scheduled jobs
  ``<site>::scheduled_job::<dotted.method>`` / ``<site>||scheduled_job||<dotted.method>``;
- RQ descriptions: ``func(arg, key=value, …)`` with kwargs sorted by name and every repr cut to
  75 characters plus ``...`` (``rq.utils.get_call_string``).
"""

from __future__ import annotations

import re

_EXECUTION_ID = re.compile(r"[0-9a-fA-F]{32}")
_SITE = re.compile(r"[A-Za-z0-9_][\w.-]*")
_DOTTED = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_<>][\w<>]*)*")
_FUNCTION_REPR = re.compile(r"<function (?P<name>[\w.<>]+) at 0x[0-9a-fA-F]+>")
# A quoted repr (either quote style, with escapes), or one cut by rq: quote, text, "...".
_STRING = r"""(?P<q>['"])(?P<s>(?:(?!(?P=q))[^\\]|\\.)*?)(?:(?P=q)|(?P<cut>\.\.\.)(?=,\s|\)\s*$|\}))"""
_FRAPPE_ENTRY = "execute_job"
_SCHEDULED_ENTRY = "run_scheduled_job"
_SCHEDULED_ID = re.compile(r"scheduled_job(?:::|\|\|)(?P<method>.+)$")


def split_member(member: str) -> tuple[str, str | None]:
    """Split a started-registry (or worker executions) member into ``(job_id, execution_id)``.

    The execution id is split off the last ``:`` only when it is 32 hex digits and the job id
    does not then end in ``:`` (so a 1.x ``site::<32 hex>`` id is not cut in half).
    """
    head, sep, tail = member.rpartition(":")
    if sep and head and not head.endswith(":") and _EXECUTION_ID.fullmatch(tail):
        return head, tail
    return member, None


def site_of(job_id: str, description: str | None = None) -> str | None:
    """The Frappe site of a job: the ``site::``/``site||`` id prefix, else ``site='…'`` in the call string."""
    cuts = [i for i in (job_id.find("::"), job_id.find("||")) if i > 0]
    if cuts and _SITE.fullmatch(job_id[: min(cuts)]):
        return job_id[: min(cuts)]
    if description:
        site = _kwarg(description, "site")
        if site and not site.endswith("...") and _SITE.fullmatch(site):
            return site
    return None


def method_of(description: str | None, job_id: str | None = None) -> str | None:
    """The dotted method a job runs.

    Frappe's ``execute_job(… method='…' …)`` gives ``method`` (or ``job_name`` when ``method``
    was a function object); for scheduled jobs (``run_scheduled_job``) the real method comes from
    the ``scheduled_job::<method>`` part of ``job_id`` (never truncated) or ``job_type`` in the
    kwargs. Any other call string gives the called function's name. A value rq truncated keeps
    its trailing ``...``.
    """
    if not description or "(" not in description:
        return None
    func = description.partition("(")[0].strip()
    if not _DOTTED.fullmatch(func):
        return None
    if func.rpartition(".")[2] != _FRAPPE_ENTRY:
        return func
    method = _kwarg(description, "method")
    if method is None:
        return func
    function = _FUNCTION_REPR.fullmatch(method)
    if function:
        job_name = _kwarg(description, "job_name", last=False) or ""
        method = job_name if _DOTTED.fullmatch(job_name.removesuffix("...")) else function["name"]
    if _is_scheduled_entry(method):
        scheduled = _SCHEDULED_ID.search(job_id or "")
        if scheduled:
            return scheduled["method"]
        job_type = _dict_value(description, "job_type")
        if job_type:
            return job_type
    return method


def _is_scheduled_entry(method: str) -> bool:
    """``…run_scheduled_job``, also when rq cut it (its dotted path is exactly 75 characters)."""
    cut = method.endswith("...")
    last = method.removesuffix("...").rpartition(".")[2]
    return last == _SCHEDULED_ENTRY or (cut and len(last) >= len("run_sched") and _SCHEDULED_ENTRY.startswith(last))


def _kwarg(call: str, name: str, last: bool = True) -> str | None:
    """The value of top-level keyword ``name`` in an rq call string (unquoted when a string).

    rq sorts keyword arguments, so Frappe's ``method=`` and ``site=`` follow ``kwargs=``: the
    last match is the top-level one (and ``job_name=``, before ``kwargs=``, the first).
    """
    pattern = re.compile(rf"(?:\(|,\s){re.escape(name)}=(?:{_STRING}|(?P<raw><[^>]*>|[^,)]*))")
    matches = list(pattern.finditer(call))
    if not matches:
        return None
    return _value(matches[-1] if last else matches[0])


def _dict_value(call: str, key: str) -> str | None:
    """The string value of ``'key': '…'`` inside a dict repr of the call string."""
    match = re.search(rf"""['"]{re.escape(key)}['"]:\s*{_STRING}""", call)
    return _value(match) if match else None


def _value(match: re.Match[str]) -> str:
    if match.groupdict().get("raw") is not None:
        return match["raw"].strip()
    return match["s"] + ("..." if match["cut"] else "")
