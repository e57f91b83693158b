"""face tally: faces per gallery and model, kept by triggers on every insert and delete

A search compares its index with this row (count and highest id) instead of counting
millions of faces. Triggers, not application code, keep it, so that a face deleted or
added behind facetrace's back (by hand, in SQL) still makes the index stale.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER face_tally_insert AFTER INSERT ON face BEGIN
        INSERT INTO face_tally (gallery_id, model, faces, max_face_id)
        VALUES (NEW.gallery_id, NEW.model, 1, NEW.id)
        ON CONFLICT (gallery_id, model) DO UPDATE
        SET faces = faces + 1, max_face_id = max(max_face_id, excluded.max_face_id);
    END
    """,
    """
    CREATE TRIGGER face_tally_delete AFTER DELETE ON face BEGIN
        UPDATE face_tally SET faces = faces - 1
        WHERE gallery_id = OLD.gallery_id AND model = OLD.model;
    END
    """,
    """
    CREATE TRIGGER face_tally_update AFTER UPDATE OF gallery_id, model, id ON face BEGIN
        UPDATE face_tally SET faces = faces - 1
        WHERE gallery_id = OLD.gallery_id AND model = OLD.model;
        INSERT INTO face_tally (gallery_id, model, faces, max_face_id)
        VALUES (NEW.gallery_id, NEW.model, 1, NEW.id)
        ON CONFLICT (gallery_id, model) DO UPDATE
        SET faces = faces + 1, max_face_id = max(max_face_id, excluded.max_face_id);
    END
    """,
]

POSTGRESQL_TRIGGERS = [
    """
    CREATE FUNCTION face_tally_keep() RETURNS trigger AS $$
    BEGIN
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            UPDATE face_tally SET faces = faces - 1
            WHERE gallery_id = OLD.gallery_id AND model = OLD.model;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO face_tally (gallery_id, model, faces, max_face_id)
            VALUES (NEW.gallery_id, NEW.model, 1, NEW.id)
            ON CONFLICT (gallery_id, model) DO UPDATE
            SET faces = face_tally.faces + 1,
                max_face_id = GREATEST(face_tally.max_face_id, excluded.max_face_id);
        END IF;
        RETURN NULL;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER face_tally_keep AFTER INSERT OR DELETE OR UPDATE OF gallery_id, model, id
    ON face FOR EACH ROW EXECUTE FUNCTION face_tally_keep()
    """,
    # TRUNCATE (also reached by TRUNCATE ... CASCADE from gallery or source_image) fires
    # no row trigger: it empties every gallery, so every count drops to zero.
    """
    CREATE FUNCTION face_tally_truncate() RETURNS trigger AS $$
    BEGIN
        UPDATE face_tally SET faces = 0;
        RETURN NULL;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER face_tally_truncate AFTER TRUNCATE ON face
    FOR EACH STATEMENT EXECUTE FUNCTION face_tally_truncate()
    """,
]


def upgrade() -> None:
    op.create_table(
        "face_tally",
        sa.Column("gallery_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("faces", sa.Integer(), nullable=False),
        sa.Column("max_face_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["gallery_id"], ["gallery.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("gallery_id", "model"),
    )
    op.create_index("ix_face_gallery_model_id", "face", ["gallery_id", "model", "id"])
    op.execute(
        "INSERT INTO face_tally (gallery_id, model, faces, max_face_id) "
        "SELECT gallery_id, model, COUNT(*), MAX(id) FROM face GROUP BY gallery_id, model"
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        triggers = SQLITE_TRIGGERS
    elif dialect == "postgresql":
        triggers = POSTGRESQL_TRIGGERS
    else:
        raise NotImplementedError(f"no face_tally triggers for {dialect}")
    for ddl in triggers:
        op.execute(ddl)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("face_tally_insert", "face_tally_delete", "face_tally_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for name in ("face_tally_keep", "face_tally_truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON face")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("face_tally")
    op.drop_index("ix_face_gallery_model_id", table_name="face")
