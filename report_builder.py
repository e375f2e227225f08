"""Building, rendering and storing reports, and the one table of report formats.

A build streams the report's rows a page at a time, hands each page to the renderer of
every format in FORMATS, and stores what they write as compressed chunks. The Celery
tasks in tasks.py call `build_once` and `mail_once`; seed.py calls `build_report`.
"""

import csv
import io
import logging
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from flask import current_app, render_template
from markupsafe import Markup
from sqlalchemy import String, and_, func, select, type_coerce
from sqlalchemy.exc import IntegrityError, OperationalError

from mail import TRANSIENT_MAIL_ERRORS, send_mail
from models import (
    UTC,
    BookRequest,
    LostReport,
    Report,
    RequestStatus,
    User,
    UTCDateTime,
    db,
    utcnow,
)

log = logging.getLogger(__name__)

# rows read per query: large enough to be fast, small enough to keep memory flat
ROWS_PER_PAGE = 2000
CSV_COLUMNS = (
    "id",
    "book_name",
    "author",
    "status",
    "request_date",
    "decided_at",
    "due_date",
    "returned_at",
    "reason",
    "note",
)
# spreadsheet programs run cells that start with these as formulas ("" never matches)
FORMULA_FIRST_CHARACTERS = frozenset("=+-@\t\r")
# what the patron reads on a failed report; the exception itself goes to the worker's log
BUILD_FAILED = "The report could not be built. Export it again, or ask a librarian."


class Retry(Exception):
    """A transient failure (database or mail server away): the task should run again."""


@dataclass(frozen=True)
class Summary:
    """What a renderer knows besides the rows: the report, its owner and its totals."""

    report: Report
    user: User
    counts: dict
    total: int


def iso(value):
    """Render a stored UTC timestamp as ISO 8601 ("2026-11-21T10:40:18.426444Z")."""
    return str(value).replace(" ", "T", 1) + "Z" if value else ""


# one table row of monthly_report.html; built here because a template call per row would
# cost more than everything else the build does
ROW_HTML = (
    '<tr><td>{}</td><td>{}</td><td>{}</td><td class="status">{}</td><td>{}</td>'
    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n"
).format
ROWS_MARKER = "<!--rows-->"


class HtmlRenderer:
    """templates/monthly_report.html, with the rows written in where the marker is."""

    def __init__(self, summary):
        page = render_template(
            "monthly_report.html",
            user=summary.user,
            report=summary.report,
            period=summary.report.month or "all time",
            generated_at=utcnow(),
            totals=[(status, summary.counts.get(status, 0)) for status in RequestStatus],
            total=summary.total,
            rows=Markup(ROWS_MARKER),
        )
        self.head, _, self.tail = page.partition(ROWS_MARKER)

    def rows(self, page):
        html = []
        # the hot loop of a build, written out inline since it runs once per row
        for row_id, book, author, status, requested, decided, due, returned, reason, _ in page:
            html.append(
                ROW_HTML(
                    row_id,
                    escape(book),
                    escape(author or ""),
                    status,
                    str(requested)[:10],
                    str(decided)[:10] if decided else "",
                    str(due)[:10] if due else "",
                    str(returned)[:10] if returned else "",
                    escape(reason or ""),
                )
            )
        return "".join(html)


class CsvRenderer:
    """One line per request, safe to open in a spreadsheet (no cell runs as a formula)."""

    def __init__(self, summary):
        self.head = ",".join(CSV_COLUMNS) + "\r\n"
        self.tail = ""

    def rows(self, page):
        lines = io.StringIO()
        write_csv = csv.writer(lines).writerow
        formula = FORMULA_FIRST_CHARACTERS
        for row_id, book, author, status, requested, decided, due, returned, reason, note in page:
            author, reason, note = author or "", reason or "", note or ""
            write_csv(
                (
                    row_id,
                    "'" + book if book[:1] in formula else book,
                    "'" + author if author[:1] in formula else author,
                    status,
                    iso(requested),
                    iso(decided),
                    iso(due),
                    iso(returned),
                    "'" + reason if reason[:1] in formula else reason,
                    "'" + note if note[:1] in formula else note,
                )
            )
        return lines.getvalue()


@dataclass(frozen=True)
class Format:
    """A file a report is stored as: its content type, its renderer, its place in the mail."""

    content_type: str
    # built with the Summary; has .head and .tail (str) and .rows(page) -> str
    renderer: type
    # "body": the mail's HTML part; "attachment": attached when small enough; None: a link
    mail: str | None = None


# every format a report is built, stored, downloaded and mailed as
FORMATS = {
    "html": Format("text/html; charset=utf-8", HtmlRenderer, mail="body"),
    "csv": Format("text/csv; charset=utf-8", CsvRenderer, mail="attachment"),
}


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


def previous_month(now):
    return (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


def report_filter(report):
    conditions = [BookRequest.user_id == report.user_id]
    if report.month:
        start, following = month_bounds(report.month)
        conditions += [BookRequest.request_date >= start, BookRequest.request_date < following]
    return and_(*conditions)


def report_pages(report):
    """Yield the report's rows a page at a time, oldest first, as plain tuples.

    Timestamps come back as the database's text (SQLite) or naive datetimes (PostgreSQL),
    without per-value conversion; both print as "YYYY-MM-DD HH:MM:SS[.ffffff]".
    """
    columns = [
        type_coerce(column, String) if isinstance(column.type, UTCDateTime) else column
        for column in (getattr(BookRequest, name) for name in CSV_COLUMNS)
    ]
    last_id = 0
    while True:
        # keyset pages: each query is short, so no cursor or transaction stays open
        # Core, not the ORM session: plain tuples, no per-row ORM bookkeeping
        page = (
            db.session.connection()
            .execute(
                select(*columns)
                .where(report_filter(report), BookRequest.id > last_id)
                .order_by(BookRequest.id)
                .limit(ROWS_PER_PAGE)
            )
            .all()
        )
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
    counts = dict(
        db.session.execute(
            select(BookRequest.status, func.count())
            .where(report_filter(report))
            .group_by(BookRequest.status)
        ).all()
    )
    total = sum(counts.values())
    summary = Summary(report, db.session.get(User, report.user_id), counts, total)
    outputs = [(FORMATS[name].renderer(summary), ChunkWriter(report.id, name)) for name in FORMATS]
    for renderer, chunks in outputs:
        chunks.write(renderer.head)
    done = 0
    for page in report_pages(report):
        for renderer, chunks in outputs:
            chunks.write(renderer.rows(page))
        done += len(page)
        report.record_progress(done / total if total else 1.0, ready_chunks(outputs))
    for renderer, chunks in outputs:
        chunks.write(renderer.tail)
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
        attached={filename.rsplit(".", 1)[1] for filename, _, _ in attachments},
    )
    return {
        "to": user.email,
        "subject": f"Your library report ({period})",
        "text": text,
        "html": html,
        "attachments": attachments,
    }


def start_monthly_reports(month):
    """Record `month`'s report for every patron who requested a book in it; return them."""
    start, following = month_bounds(month)
    user_ids = db.session.scalars(
        select(BookRequest.user_id)
        .where(BookRequest.request_date >= start, BookRequest.request_date < following)
        .distinct()
        .order_by(BookRequest.user_id)
    ).all()
    started = []
    for user_id in user_ids:
        already = db.session.scalar(
            select(Report.id).where(
                Report.user_id == user_id, Report.month == month, Report.created_at >= following
            )
        )
        if already:
            continue
        report = Report(user_id=user_id, month=month, enqueued_at=utcnow())
        db.session.add(report)
        try:
            db.session.commit()
        except IntegrityError:
            # the patron has an export running; the sweeper-free path is to skip this month's
            db.session.rollback()
            log.info("user %s has a report in progress; monthly report skipped", user_id)
            continue
        started.append(report)
    return started
