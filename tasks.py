"""Celery tasks: build and mail user reports, and the jobs celery beat runs on a schedule."""

import csv
import io
import logging
import zlib
from datetime import datetime, timedelta
from html import escape

from celery import shared_task
from flask import current_app, render_template
from markupsafe import Markup
from sqlalchemy import String, and_, delete, func, or_, select, type_coerce, update
from sqlalchemy.exc import IntegrityError, OperationalError

from mail import TRANSIENT_MAIL_ERRORS, send_mail
from models import (
    REQUEST_STATUSES,
    UTC,
    BookRequest,
    Report,
    ReportChunk,
    RevokedToken,
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


def enqueue_report(report):
    """Publish the build of `report`; a dead broker is logged and left to the sweeper."""
    try:
        generate_user_report.apply_async(args=[report.id], task_id=report.id)
    except Exception as exc:  # kombu raises several kinds; every one means "not sent"
        log.warning("report %s stays queued, the broker is unreachable: %s", report.id, exc)
        return False
    return True


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


def claimable():
    """The reports a delivery may take: queued, or running with no heartbeat for a while."""
    stale = utcnow() - timedelta(seconds=current_app.config["REPORT_STALE_SECONDS"])
    return or_(
        Report.status == "queued",
        and_(Report.status == "running", Report.heartbeat_at < stale),
    )


def claim_report(report_id, task_id, redelivered=False):
    """Mark the report running for this task; False when another delivery already has it.

    A redelivered message may also take back a build that it started itself: the broker
    hands a message out again when the worker running it died (acks_late), so that build
    is dead even though its heartbeat is still fresh.
    """
    now = utcnow()
    takeable = claimable()
    if redelivered:
        takeable = or_(takeable, and_(Report.status == "running", Report.task_id == task_id))
    result = db.session.execute(
        update(Report)
        .where(
            Report.id == report_id,
            takeable,
            Report.attempts < current_app.config["REPORT_MAX_ATTEMPTS"],
        )
        .values(
            status="running",
            task_id=task_id,
            started_at=now,
            heartbeat_at=now,
            progress=0.0,
            error=None,
            attempts=Report.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


class ChunkWriter:
    """Collect text and store it as compressed chunks of about REPORT_CHUNK_BYTES each."""

    def __init__(self, report_id, kind):
        self.report_id = report_id
        self.kind = kind
        self.limit = current_app.config["REPORT_CHUNK_BYTES"]
        self.buffer = []
        self.buffered = 0
        self.seq = 0
        self.size = 0

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
        db.session.add(
            ReportChunk(report_id=self.report_id, kind=self.kind, seq=self.seq, data=data)
        )
        self.seq += 1
        self.buffer = []
        self.buffered = 0


# one table row of monthly_report.html; built here because a template call per row would
# cost more than everything else the build does
ROW_HTML = (
    '<tr><td>{}</td><td>{}</td><td>{}</td><td class="status">{}</td><td>{}</td>'
    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n"
).format
ROWS_MARKER = "<!--rows-->"


def iso(value):
    """Render a stored UTC timestamp as ISO 8601 ("2026-11-21T10:40:18.426444Z")."""
    return str(value).replace(" ", "T", 1) + "Z" if value else ""


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


def render_page(page):
    """Return the HTML rows and the CSV lines of one page of rows."""
    html = []
    lines = io.StringIO()
    write_csv = csv.writer(lines).writerow
    formula = FORMULA_FIRST_CHARACTERS
    # the hot loop of a build, written out inline since it runs once per row of the report
    for row_id, book, author, status, requested, decided, due, returned, reason, note in page:
        author, reason, note = author or "", reason or "", note or ""
        html.append(
            ROW_HTML(
                row_id,
                escape(book),
                escape(author),
                status,
                str(requested)[:10],
                str(decided)[:10] if decided else "",
                str(due)[:10] if due else "",
                str(returned)[:10] if returned else "",
                escape(reason),
            )
        )
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
    return "".join(html), lines.getvalue()


def save_progress(report, progress):
    """Commit the stored chunks with the progress, proving the build is still alive."""
    report.progress = round(min(progress, 1.0), 4)
    report.heartbeat_at = utcnow()
    db.session.commit()


def build_report(report):
    """Render the report's HTML and CSV from streamed rows and store both as chunks."""
    db.session.execute(delete(ReportChunk).where(ReportChunk.report_id == report.id))
    user = db.session.get(User, report.user_id)
    counts = dict(
        db.session.execute(
            select(BookRequest.status, func.count())
            .where(report_filter(report))
            .group_by(BookRequest.status)
        ).all()
    )
    total = sum(counts.values())
    html_chunks = ChunkWriter(report.id, "html")
    csv_chunks = ChunkWriter(report.id, "csv")
    page_html = render_template(
        "monthly_report.html",
        user=user,
        report=report,
        period=report.month or "all time",
        generated_at=utcnow(),
        totals=[(status, counts.get(status, 0)) for status in REQUEST_STATUSES],
        total=total,
        rows=Markup(ROWS_MARKER),
    )
    head, _, tail = page_html.partition(ROWS_MARKER)
    html_chunks.write(head)
    csv_chunks.write(",".join(CSV_COLUMNS) + "\r\n")
    done = 0
    for page in report_pages(report):
        html, lines = render_page(page)
        html_chunks.write(html)
        csv_chunks.write(lines)
        done += len(page)
        save_progress(report, done / total if total else 1.0)
    html_chunks.write(tail)
    html_chunks.flush()
    csv_chunks.flush()
    report.status = "done"
    report.progress = 1.0
    report.row_count = total
    report.html_size = html_chunks.size
    report.csv_size = csv_chunks.size
    report.finished_at = utcnow()
    db.session.commit()
    log.info("report %s done: %d rows", report.id, total)


def mark_failed(report_id, error):
    db.session.rollback()
    db.session.execute(
        update(Report)
        .where(Report.id == report_id)
        .values(status="failed", error=error[:2000], finished_at=utcnow())
    )
    db.session.commit()
    log.error("report %s failed: %s", report_id, error)


def release_report(report_id):
    """Put a report back in the queue after a transient failure, for the retry to claim."""
    db.session.rollback()
    db.session.execute(
        update(Report)
        .where(Report.id == report_id, Report.status == "running")
        .values(status="queued", enqueued_at=utcnow())
    )
    db.session.commit()


def give_up_if_exhausted(report):
    """Fail a report that could be taken but has used up its attempts; else leave it be."""
    exhausted = db.session.execute(
        update(Report)
        .where(
            Report.id == report.id,
            claimable(),
            Report.attempts >= current_app.config["REPORT_MAX_ATTEMPTS"],
        )
        .values(
            status="failed",
            error=f"gave up after {report.attempts} attempts",
            finished_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if exhausted.rowcount:
        log.error("report %s failed: gave up after %d attempts", report.id, report.attempts)
    else:
        log.info("report %s is %s elsewhere, skipping", report.id, report.status)


def retry_delay(task):
    return min(2 ** (task.request.retries + 1), 60)


@shared_task(bind=True, max_retries=5)
def generate_user_report(self, report_id: str) -> None:
    """Build the report, store it, then mail it to its owner; safe to receive twice."""
    report = db.session.get(Report, report_id)
    if report is None:
        log.warning("report %s no longer exists", report_id)
        return
    if report.status != "done":
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        if not claim_report(report_id, self.request.id, redelivered):
            give_up_if_exhausted(report)
            return
        db.session.refresh(report)
        try:
            build_report(report)
        except OperationalError as exc:
            log.warning("report %s: database unavailable, retrying: %s", report_id, exc)
            release_report(report_id)
            raise self.retry(exc=exc, countdown=retry_delay(self)) from exc
        except Exception as exc:
            # recorded on the report for its owner to see; retrying would fail the same way
            log.exception("report %s failed", report_id)
            mark_failed(report_id, f"{type(exc).__name__}: {exc}")
            return
    email_report(self, report)


def claim_email(report_id):
    result = db.session.execute(
        update(Report)
        .where(Report.id == report_id, Report.emailed_at.is_(None))
        .values(emailed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def email_report(task, report):
    """Mail the finished report once: the HTML as the body, the CSV attached."""
    if not claim_email(report.id):
        return
    try:
        send_mail(**report_mail(report))
    except TRANSIENT_MAIL_ERRORS as exc:
        # let the retry send it; the report itself stays done and downloadable
        db.session.execute(update(Report).where(Report.id == report.id).values(emailed_at=None))
        db.session.commit()
        log.warning("report %s: mail not sent, retrying: %s", report.id, exc)
        raise task.retry(exc=exc, countdown=retry_delay(task)) from exc


def report_mail(report):
    """Return the arguments of send_mail for a finished report, bounded in size."""
    user = db.session.get(User, report.user_id)
    limit = current_app.config["MAIL_MAX_ATTACHMENT_BYTES"]
    period = report.month or "all time"
    attachments = []
    if report.csv_size <= limit:
        csv_data = b"".join(report.read_chunks("csv"))
        attachments.append((f"report-{report.month or 'all'}.csv", csv_data, "text/csv"))
    html = None
    if report.html_size <= limit:
        html = b"".join(report.read_chunks("html")).decode()
    text = render_template(
        "email/report_ready.txt",
        user=user,
        report=report,
        period=period,
        attached=bool(attachments),
    )
    return {
        "to": user.email,
        "subject": f"Your library report ({period})",
        "text": text,
        "html": html,
        "attachments": attachments,
    }


@shared_task
def requeue_stale_reports() -> int:
    """Enqueue again every report left queued (broker was down) or stuck running (worker died)."""
    config = current_app.config
    now = utcnow()
    queued_before = now - timedelta(seconds=config["REPORT_REQUEUE_SECONDS"])
    stale_before = now - timedelta(seconds=config["REPORT_STALE_SECONDS"])
    report_ids = db.session.scalars(
        select(Report.id).where(
            or_(
                and_(
                    Report.status == "queued",
                    or_(Report.enqueued_at.is_(None), Report.enqueued_at < queued_before),
                ),
                and_(Report.status == "running", Report.heartbeat_at < stale_before),
            )
        )
    ).all()
    for report_id in report_ids:
        try:
            generate_user_report.apply_async(args=[report_id])
        except Exception as exc:
            log.warning("sweeper could not enqueue report %s: %s", report_id, exc)
            break
        db.session.execute(update(Report).where(Report.id == report_id).values(enqueued_at=now))
        db.session.commit()
    if report_ids:
        log.info("sweeper re-enqueued %d report(s)", len(report_ids))
    return len(report_ids)


@shared_task
def send_monthly_reports(month: str | None = None) -> int:
    """Start last month's report for every patron who requested a book in it."""
    month = month or previous_month(utcnow())
    start, following = month_bounds(month)
    user_ids = db.session.scalars(
        select(BookRequest.user_id)
        .where(BookRequest.request_date >= start, BookRequest.request_date < following)
        .distinct()
        .order_by(BookRequest.user_id)
    ).all()
    started = 0
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
        enqueue_report(report)
        started += 1
    log.info("monthly reports for %s: %d started", month, started)
    return started


@shared_task
def send_overdue_reminders() -> int:
    """Mail each patron, at most daily, the approved loans now past their due date."""
    now = utcnow()
    overdue = (
        select(BookRequest)
        .where(
            BookRequest.status == "approved",
            BookRequest.due_date < now,
            or_(
                BookRequest.reminded_at.is_(None),
                BookRequest.reminded_at < now - timedelta(hours=20),
            ),
        )
        .order_by(BookRequest.user_id, BookRequest.due_date)
    )
    user_ids = db.session.scalars(select(overdue.subquery().c.user_id).distinct()).all()
    for user_id in user_ids:
        loans = db.session.scalars(overdue.where(BookRequest.user_id == user_id)).all()
        user = db.session.get(User, user_id)
        send_mail(
            to=user.email,
            subject=f"{len(loans)} library book(s) overdue",
            text=render_template("email/overdue_reminder.txt", user=user, loans=loans, now=now),
        )
        for loan in loans:
            loan.reminded_at = now
        db.session.commit()
    log.info("overdue reminders sent to %d patron(s)", len(user_ids))
    return len(user_ids)


@shared_task
def purge_revoked_tokens() -> int:
    """Delete revocation records of tokens that have expired anyway."""
    result = db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    db.session.commit()
    log.info("purged %d expired revoked token(s)", result.rowcount)
    return result.rowcount
