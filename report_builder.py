"""Building, storing and mailing reports.

A build streams the report's rows a page at a time, hands each page to the renderer of
every format in report_formats.FORMATS, and stores what they write as compressed chunks.
The Celery tasks in tasks.py call `build_once` and `mail_once`; seed.py calls `build_report`.
Which reports a month starts with is decided in monthly_reports.py.
"""

import logging
import zlib
from datetime import datetime, timedelta

from flask import current_app, render_template
from sqlalchemy import String, and_, bindparam, select, true, type_coerce
from sqlalchemy.exc import OperationalError

import library_report
from mail import TRANSIENT_MAIL_ERRORS, absolute_url, send_mail
from models import (
    UTC,
    BookRequest,
    LostReport,
    ReportScope,
    User,
    UTCDateTime,
    db,
    plain_rows,
    utcnow,
)
from report_formats import CSV_COLUMNS, FORMATS, Summary

log = logging.getLogger(__name__)

# rows read per query: large enough to be fast, small enough to keep memory flat
ROWS_PER_PAGE = 5000
# what the patron reads on a failed report; the exception itself goes to the worker's log
BUILD_FAILED = "The report could not be built. Export it again, or ask a librarian."


class Retry(Exception):
    """A transient failure (database or mail server away): the task should run again."""


class ChunkWriter:
    """Collect text and store it as compressed chunks of about REPORT_CHUNK_BYTES each."""

    def __init__(self, report_id, format):
        self.report_id = report_id
        self.format = format
        self.limit = current_app.config["REPORT_CHUNK_BYTES"]
        self.buffer = []
        self.buffered = 0
        self.seq = 0
        self.size = 0
        # compressed chunks waiting for the next fenced write (Report.record_progress)
        self.ready = []

    def take(self):
        """Return the chunks ready to store, and forget them."""
        ready, self.ready = self.ready, []
        return ready

    def write(self, text):
        data = text.encode()
        self.buffer.append(data)
        self.buffered += len(data)
        self.size += len(data)
        if self.buffered >= self.limit:
            self.flush()

    def flush(self):
        if not self.buffer:
            return
        # level 1: most of the saving at a fraction of the time of the default
        data = zlib.compress(b"".join(self.buffer), 1)
        self.ready.append(
            {"report_id": self.report_id, "format": self.format, "seq": self.seq, "data": data}
        )
        self.seq += 1
        self.buffer = []
        self.buffered = 0


def month_bounds(month):
    """Return the first instant of `month` (YYYY-MM) and of the month after, in UTC."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


def report_filter(report):
    """The SQL condition that picks the report's requests: its owner's (or all), in its month."""
    conditions = []
    if report.scope != ReportScope.LIBRARY:
        conditions.append(BookRequest.user_id == report.user_id)
    if report.month:
        start, following = month_bounds(report.month)
        conditions += [BookRequest.request_date >= start, BookRequest.request_date < following]
    return and_(true(), *conditions)


def report_pages(report):
    """Yield the report's rows a page at a time, oldest first, as plain tuples.

    Timestamps come back as the database's text (SQLite) or naive datetimes (PostgreSQL),
    without per-value conversion; both print as "YYYY-MM-DD HH:MM:SS[.ffffff]".
    """
    columns = [
        type_coerce(column, String) if isinstance(column.type, UTCDateTime) else column
        for column in (getattr(BookRequest, name) for name in CSV_COLUMNS)
    ]
    query = select(*columns)
    if report.scope == ReportScope.LIBRARY:
        query = query.add_columns(User.username).join(User, User.id == BookRequest.user_id)
    # keyset pages: each query is short, so no cursor or transaction stays open; one
    # statement with a parameter for every page, so SQLAlchemy compiles it once
    query = (
        query.where(report_filter(report), BookRequest.id > bindparam("after"))
        .order_by(BookRequest.id)
        .limit(ROWS_PER_PAGE)
    )
    last_id = 0
    while True:
        page = plain_rows(query, {"after": last_id})
        if not page:
            return
        yield page
        last_id = page[-1][0]


def ready_chunks(outputs):
    return [chunk for _, writer in outputs for chunk in writer.take()]


def build_report(report):
    """Render every format from streamed rows, store each as chunks, mark the report done.

    Raises LostReport as soon as another build has taken the report over.
    """
    condition = report_filter(report)
    library = report.scope == ReportScope.LIBRARY
    counts = library_report.status_counts(condition)
    total = sum(counts.values())
    summary = Summary(
        report=report,
        user=db.session.get(User, report.user_id),
        condition=condition,
        counts=counts,
        total=total,
        # the library report tallies its months from the rows it streams
        monthly=[] if library else library_report.monthly_counts(condition),
        generated_at=utcnow(),
    )
    outputs = [
        (format.renderers[report.scope](summary), ChunkWriter(report.id, name))
        for name, format in FORMATS.items()
    ]
    for renderer, chunks in outputs:
        chunks.write(renderer.head)
    done = 0
    for page in report_pages(report):
        for renderer, chunks in outputs:
            chunks.write(renderer.rows(page))
        done += len(page)
        report.record_progress(done / total if total else 1.0, ready_chunks(outputs))
    for renderer, chunks in outputs:
        tail = renderer.tail
        for piece in [tail] if isinstance(tail, str) else tail:
            chunks.write(piece)
            # a long tail (the library's pending queue) is stored as it fills, fenced
            if chunks.ready:
                report.record_progress(1.0, chunks.take())
        chunks.flush()
    sizes = {chunks.format: chunks.size for _, chunks in outputs}
    report.finish(total, sizes, ready_chunks(outputs))
    log.info("report %s done: %d rows", report.id, total)


def build_once(report, task_id, redelivered=False):
    """Claim and build the report unless it is done; True when it is done and can be mailed.

    Raises Retry when the database is away; any other error fails the report for good.
    A build that was taken over stops quietly and leaves the report to its new owner.
    """
    if report.is_done:
        return True
    if not report.claim(task_id, redelivered):
        if report.give_up():
            log.error("report %s failed: gave up after %d attempts", report.id, report.attempts)
        else:
            log.info("report %s is %s elsewhere, skipping", report.id, report.status)
        return False
    try:
        build_report(report)
    except LostReport:
        log.info("report %s was taken over by another build; this one stops", report.id)
        return False
    except OperationalError as exc:
        log.warning("report %s: database unavailable, retrying: %s", report.id, exc)
        report.release()
        raise Retry() from exc
    except Exception:
        # the details are for the log; the patron sees a plain message
        log.exception("report %s failed", report.id)
        report.fail(BUILD_FAILED)
        return False
    return True


def mail_once(report):
    """Mail the finished report once; raises Retry when the mail server is away."""
    # an unverified address may be someone else's: the report is kept for download only
    if not db.session.get(User, report.user_id).email_verified:
        log.info("report %s not mailed: the owner's address is not verified", report.id)
        return
    if not report.claim_mail():
        return
    try:
        send_mail(**report_mail(report))
    except TRANSIENT_MAIL_ERRORS as exc:
        # let the retry send it; the report itself stays done and downloadable
        report.release_mail()
        log.warning("report %s: mail not sent, retrying: %s", report.id, exc)
        raise Retry() from exc


def report_mail(report):
    """Return the arguments of send_mail for a finished report, bounded in size."""
    user = db.session.get(User, report.user_id)
    limit = current_app.config["MAIL_MAX_ATTACHMENT_BYTES"]
    period = report.month or "all time"
    html, attachments = None, []
    for name, format in FORMATS.items():
        if format.mail is None or report.sizes.get(name, 0) > limit:
            continue
        data = b"".join(report.read_chunks(name))
        if format.mail == "body":
            html = data.decode()
        else:
            filename = f"report-{report.month or 'all'}.{name}"
            attachments.append((filename, data, format.content_type.split(";")[0]))
    text = render_template(
        "email/report_ready.txt",
        user=user,
        report=report,
        period=period,
        formats=FORMATS,
        report_url=absolute_url(f"/reports/{report.id}"),
        attached={filename.rsplit(".", 1)[1] for filename, _, _ in attachments},
    )
    return {
        "to": user.email,
        "subject": (
            f"Library-wide report ({period})"
            if report.scope == ReportScope.LIBRARY
            else f"Your library report ({period})"
        ),
        "text": text,
        "html": html,
        "attachments": attachments,
    }
