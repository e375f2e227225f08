"""Celery tasks: thin wrappers that build and mail reports, and the jobs beat runs.

The work itself lives in report_builder.py and models/; a task here only looks up
its rows, calls them, and decides whether Celery should retry.
"""

import logging
from datetime import timedelta

from celery import shared_task
from celery.utils import uuid
from flask import render_template
from sqlalchemy import or_, select
from sqlalchemy.exc import OperationalError

import monthly_reports
import outbox
import report_builder
import retention
import throttle
from login_sessions import LoginSession
from mail import TRANSIENT_MAIL_ERRORS, send_mail
from models import BookRequest, Report, RequestStatus, User, db, utcnow

log = logging.getLogger(__name__)


def enqueue_report(report, task_id=None):
    """Publish the build of `report`; a dead broker is logged and left to the sweeper."""
    try:
        generate_user_report.apply_async(args=[report.id], task_id=task_id or report.id)
    except Exception as exc:  # kombu raises several kinds; every one means "not sent"
        log.warning("report %s stays queued, the broker is unreachable: %s", report.id, exc)
        # never published: the next sweep takes it at once rather than after the requeue delay
        Report.mark_enqueued(report.id, None)
        return False
    return True


def requeue_stranded_report(user_id):
    """Publish again the user's queued report whose message seems lost; return it, or None."""
    report = Report.stranded_for(user_id)
    # a task id of its own: the original message may still turn up, and is a separate delivery
    if report is not None and enqueue_report(report, task_id=uuid()):
        Report.mark_enqueued(report.id, utcnow())
    return report


def retry_delay(task):
    return min(2 ** (task.request.retries + 1), 60)


@shared_task(bind=True, max_retries=5)
def generate_user_report(self, report_id: str) -> None:
    """Build the report, store it, then mail it to its owner; safe to receive twice."""
    report = db.session.get(Report, report_id)
    if report is None:
        log.warning("report %s no longer exists", report_id)
        return
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        if report_builder.build_once(report, self.request.id, redelivered):
            report_builder.mail_once(report)
            # the new report may take the owner past REPORT_MAX_PER_USER: the oldest go
            retention.expire_beyond_cap(report.user_id)
    except report_builder.Retry as exc:
        raise self.retry(exc=exc.__cause__, countdown=retry_delay(self)) from exc.__cause__


@shared_task
def requeue_stale_reports(any_age: bool = False) -> int:
    """Enqueue again every report left queued (broker was down) or stuck running (worker died).

    `any_age` takes every queued report, however recently published: a worker asks for
    that when it connects, since a broker that restarted has lost the messages it held.
    """
    now = utcnow()
    report_ids = Report.stale_ids(now, any_age)
    for report_id in report_ids:
        try:
            generate_user_report.apply_async(args=[report_id])
        except Exception as exc:
            log.warning("sweeper could not enqueue report %s: %s", report_id, exc)
            break
        Report.mark_enqueued(report_id, now)
    if report_ids:
        log.info("sweeper re-enqueued %d report(s)", len(report_ids))
    return len(report_ids)


@shared_task
def send_monthly_reports(month: str | None = None) -> int:
    """Start last month's reports: each active patron's, and the library's for each librarian."""
    month = month or monthly_reports.previous_month(utcnow())
    started = monthly_reports.start_monthly_reports(month)
    for report in started:
        enqueue_report(report)
    log.info("monthly reports for %s: %d started", month, len(started))
    return len(started)


@shared_task
def send_overdue_reminders() -> int:
    """Mail each patron, at most daily, the approved loans now past their due date."""
    now = utcnow()
    overdue = (
        select(BookRequest)
        .where(
            BookRequest.status == RequestStatus.APPROVED,
            BookRequest.due_date < now,
            or_(
                BookRequest.reminded_at.is_(None),
                BookRequest.reminded_at < now - timedelta(hours=20),
            ),
        )
        .order_by(BookRequest.user_id, BookRequest.due_date)
    )
    # an unverified address may be someone else's: it gets verification mail only
    verified = select(User.id).where(User.email_verified_at.is_not(None), User.email.is_not(None))
    overdue = overdue.where(BookRequest.user_id.in_(verified))
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


@shared_task(bind=True, max_retries=5)
def send_outbox_mail(self, mail_id: int) -> None:
    """Send one mail from the outbox; a duplicate delivery finds it claimed and does nothing."""
    try:
        outbox.deliver(mail_id)
    except (*TRANSIENT_MAIL_ERRORS, OperationalError) as exc:
        # the mail server, or the database (away, or SQLite's write lock busy past its
        # timeout): the mail stays pending, for a retry or, past the last one, the sweep
        db.session.rollback()
        log.warning("mail %s not sent, retrying: %s", mail_id, exc)
        raise self.retry(exc=exc, countdown=retry_delay(self)) from exc


@shared_task
def sweep_outbox() -> int:
    """Send the mails the broker or a dead worker left behind."""
    return outbox.sweep()


@shared_task
def send_due_soon_nudges() -> int:
    """Queue a mail for each loan due within DUE_SOON_DAYS, once per loan and due date."""
    return outbox.queue_due_soon_nudges()


@shared_task
def purge_expired_sessions() -> int:
    """Delete login sessions whose tokens have all expired, and old login failure counts."""
    count = LoginSession.purge_expired()
    log.info("purged %d expired login session(s)", count)
    log.info("purged %d old login failure count(s)", throttle.purge_old())
    return count


@shared_task
def purge_expired_reports() -> dict:
    """Expire reports past retention or beyond each user's cap, and delete their files."""
    counts = retention.purge_reports()
    log.info("expired %(expired)d report(s), deleted %(chunks_deleted)d chunk(s)", counts)
    return counts
