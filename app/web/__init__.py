"""The dashboard and its read-only JSON API (`arena serve`, and `arena run` unless `--no-serve`).

An entry point at the edge: it reads the database through `app.web.readmodel` and nothing in the
core or the adapters imports it.
"""
