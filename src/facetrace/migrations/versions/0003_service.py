"""service: organisations, users, tokens, cases, searches, reviews, jobs and the audit log

The tables are created from ``facetrace.service.tables`` as they stood when this revision
was written; a later change to them gets a revision of its own. The audit log is made
append-only in the database itself: triggers refuse every UPDATE and DELETE, so an edit
needs a deliberate DROP TRIGGER, and the hash chain (``facetrace audit verify``) still
shows it.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = [
    "organisation",
    "app_user",
    "api_token",
    "web_session",
    "gallery_owner",
    "gallery_grant",
    "case_file",
    "probe",
    "search_run",
    "shown_face",
    "review",
    "identification",
    "job",
    "audit_log",
    "audit_head",
]

REFUSAL = "audit_log is append-only"
HEAD_REFUSAL = "audit_head cannot be deleted"
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head "
    f"BEGIN SELECT RAISE(ABORT, '{HEAD_REFUSAL}'); END",
    f"CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
    f"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
]
POSTGRESQL_TRIGGERS = [
    f"""
    CREATE FUNCTION audit_log_refuse() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION '{REFUSAL}'; END
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse()",
    f"""
    CREATE FUNCTION audit_head_refuse() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION '{HEAD_REFUSAL}'; END
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER audit_head_keep BEFORE DELETE ON audit_head "
    "FOR EACH ROW EXECUTE FUNCTION audit_head_refuse()",
    "CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_head_refuse()",
]


def upgrade() -> None:
    from facetrace.db import Base
    from facetrace.service import tables  # noqa: F401 - registers the tables on Base

    bind = op.get_bind()
    Base.metadata.create_all(bind, tables=[Base.metadata.tables[t] for t in TABLES])
    # The chain's tip exists from the start: every write transaction locks it first.
    op.execute(f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{'0' * 64}')")
    dialect = bind.dialect.name
    for ddl in SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRESQL_TRIGGERS:
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_refuse()")
        op.execute("DROP TRIGGER IF EXISTS audit_head_keep ON audit_head")
        op.execute("DROP TRIGGER IF EXISTS audit_head_no_truncate ON audit_head")
        op.execute("DROP FUNCTION IF EXISTS audit_head_refuse()")
    for table in reversed(TABLES):
        op.drop_table(table)
