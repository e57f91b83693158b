"""The multi-agency service: organisations, users, cases, two-person review and audit.

Layers, each a module: ``tables`` (the schema, migration 0003), ``auth`` (passwords,
sessions, API tokens, lock-out), ``access`` (who may see and do what), ``audit`` (the
hash-chained log), ``cases`` (cases, probes and stored searches), ``reviews`` (decisions
and two-person confirmation), ``jobs`` (background ingest), then the outside: ``http``
(the one mapping of errors to HTTP), ``api`` (REST), ``web`` (pages) and ``server``
(the FastAPI application that ``facetrace serve`` runs).
"""
