"""report files by format: report_chunk.kind becomes format, sizes in one JSON column

Revision ID: b2c4e6f8a0d1
Revises: 7f3878f41abb
Create Date: 2026-11-22 04:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b2c4e6f8a0d1'
down_revision = '7f3878f41abb'
branch_labels = None
depends_on = None

report = sa.table(
    'report',
    sa.column('id', sa.String),
    sa.column('html_size', sa.Integer),
    sa.column('csv_size', sa.Integer),
    sa.column('sizes', sa.JSON),
)


def upgrade():
    with op.batch_alter_table('report_chunk', schema=None) as batch_op:
        batch_op.alter_column('kind', new_column_name='format', existing_type=sa.String(length=4), existing_nullable=False)

    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sizes', sa.JSON(), nullable=True))
    # a size per format, from the one column each format used to have
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(report.c.id, report.c.html_size, report.c.csv_size).where(report.c.html_size.is_not(None))
    ).all()
    for report_id, html_size, csv_size in rows:
        connection.execute(
            report.update().where(report.c.id == report_id).values(sizes={'html': html_size, 'csv': csv_size})
        )
    connection.execute(report.update().where(report.c.sizes.is_(None)).values(sizes={}))
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.alter_column('sizes', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('csv_size')
        batch_op.drop_column('html_size')


def downgrade():
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.add_column(sa.Column('html_size', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('csv_size', sa.Integer(), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.select(report.c.id, report.c.sizes)).all()
    for report_id, sizes in rows:
        if sizes:
            connection.execute(
                report.update()
                .where(report.c.id == report_id)
                .values(html_size=sizes.get('html'), csv_size=sizes.get('csv'))
            )
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.drop_column('sizes')

    with op.batch_alter_table('report_chunk', schema=None) as batch_op:
        batch_op.alter_column('format', new_column_name='kind', existing_type=sa.String(length=4), existing_nullable=False)
