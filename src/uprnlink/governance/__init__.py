"""Governance: the tamper-evident audit log, retention and the IG lead's audit report."""
