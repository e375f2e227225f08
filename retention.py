"""Report retention: stored report files do not pile up.

A finished report older than REPORT_RETENTION_DAYS, or beyond its owner's newest
REPORT_MAX_PER_USER, is marked `expired` and its stored files (chunks) are deleted, a small
batch per transaction, so no lock is held for long. The report's row stays as a tombstone:
`status` says `expired`, `expired_at` says when, and its downloads answer 410. A download
that began before the purge reads a snapshot, so it still ends complete.
"""

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, exists, func, select, update

from models import Report, ReportChunk, ReportStatus, db, utcnow

log = logging.getLogger(__name__)

# reports marked expired per transaction
REPORTS_PER_BATCH = 100
# chunk numbers deleted per transaction (a row for each format): a few MB at most
CHUNKS_PER_BATCH = 20


def expire(report_ids, now):
    """Mark these reports expired if they are still done; return how many were."""
    result = db.session.execute(
        update(Report)
        .where(Report.id.in_(report_ids), Report.status == ReportStatus.DONE)
        .values(status=ReportStatus.EXPIRED, expired_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount


def expire_in_batches(query, now):
    """Expire the reports `query` selects, a batch at a time, until it selects none."""
    expired = 0
    while report_ids := db.session.scalars(query.limit(REPORTS_PER_BATCH)).all():
        expired += expire(report_ids, now)
    return expired


def done_reports():
    return select(Report.id).where(Report.status == ReportStatus.DONE)


def expire_old(now):
    """Expire every report finished more than REPORT_RETENTION_DAYS ago."""
    cutoff = now - timedelta(days=current_app.config["REPORT_RETENTION_DAYS"])
    return expire_in_batches(done_reports().where(Report.finished_at < cutoff), now)


def expire_beyond_cap(user_id, now=None):
    """Expire the user's finished reports beyond the newest REPORT_MAX_PER_USER."""
    keep = current_app.config["REPORT_MAX_PER_USER"]
    query = (
        done_reports()
        .where(Report.user_id == user_id)
        .order_by(Report.finished_at.desc(), Report.id.desc())
        .offset(keep)
    )
    return expire_in_batches(query, now or utcnow())


def users_over_cap():
    keep = current_app.config["REPORT_MAX_PER_USER"]
    return db.session.scalars(
        select(Report.user_id)
        .where(Report.status == ReportStatus.DONE)
        .group_by(Report.user_id)
        .having(func.count() > keep)
    ).all()


def delete_files(report_id):
    """Delete an expired report's chunks, CHUNKS_PER_BATCH numbers per transaction."""
    deleted = 0
    while True:
        seqs = db.session.scalars(
            select(ReportChunk.seq)
            .where(ReportChunk.report_id == report_id)
            .distinct()
            .order_by(ReportChunk.seq)
            .limit(CHUNKS_PER_BATCH)
        ).all()
        if not seqs:
            return deleted
        result = db.session.execute(
            delete(ReportChunk).where(
                ReportChunk.report_id == report_id, ReportChunk.seq <= seqs[-1]
            )
        )
        db.session.commit()
        deleted += result.rowcount


def delete_expired_files():
    """Delete the chunks of every expired report that still has some; return how many."""
    has_chunks = exists().where(ReportChunk.report_id == Report.id)
    query = select(Report.id).where(Report.status == ReportStatus.EXPIRED, has_chunks)
    deleted = 0
    while report_id := db.session.scalar(query.limit(1)):
        deleted += delete_files(report_id)
    return deleted


def purge_reports():
    """Expire what retention and the per-user cap say, delete the files; return the counts."""
    now = utcnow()
    expired = expire_old(now)
    for user_id in users_over_cap():
        expired += expire_beyond_cap(user_id, now)
    deleted = delete_expired_files()
    return {"expired": expired, "chunks_deleted": deleted}


def begin_snapshot():
    """Start a transaction whose every read sees the database as of its first one.

    A download reads a report one chunk per query; in a snapshot it still reads them all
    when a purge deletes them meanwhile.
    """
    # ends the transaction that the token check began
    db.session.rollback()
    if db.engine.dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        # SQLite's driver begins no transaction for reads: without one, each read is its own
        db.session.connection().exec_driver_sql("BEGIN")
