"""Probes gather read-only facts into the snapshot; they never print and never judge."""
