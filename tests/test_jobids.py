"""Job-id and call-string parsing (pure units)."""

from __future__ import annotations

import pytest

from rqdoctor.jobids import method_of, site_of, split_member

EXEC = "14e0ced5d36840aaa7ad864d1a0e41ee"
FRAPPE = "frappe.utils.background_jobs.execute_job"
SCHEDULED = "frappe.core.doctype.scheduled_job_type.scheduled_job_type.run_scheduled_job"


def frappe_call(method: str, kwargs: str = "{}", job_name: str | None = None, site: str = "site1.local") -> str:
    """A description exactly as rq renders Frappe's enqueue (kwargs sorted, reprs cut at 75)."""
    def cut(text: str) -> str:
        return text[:75] + "..." if len(text) > 75 else text
    name = cut(repr(job_name)) if job_name else (method if method.startswith("<") else cut(repr(method)))
    shown = method if method.startswith("<") else cut(repr(method))
    return (f"{FRAPPE}(event=None, is_async=True, job_name={name}, kwargs={cut(kwargs)}, "
            f"method={shown}, site={site!r}, user='Administrator')")


@pytest.mark.parametrize(("member", "expected"), [
    ("b4f9b586-2b8e-4a42-9a1e-6f0e0dfaa792", ("b4f9b586-2b8e-4a42-9a1e-6f0e0dfaa792", None)),  # rq 1.x uuid
    (f"e3ec7292-0d1e-4e55-a7b4-8e9c2f1beca0:{EXEC}", ("e3ec7292-0d1e-4e55-a7b4-8e9c2f1beca0", EXEC)),
    (f"abc:{EXEC}", ("abc", EXEC)),
    (f"abc:{EXEC.upper()}", ("abc", EXEC.upper())),
    ("site1.local::abc", ("site1.local::abc", None)),  # Frappe v15, rq 1.x
    (f"site1.local::abc:{EXEC}", ("site1.local::abc", EXEC)),
    ("s1::scheduled_job::frappe.email.queue.flush", ("s1::scheduled_job::frappe.email.queue.flush", None)),
    (f"site1.local||scheduled_job||frappe.email.queue.flush:{EXEC}",
     ("site1.local||scheduled_job||frappe.email.queue.flush", EXEC)),  # Frappe v16, rq 2.x
    (f"site1.local||abc:{EXEC}", ("site1.local||abc", EXEC)),
    (f"site1.local::{EXEC}", (f"site1.local::{EXEC}", None)),  # 1.x id ending in 32 hex after "::"
    (f"site1.local::x:{EXEC}"[:-1], (f"site1.local::x:{EXEC}"[:-1], None)),  # 31 hex: not an execution
    (f"abc:{EXEC}0", (f"abc:{EXEC}0", None)),  # 33 hex
    (f"abc:{EXEC[:-1]}g", (f"abc:{EXEC[:-1]}g", None)),  # not hex
    (f":{EXEC}", (f":{EXEC}", None)),  # nothing before the colon
    ("a.b.c", ("a.b.c", None)),
    ("", ("", None)),
])
def test_split_member(member: str, expected: tuple[str, str | None]) -> None:
    assert split_member(member) == expected


@pytest.mark.parametrize(("job_id", "description", "expected"), [
    ("site1.local::0b7e2c4a-1d5f-4c1e-9d8a-3f2b1a0c9e8d", None, "site1.local"),
    ("site1.local::scheduled_job::frappe.email.queue.flush", None, "site1.local"),
    ("erp.example.com||scheduled_job||frappe.email.queue.flush", None, "erp.example.com"),
    ("site1.local||a|b", None, "site1.local"),  # v16 turns ':' of user ids into '|'
    ("diag.localhost::holdlock", frappe_call("x.y", site="other.site"), "diag.localhost"),  # the id wins
    ("0b7e2c4a-1d5f-4c1e-9d8a-3f2b1a0c9e8d", frappe_call("x.y", site="v14.site"), "v14.site"),  # v14 bare uuid
    ("0b7e2c4a", "myjobs.sleepy(120, site='s.local')", "s.local"),
    ("0b7e2c4a", "myjobs.sleepy(120)", None),
    ("0b7e2c4a", None, None),
    ("::abc", None, None),
    ("has space::abc", None, None),
    ("0b7e2c4a", "custom description without a call", None),
])
def test_site_of(job_id: str, description: str | None, expected: str | None) -> None:
    assert site_of(job_id, description) == expected


LONG = "erpnext.accounts.doctype.process_statement_of_accounts.process_statement_of_accounts.send_emails"


@pytest.mark.parametrize(("description", "job_id", "expected"), [
    (frappe_call("hangjobs.jobs.hold_lock", "{'seconds': 900}"), None, "hangjobs.jobs.hold_lock"),
    # the recorded Frappe 15.54.1 job enqueued with a function object: job_name has module.qualname
    (f"{FRAPPE}(event=None, is_async=True, job_name='diaghang.quick', kwargs={{'x': '2'}}, "
     "method=<function quick at 0x7f427f1dc0e0>, site='diag.localhost', user='Administrator')", None,
     "diaghang.quick"),
    (frappe_call("<function quick at 0x7f427f1dc0e0>"), None, "quick"),  # no job_name: the function name
    # run_scheduled_job's path is 75 characters, so rq always cuts its repr: still recognised
    (frappe_call(SCHEDULED, "{'job_type': 'frappe.email.queue.flush'}"), None, "frappe.email.queue.flush"),
    (frappe_call(SCHEDULED, "{'job_type': 'frappe.email.queue.flush'}"),
     "site1.local::scheduled_job::frappe.email.queue.flush", "frappe.email.queue.flush"),
    # a long job_type is cut by rq; the scheduled job id still has it whole
    (frappe_call(SCHEDULED, repr({"job_type": LONG})), f"site1.local::scheduled_job::{LONG}", LONG),
    (frappe_call(SCHEDULED, repr({"job_type": LONG})), f"site1.local||scheduled_job||{LONG}", LONG),
    (frappe_call(SCHEDULED, repr({"job_type": LONG})), "site1.local::abc", LONG[:61] + "..."),
    (frappe_call(LONG), None, LONG[:74] + "..."),  # a long method is cut too, and says so
    # a kwargs value that looks like a keyword argument must not fool the parser
    (frappe_call("real.method", repr({"note": "x, method='fake.method', site='evil'"})), None, "real.method"),
    (frappe_call("real.method", repr({"sql": 'a "quoted" it\'s'})), None, "real.method"),
    ("myjobs.sleepy(120, payload=Payload('x'))", None, "myjobs.sleepy"),
    ("rqdoctor.scenarios.sleep_for(seconds=60)", None, "rqdoctor.scenarios.sleep_for"),
    ("mod.Outer.<locals>.inner()", None, "mod.Outer.<locals>.inner"),
    ("free text description", None, None),
    ("not a call (really)", None, None),
    ("", None, None),
    (None, None, None),
])
def test_method_of(description: str | None, job_id: str | None, expected: str | None) -> None:
    assert method_of(description, job_id) == expected


def test_site_of_truncated_site_is_ignored() -> None:
    site = "a" * 80 + ".local"
    description = f"x.y(site={repr(site)[:75]}...)"
    assert site_of("0b7e2c4a", description) is None
