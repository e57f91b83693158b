"""Alembic migrations of the facetrace database (applied by ``facetrace.db.migrate``)."""
