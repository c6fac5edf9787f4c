"""Households: residence timelines and the analysis tables built on them."""
