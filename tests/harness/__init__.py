"""Integration-test harness: rq venvs, Frappe-like benches, real worker processes."""
