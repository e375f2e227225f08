"""The statuses a book request and a report go through, and a report's scope."""

from enum import StrEnum


class RequestStatus(StrEnum):
    # the actions that move a request between these are TRANSITIONS, in book_requests.py
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    RETURNED = "returned"


class ReportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # past REPORT_RETENTION_DAYS or beyond REPORT_MAX_PER_USER: files deleted, row kept
    EXPIRED = "expired"


class ReportScope(StrEnum):
    """Whose requests a report covers: its owner's, or the whole library's (librarians)."""

    PATRON = "patron"
    LIBRARY = "library"
