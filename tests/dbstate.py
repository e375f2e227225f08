"""Database snapshots, for checking that a refused request changed nothing."""

from sqlalchemy import select

from models import db


def snapshot(app):
    """Every row of every table, in primary-key order."""
    with app.app_context():
        db.session.rollback()
        return {
            table.name: [
                tuple(row)
                for row in db.session.execute(
                    select(table).order_by(*table.primary_key.columns)
                ).all()
            ]
            for table in db.metadata.sorted_tables
        }
