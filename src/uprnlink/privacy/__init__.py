"""Privacy: the keys, keyed pseudonymisation and the trusted zone's records."""
