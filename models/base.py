"""The database handle, the declarative base, UTC time, and the errors business rules raise."""

import contextlib
import sqlite3
from datetime import datetime, timezone

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, TypeDecorator
from sqlalchemy.orm import DeclarativeBase


class DomainError(Exception):
    """A business rule said no; errors.py turns each kind into its HTTP status."""

    def __init__(self, message, **extra):
        super().__init__(message)
        self.message = message
        # more fields for the error body, e.g. the id of the report still in the way
        self.extra = extra


class Conflict(DomainError):
    pass


class Unavailable(DomainError):
    """Not now, but the same request may well succeed in a moment."""


class Base(DeclarativeBase):
    pass


# objects stay readable after commit: views return what they just saved without a re-read;
# code that changes rows behind the session's back calls refresh() itself
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


def plain_rows(statement, params=None):
    """Run `statement` in the session's transaction; return the driver's own row tuples.

    Only for columns the driver already returns as they are to be read (no SQLAlchemy
    result processing, so no UTCDateTime column unless it is type_coerce'd to String):
    it skips the Row object SQLAlchemy makes per row, which costs about as much as the
    read itself on a report's million rows.
    """
    result = db.session.connection().execute(statement, params or {})
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


@contextlib.contextmanager
def own_commit_on_sqlite(connection):
    """Within it, on SQLite and outside a transaction, each statement on `connection` runs
    as a statement of its own, committed as it runs (the driver's autocommit: no BEGIN of
    its own), so SQLite's write lock is taken and let go inside the statement, with the GIL
    released. Left to the driver, a BEGIN would come before it and the lock stay held until
    the COMMIT, across Python code, while every other writer polls in SQLite's busy handler.
    Elsewhere, or inside a transaction already begun, it changes nothing.
    """
    driver = connection.connection.driver_connection
    alone = isinstance(driver, sqlite3.Connection) and not driver.in_transaction
    if not alone:
        yield
        return
    previous = driver.isolation_level
    driver.isolation_level = None
    try:
        yield
    finally:
        driver.isolation_level = previous


UTC = timezone.utc


def utcnow():
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Store naive UTC (SQLite has no time zones) and hand back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    @property
    def python_type(self):
        return datetime

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None
