"""index every list's order and filter, for keyset pages

Revision ID: b5d2e8a41c07
Revises: b2c4e6f8a0d1
Create Date: 2026-11-22 04:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'b5d2e8a41c07'
down_revision = 'b2c4e6f8a0d1'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('book_request', schema=None) as batch_op:
        batch_op.create_index('ix_book_request_user_id_status_id', ['user_id', 'status', 'id'], unique=False)
        batch_op.create_index('ix_book_request_status_id', ['status', 'id'], unique=False)
        batch_op.drop_index('ix_book_request_user_id_status')

    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.create_index('ix_report_created_at_id', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_report_user_id_created_at_id', ['user_id', 'created_at', 'id'], unique=False)
        batch_op.drop_index('ix_report_user_id_created_at')


def downgrade():
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.create_index('ix_report_user_id_created_at', ['user_id', 'created_at'], unique=False)
        batch_op.drop_index('ix_report_user_id_created_at_id')
        batch_op.drop_index('ix_report_created_at_id')

    with op.batch_alter_table('book_request', schema=None) as batch_op:
        batch_op.create_index('ix_book_request_user_id_status', ['user_id', 'status'], unique=False)
        batch_op.drop_index('ix_book_request_status_id')
        batch_op.drop_index('ix_book_request_user_id_status_id')
