"""report.expired_at: when retention deleted a report's files

Revision ID: c3e9f1a7b254
Revises: c7d1e5a9b3f2
Create Date: 2026-11-22 04:30:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'c3e9f1a7b254'
down_revision = 'c7d1e5a9b3f2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expired_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.drop_column('expired_at')
