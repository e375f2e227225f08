"""The monthly reports beat starts: each active patron's own, and the library's for each
librarian, once per month however often the job runs."""

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import BookRequest, Report, ReportScope, User, db, utcnow
from report_builder import month_bounds

log = logging.getLogger(__name__)


def previous_month(now):
    return (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


def start_monthly_reports(month):
    """Record `month`'s reports: every active patron's own, and the library's for each librarian.

    Returns the reports recorded; a report already made for the month is not made again.
    """
    start, following = month_bounds(month)
    patron_ids = db.session.scalars(
        select(BookRequest.user_id)
        .where(BookRequest.request_date >= start, BookRequest.request_date < following)
        .distinct()
        .order_by(BookRequest.user_id)
    ).all()
    librarian_ids = db.session.scalars(
        select(User.id).where(User.role == "admin").order_by(User.id)
    ).all()
    wanted = [(user_id, ReportScope.LIBRARY) for user_id in librarian_ids]
    wanted += [(user_id, ReportScope.PATRON) for user_id in patron_ids]
    started = []
    for user_id, scope in wanted:
        report = start_monthly_report(user_id, month, scope, following)
        if report is not None:
            started.append(report)
    return started


def start_monthly_report(user_id, month, scope, following):
    """Record one monthly report unless it exists; None when it does or one is in progress."""
    already = db.session.scalar(
        select(Report.id).where(
            Report.user_id == user_id,
            Report.month == month,
            Report.scope == scope,
            Report.created_at >= following,
        )
    )
    if already:
        return None
    report = Report(user_id=user_id, month=month, scope=scope, enqueued_at=utcnow())
    db.session.add(report)
    try:
        db.session.commit()
    except IntegrityError:
        # the user has an export running; one active report per user, so this month's waits
        db.session.rollback()
        log.info("user %s has a report in progress; monthly %s report skipped", user_id, scope)
        return None
    return report
