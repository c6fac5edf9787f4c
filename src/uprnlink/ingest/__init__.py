"""Ingest: read extracts, check them against their contracts, standardise, quarantine."""
