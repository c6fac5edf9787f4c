"""Linkage: the Splink model, its backends, clustering, thresholds and stable ids."""
