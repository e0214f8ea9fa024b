"""Diagnosis: pure functions from a snapshot to findings."""
