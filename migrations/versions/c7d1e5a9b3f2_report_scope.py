"""report scope (a patron's own requests or the whole library's); the pending queue's index

Revision ID: c7d1e5a9b3f2
Revises: 29711e9cd602
Create Date: 2026-11-22 04:20:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c7d1e5a9b3f2"
down_revision = "29711e9cd602"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=10), server_default="patron", nullable=False)
        )
    with op.batch_alter_table("book_request", schema=None) as batch_op:
        batch_op.create_index(
            "ix_book_request_status_request_date_id", ["status", "request_date", "id"], unique=False
        )


def downgrade():
    with op.batch_alter_table("book_request", schema=None) as batch_op:
        batch_op.drop_index("ix_book_request_status_request_date_id")
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.drop_column("scope")
