"""Reports: the linkage quality report."""
