"""Publish: the de-identified dataset, the analyst database, disclosure control, releases and governed access."""
