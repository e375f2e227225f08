"""The database models and the business rules that belong to them, one module per area.

Import them from here (`from models import User, db`); the modules are:
base (db, plain row reads, UTC time, domain errors), statuses (the str enums), users, book_requests
(the status machine and the outbox), reports (report rows and their claims), report_chunks.
"""

from models.base import (
    UTC,
    Base,
    Conflict,
    DomainError,
    Unavailable,
    UTCDateTime,
    db,
    plain_rows,
    utcnow,
)
from models.book_requests import TRANSITIONS, BookRequest, OutboxMail, Transition
from models.report_chunks import ReportChunk
from models.reports import REPORT_ACTIVE_STATUSES, LostReport, Report
from models.statuses import ReportScope, ReportStatus, RequestStatus
from models.users import DUMMY_PASSWORD_HASH, User, lock_users, password_hasher, username_key

__all__ = [
    "DUMMY_PASSWORD_HASH",
    "REPORT_ACTIVE_STATUSES",
    "TRANSITIONS",
    "UTC",
    "Base",
    "BookRequest",
    "Conflict",
    "DomainError",
    "LostReport",
    "OutboxMail",
    "Report",
    "ReportChunk",
    "ReportScope",
    "ReportStatus",
    "RequestStatus",
    "Transition",
    "UTCDateTime",
    "Unavailable",
    "User",
    "db",
    "lock_users",
    "password_hasher",
    "plain_rows",
    "username_key",
    "utcnow",
]
