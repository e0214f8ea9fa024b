"""Frappe document locks and scheduled jobs, as rules and leftovers need them (pure)."""

from __future__ import annotations

import hashlib
import re

from rqdoctor.jobids import _dict_value

DOC_LOCK = re.compile(r"[0-9a-f]{56}")
"""``Document.lock()``'s file name: ``sha224("<doctype>:<name>")``; any other name is a ``filelock`` file."""
DEFAULT_LONGEST_TIMEOUT_S = 1500
"""Frappe's ``long`` queue timeout, when the bench's timeouts are unknown."""


def lock_name(doctype: str, name: str) -> str:
    """The lock file name (without ``.lock``) Frappe uses for a document (``Document.get_signature``)."""
    return hashlib.sha224(f"{doctype}:{name}".encode()).hexdigest()


def document_of(description: str | None) -> tuple[str, str] | None:
    """``(doctype, name)`` a job works on, from its call string: ``queue_action``'s ``__doctype``/``__name``,
    ``enqueue_doc``'s ``doctype``/``name``; None when it names none (or rq cut it off)."""
    if not description:
        return None
    for doctype_key, name_key in (("__doctype", "__name"), ("doctype", "name")):
        doctype, name = _dict_value(description, doctype_key), _dict_value(description, name_key)
        if doctype and name and not doctype.endswith("...") and not name.endswith("..."):
            return doctype, name
        match = re.search(rf"(?:\(|,\s){doctype_key}='([^']*)'.*?(?:,\s){name_key}='([^']*)'", description)
        if match:
            return match[1], match[2]
    return None


def longest_timeout(queue_timeouts: dict[str, int]) -> int:
    """The longest queue timeout of the bench (a lock older than this outlived any job's hard kill)."""
    return max(queue_timeouts.values(), default=DEFAULT_LONGEST_TIMEOUT_S) or DEFAULT_LONGEST_TIMEOUT_S


def scheduled_method(job_id: str) -> tuple[str, str] | None:
    """``(site, method)`` of a Frappe scheduled job id (``site::scheduled_job::m`` / ``site||scheduled_job||m``)."""
    for sep in ("::", "||"):
        site, found, method = job_id.partition(f"{sep}scheduled_job{sep}")
        if found and site and method:
            return site, method if sep == "::" else method.replace("|", ":")
    return None
