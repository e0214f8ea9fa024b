"""What a killed job may have left behind on a Frappe bench (issue 9, point 5), each with its fix (pure).

``rqdoctor.actions`` calls :func:`leftovers` after a kill, with a fresh snapshot (from
:func:`rqdoctor.collect_stuck.collect_stuck`, passing the killed job ids as ``known_ids`` so their hashes
are read directly) and the killed jobs as the earlier snapshot saw them. Unlike the RQD30x rules, no age
is required: the job is known to be dead, so what it held is left over now.

- a document lock file of the document the job worked on (from its call string) -> RQD305;
- a Scheduled Job Log row in ``Start`` of the job's scheduled job type, written since the job started -> RQD306;
- the job's hash still saying queued/started although nothing holds it (a Frappe scheduled-job id blocks
  every later run of that schedule) -> RQD304.
"""

from __future__ import annotations

from collections.abc import Iterable

from rqdoctor.diagnose.context import Context
from rqdoctor.diagnose.findings import RULES, Finding, Hit
from rqdoctor.diagnose.frappe_docs import document_of, lock_name, scheduled_method
from rqdoctor.diagnose.link import link
from rqdoctor.diagnose.rules_stuck import lock_hit, row_hit, zombie_hashes, zombie_hit
from rqdoctor.model import JobInfo, Snapshot

ROW_SLACK_S = 5.0


def leftovers(snapshot: Snapshot, job_ids: Iterable[str], killed: Iterable[JobInfo] = ()) -> list[Finding]:
    """Findings for what the jobs ``job_ids`` (as ``killed`` describes them, when given) left behind."""
    ids = set(job_ids)
    jobs = {j.job_id: j for j in killed if j.job_id in ids}
    ctx = Context(snapshot, link(snapshot))
    out: list[Finding] = []

    def stamp(code: str, hit: Hit) -> None:
        r = RULES[code]
        out.append(Finding(code, hit.severity or r.severity, r.title, hit.subject, hit.evidence, hit.fix,
                           hit.commands, hit.job_id, hit.pid, hit.worker, hit.data, hit.remedy, hit.host))

    for job, since in zombie_hashes(ctx, min_age_s=0):
        if job.job_id in ids:
            stamp("RQD304", zombie_hit(ctx, job, since))
    frappe = snapshot.frappe
    if frappe is None:
        return out
    for job_id in sorted(ids):
        job = jobs.get(job_id)
        document = document_of(job.description) if job else None
        if document is not None:
            name = lock_name(*document)
            for lock in frappe.locks:
                if lock.name == name and not lock.held_by and (job is None or job.site in (None, lock.site)):
                    stamp("RQD305", lock_hit(ctx, lock, [f"{lock.path} locks {document[0]} {document[1]}, the "
                                                         f"document killed job {job_id} worked on"]))
        site_method = scheduled_method(job_id) or ((job.site, job.method) if job and job.site and job.method else None)
        if site_method is None:
            continue
        started = job.started_at if job else None
        for row in frappe.job_log_rows:
            if (row.site, row.method) != site_method:
                continue
            run_age = snapshot.generated_at - started if started is not None else None
            if run_age is not None and row.age_s is not None and row.age_s > run_age + ROW_SLACK_S:
                continue  # older than the killed run: not its row
            stamp("RQD306", row_hit(ctx, row, [f"Scheduled Job Log {row.name} ({row.scheduled_job_type}) on site "
                                               f"{row.site} says Start since {row.creation} (site time): the run of "
                                               f"killed job {job_id}"]))
    return out
