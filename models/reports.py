"""Report exports: their statuses, and the Report row with its build's atomic claims."""

import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, make_transient_to_detached, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from models.base import Conflict, Unavailable, UTCDateTime, db, own_commit_on_sqlite, utcnow
from models.report_chunks import ReportChunk
from models.statuses import ReportScope, ReportStatus

REPORT_ACTIVE_STATUSES = (ReportStatus.QUEUED, ReportStatus.RUNNING)
# the same condition as SQL text, for the partial index
REPORT_ACTIVE_SQL = f"status IN ('{ReportStatus.QUEUED}', '{ReportStatus.RUNNING}')"
# inserts tried by Report.start while the active report keeps finishing under it
START_ATTEMPTS = 3


class LostReport(Exception):
    """The build no longer owns its report: a newer claim has taken it over."""


class Report(db.Model):
    """A report export and the state of its build; the claim methods are atomic UPDATEs.

    A claim hands the build a fencing token, its task id and attempt number; every later
    write of that build holds only while both still match (`owned_by_this_build`), so a
    build that paused and was taken over can neither store nor undo anything.
    """

    __table_args__ = (
        # the list's order (newest first, id breaking ties), for everyone and per user
        Index("ix_report_created_at_id", "created_at", "id"),
        Index("ix_report_user_id_created_at_id", "user_id", "created_at", "id"),
        # at most one queued or running report per user, enforced by the database itself
        Index(
            "uq_report_one_active_per_user",
            "user_id",
            unique=True,
            sqlite_where=db.text(REPORT_ACTIVE_SQL),
            postgresql_where=db.text(REPORT_ACTIVE_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10), default=ReportStatus.QUEUED, index=True)
    month: Mapped[str | None] = mapped_column(String(7))
    scope: Mapped[str] = mapped_column(
        String(10), default=ReportScope.PATRON, server_default=ReportScope.PATRON.value
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    row_count: Mapped[int | None] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(String(50))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # uncompressed bytes of each stored file, by format: {"html": 1234, "csv": 567}
    sizes: Mapped[dict] = mapped_column(JSON, default=dict)

    @staticmethod
    def start(user, month=None, scope=ReportScope.PATRON):
        """Record a queued report, or raise a conflict naming the user's active one."""
        # the active report may finish between the refused insert and the look-up: then
        # nothing is being prepared any more, and the insert is tried again
        for _ in range(START_ATTEMPTS):
            now = utcnow()
            report = Report.filled(
                user_id=user.id, month=month, scope=scope, created_at=now, enqueued_at=now
            )
            try:
                report.insert_committed()
                return report
            except IntegrityError:
                pass  # an active report is in the way, or was: look it up
            active = db.session.scalar(
                select(Report.id).where(
                    Report.user_id == user.id, Report.status.in_(REPORT_ACTIVE_STATUSES)
                )
            )
            if active is not None:
                raise Conflict("A report of yours is still being prepared.", report_id=active)
        # reports finishing faster than a request can insert: only a runaway worker does that
        raise Unavailable("Reports are changing too fast; try again.")

    @staticmethod
    def filled(**values):
        """A new Report with every column set: `values`, else the column's default, else None."""
        for column in REPORT_COLUMNS:
            if column.key not in values:
                default = column.default
                if default is None:
                    values[column.key] = None
                else:
                    values[column.key] = default.arg(None) if default.is_callable else default.arg
        return Report(**values)

    def insert_committed(self):
        """INSERT this new row and commit; the report then stays in the session as that
        row, with no read back. Raises IntegrityError when the one-active-report index
        refuses the row (the session is rolled back then).

        On SQLite, outside a transaction, the INSERT runs as a statement of its own,
        committed as it runs: the write lock is taken and let go inside it, with the GIL
        released. Left to the driver, it would open a transaction before the INSERT and
        hold the lock until the COMMIT, across Python code that can wait several GIL
        switch intervals on a busy worker, while every other writer polls with
        busy_timeout's growing sleeps (up to 100 ms each): 32 concurrent exports turned
        that into a tail of hundreds of milliseconds.
        """
        values = {column.key: getattr(self, column.key) for column in REPORT_COLUMNS}
        connection = db.session.connection()
        try:
            with own_commit_on_sqlite(connection):
                connection.execute(INSERT_REPORT, values)
        except IntegrityError:
            db.session.rollback()
            raise
        db.session.commit()
        # every column is set, so nothing is marked expired: the row is never read again
        make_transient_to_detached(self)
        db.session.add(self)

    @property
    def is_done(self):
        return self.status == ReportStatus.DONE

    @property
    def is_expired(self):
        return self.status == ReportStatus.EXPIRED

    @staticmethod
    def claimable():
        """The reports a delivery may take: queued, or running with no heartbeat for a while."""
        stale = utcnow() - timedelta(seconds=current_app.config["REPORT_STALE_SECONDS"])
        return or_(
            Report.status == ReportStatus.QUEUED,
            and_(Report.status == ReportStatus.RUNNING, Report.heartbeat_at < stale),
        )

    def _update(self, *conditions, **values):
        """UPDATE this row where `conditions` hold, commit; return whether it matched."""
        result = db.session.execute(
            update(Report)
            .where(Report.id == self.id, *conditions)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        return result.rowcount == 1

    def claim(self, task_id, redelivered=False):
        """Mark the report running for this task; False when another delivery already has it.

        A redelivered message may also take back a build that it started itself: the broker
        hands a message out again when the worker running it died (acks_late), so that build
        is dead even though its heartbeat is still fresh.
        """
        now = utcnow()
        takeable = Report.claimable()
        if redelivered:
            takeable = or_(
                takeable, and_(Report.status == ReportStatus.RUNNING, Report.task_id == task_id)
            )
        result = db.session.execute(
            update(Report)
            .where(
                Report.id == self.id,
                takeable,
                Report.attempts < current_app.config["REPORT_MAX_ATTEMPTS"],
            )
            .values(
                status=ReportStatus.RUNNING,
                task_id=task_id,
                started_at=now,
                heartbeat_at=now,
                progress=0.0,
                error=None,
                attempts=Report.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            db.session.commit()
            return False
        # what an earlier build stored goes, in the claim's own transaction
        db.session.execute(delete(ReportChunk).where(ReportChunk.report_id == self.id))
        db.session.commit()
        db.session.refresh(self)
        return True

    def owned_by_this_build(self):
        """The fencing condition: still running under this build's task id and attempt."""
        return and_(
            Report.status == ReportStatus.RUNNING,
            Report.task_id == self.task_id,
            Report.attempts == self.attempts,
        )

    def _write_if_owned(self, chunks, **values):
        """Set `values` and store `chunks` in one transaction, if this build owns the report.

        The UPDATE goes first: it locks the row, so no claim can come between it and the
        commit. Raises LostReport, having written nothing, when the report was taken over.
        """
        result = db.session.execute(
            update(Report)
            .where(Report.id == self.id, self.owned_by_this_build())
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            db.session.rollback()
            raise LostReport(self.id)
        if chunks:
            db.session.execute(insert(ReportChunk), chunks)
        db.session.commit()
        for name, value in values.items():
            # known to be stored; a plain setattr would queue an unfenced UPDATE
            set_committed_value(self, name, value)

    def record_progress(self, progress, chunks=()):
        """Store the chunks with the progress, proving the build is still alive."""
        self._write_if_owned(chunks, progress=round(min(progress, 1.0), 4), heartbeat_at=utcnow())

    def finish(self, row_count, sizes, chunks=()):
        """Store the last chunks and mark the build done with its row count and sizes."""
        self._write_if_owned(
            chunks,
            status=ReportStatus.DONE,
            progress=1.0,
            row_count=row_count,
            sizes=sizes,
            finished_at=utcnow(),
        )

    def release(self):
        """Put a running report back in the queue after a transient failure, for a retry."""
        db.session.rollback()
        self._update(
            self.owned_by_this_build(),
            status=ReportStatus.QUEUED,
            enqueued_at=utcnow(),
        )

    def fail(self, error):
        """Record the build as failed with `error`, unless another build owns the report now."""
        db.session.rollback()
        return self._update(
            self.owned_by_this_build(),
            status=ReportStatus.FAILED,
            error=error[:2000],
            finished_at=utcnow(),
        )

    def give_up(self):
        """Fail the report if it could be taken but has used up its attempts; True if so."""
        return self._update(
            Report.claimable(),
            Report.attempts >= current_app.config["REPORT_MAX_ATTEMPTS"],
            status=ReportStatus.FAILED,
            error=f"gave up after {self.attempts} attempts",
            finished_at=utcnow(),
        )

    def claim_mail(self):
        """Take the right to mail the report; False when it has been mailed already."""
        return self._update(Report.emailed_at.is_(None), emailed_at=utcnow())

    def release_mail(self):
        """Hand the mail back after a failed send, for the retry to take."""
        self._update(emailed_at=None)

    @staticmethod
    def mark_enqueued(report_id, now):
        db.session.execute(update(Report).where(Report.id == report_id).values(enqueued_at=now))
        db.session.commit()

    @staticmethod
    def stranded(queued_before):
        """Queued reports never published, or last published before `queued_before`."""
        return and_(
            Report.status == ReportStatus.QUEUED,
            or_(Report.enqueued_at.is_(None), Report.enqueued_at < queued_before),
        )

    @staticmethod
    def stranded_for(user_id):
        """The user's queued report that has waited longer than REPORT_REQUEUE_SECONDS."""
        waited = utcnow() - timedelta(seconds=current_app.config["REPORT_REQUEUE_SECONDS"])
        return db.session.scalar(
            select(Report).where(Report.user_id == user_id, Report.stranded(waited))
        )

    @staticmethod
    def stale_ids(now, any_age=False):
        """Ids of reports left queued (broker was down) or stuck running (worker died).

        `any_age` takes every queued report, however recently published.
        """
        config = current_app.config
        queued_before = now
        if not any_age:
            queued_before -= timedelta(seconds=config["REPORT_REQUEUE_SECONDS"])
        stale_before = now - timedelta(seconds=config["REPORT_STALE_SECONDS"])
        return db.session.scalars(
            select(Report.id).where(
                or_(
                    Report.stranded(queued_before),
                    and_(Report.status == ReportStatus.RUNNING, Report.heartbeat_at < stale_before),
                )
            )
        ).all()

    def read_chunks(self, format):
        """Yield the stored file of `format` decompressed, one chunk at a time."""
        return ReportChunk.read(self.id, format)


REPORT_COLUMNS = tuple(Report.__table__.columns)
INSERT_REPORT = insert(Report.__table__)
