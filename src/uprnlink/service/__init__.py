"""The query service: the analysts' only way in (tokens, roles, governed queries, audit).

`identities` (users and tokens) and `client` (a standard-library HTTP client) import without
the web stack; `app` needs the `service` extra (FastAPI, uvicorn).
"""
