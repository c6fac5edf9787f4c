"""Prefect flows (thin): each task wraps one library call."""
