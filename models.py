"""Database models and the business rules that belong to them."""

import unicodedata
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from flask import current_app, render_template
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): ~20 ms a hash here
password_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# verified against when the user does not exist, so both failures cost the same time
DUMMY_PASSWORD_HASH = password_hasher.hash("not-a-real-password")


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


def username_key(username):
    """Return the form usernames are compared in: NFKC-normalised and case-folded."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


class User(db.Model):
    # AUTOINCREMENT: SQLite would otherwise hand a deleted user's id to the next one
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    # unique, so `Librarian` and `librarian` cannot both exist
    username_key: Mapped[str] = mapped_column(String(80), unique=True)
    # null once a stale unverified address has been released to someone else
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(10), default="user")
    # decision mails and due-soon nudges; the overdue reminder goes out regardless
    notify: Mapped[bool] = mapped_column(Boolean, default=True, server_default=db.true())
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.username is not None and self.username_key is None:
            self.username_key = username_key(self.username)

    @property
    def is_admin(self):
        return self.role == "admin"

    @property
    def email_verified(self):
        return self.email is not None and self.email_verified_at is not None

    @property
    def mail_paused(self):
        """Why the library mails this account nothing (verification mail aside), or None."""
        if self.email is None:
            return (
                "Nothing is mailed: the address was never verified and has been released "
                "to someone who registered it."
            )
        if self.email_verified_at is None:
            return (
                "Reports and notices are not mailed until you verify your email address: "
                "use the link in the verification mail (POST /verify-email/resend sends "
                "another). Reports still build and download."
            )
        return None

    def set_password(self, password):
        self.password_hash = password_hasher.hash(password)

    def check_password(self, password):
        try:
            return password_hasher.verify(self.password_hash, password)
        except (VerifyMismatchError, InvalidHashError):
            return False

    @staticmethod
    def find(login):
        """Return the user whose username (in any case) or email is `login`, else None."""
        return db.session.scalar(
            select(User).where(
                (User.username_key == username_key(login)) | (User.email == login.lower())
            )
        )

    @staticmethod
    def authenticate(login, password):
        """Return the user whose username or email and password match, else None."""
        user = User.find(login)
        if user is None:
            # same work as a real check, so timing does not reveal which usernames exist
            try:
                password_hasher.verify(DUMMY_PASSWORD_HASH, password)
            except VerifyMismatchError:
                pass
            return None
        if not user.check_password(password):
            return None
        if password_hasher.check_needs_rehash(user.password_hash):
            user.set_password(password)
            db.session.commit()
        return user

    @staticmethod
    def register(username, email, password, role="user", verified=False):
        """Create a user; a taken username or email is a Conflict, also when two requests race."""
        key = username_key(username)
        release_stale_address(email)
        taken = db.session.scalar(
            select(User.username_key).where((User.username_key == key) | (User.email == email))
        )
        if taken is not None:
            raise Conflict(conflict_message(taken == key, username, email))
        user = User(username=username, email=email, role=role)
        user.email_verified_at = utcnow() if verified else None
        user.set_password(password)
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise Conflict("That username or email is already registered.") from None
        return user

    def change_role(self, role):
        """Set the role; demoting the last librarian is refused."""
        self.update_access(role=role)

    def update_access(self, role=None, active=None):
        """Change role and/or active; leaving no active librarian is refused with 409.

        Disabling ends every session of the account, so enabling it again does not
        bring old tokens back.
        """
        role = self.role if role is None else role
        active = self.active if active is None else active
        if self.is_admin and self.active and not (role == "admin" and active):
            self.keep_a_librarian("demote" if role != "admin" else "disable")
        self.role, self.active = role, active
        db.session.commit()
        if not active:
            # imported here: login_sessions imports this module
            from login_sessions import LoginSession

            LoginSession.end_all(self.id)

    def keep_a_librarian(self, action):
        """Refuse with 409 when this user is the last active librarian."""
        # locking the librarians' rows stops two of them demoting each other at once
        lock_users(User.role == "admin")
        admins = db.session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == "admin", User.active.is_(True))
        )
        if admins <= 1:
            db.session.rollback()
            raise Conflict(f"Cannot {action} the last librarian.")


def release_stale_address(email):
    """Free `email` from an account that never verified it within EMAIL_VERIFY_HOURS.

    Otherwise anyone could reserve someone else's address forever by registering it.
    """
    cutoff = utcnow() - timedelta(hours=current_app.config["EMAIL_VERIFY_HOURS"])
    db.session.execute(
        update(User)
        .where(
            User.email == email,
            User.email_verified_at.is_(None),
            User.created_at < cutoff,
        )
        .values(email=None)
        .execution_options(synchronize_session=False)
    )


def lock_users(*conditions):
    """Lock the matching accounts until commit, so that racing requests take turns.

    A no-op UPDATE, not SELECT ... FOR UPDATE: PostgreSQL locks the rows either way, but
    SQLite ignores FOR UPDATE, and only a write takes its (database-wide) write lock.
    """
    db.session.execute(
        update(User)
        .where(*conditions)
        .values(role=User.role)
        .execution_options(synchronize_session=False)
    )


def conflict_message(username_taken, username, email):
    if username_taken:
        return f"Username '{username}' is already taken."
    return f"Email '{email}' is already registered."


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    RETURNED = "returned"


def decided(now, actor, reason):
    return {"decided_at": now, "decided_by": actor.id}


@dataclass(frozen=True)
class Transition:
    """An action's required status, the status it leads to, and the other fields it sets."""

    source: RequestStatus
    target: RequestStatus
    # (now, actor, reason) -> {column: value}, written by the same UPDATE as the status
    effects: object = lambda now, actor, reason: {}
    # the mail (templates/email/<mail>.txt) queued for the patron in the same transaction
    mail: str | None = None


# the whole status machine: one row per action
TRANSITIONS = {
    "approve": Transition(
        RequestStatus.PENDING,
        RequestStatus.APPROVED,
        lambda now, actor, reason: (
            decided(now, actor, reason)
            | {"due_date": now + timedelta(days=current_app.config["LOAN_DAYS"])}
        ),
        mail="request_approved",
    ),
    "reject": Transition(
        RequestStatus.PENDING,
        RequestStatus.REJECTED,
        lambda now, actor, reason: decided(now, actor, reason) | {"reason": reason},
        mail="request_rejected",
    ),
    "cancel": Transition(RequestStatus.PENDING, RequestStatus.CANCELLED),
    "return": Transition(
        RequestStatus.APPROVED,
        RequestStatus.RETURNED,
        lambda now, actor, reason: {"returned_at": now},
        mail="request_returned",
    ),
}


class BookRequest(db.Model):
    __tablename__ = "book_request"
    __table_args__ = (
        # one index per list filter, each ending in the list's order (id), so a page reads
        # only its own rows; the user and status one also counts a patron's pending requests
        Index("ix_book_request_user_id_id", "user_id", "id"),
        Index("ix_book_request_user_id_status_id", "user_id", "status", "id"),
        Index("ix_book_request_status_id", "status", "id"),
        Index("ix_book_request_status_due_date", "status", "due_date"),
        # the library report's pending queue, oldest first
        Index("ix_book_request_status_request_date_id", "status", "request_date", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    book_name: Mapped[str] = mapped_column(String(200))
    author: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(10), default=RequestStatus.PENDING)
    request_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(String(500))
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    renewals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the due date the patron was last nudged about: one nudge per loan per due date
    nudged_due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @staticmethod
    def create(user, book_name, author=None, note=None):
        """Record a new pending request, keeping each patron under the pending limit."""
        # lock the patron's row so concurrent requests count one at a time
        lock_users(User.id == user.id)
        pending = db.session.scalar(
            select(func.count())
            .select_from(BookRequest)
            .where(BookRequest.user_id == user.id, BookRequest.status == RequestStatus.PENDING)
        )
        limit = current_app.config["MAX_PENDING_REQUESTS"]
        if pending >= limit:
            db.session.rollback()
            raise Conflict(f"You already have {limit} pending requests.")
        book_request = BookRequest(user_id=user.id, book_name=book_name, author=author, note=note)
        db.session.add(book_request)
        db.session.commit()
        return book_request

    def apply(self, action, actor, reason=None, mail=True):
        """Move the request along the status machine, atomically; a wrong status is a Conflict.

        A decision's mail to the patron is queued in the same transaction (`mail=False`
        only for made-up history, such as the demo data).
        """
        transition = TRANSITIONS[action]
        values = transition.effects(utcnow(), actor, reason) | {"status": transition.target}
        # a conditional UPDATE: of two racing actions exactly one finds the status it needs
        result = db.session.execute(
            update(BookRequest)
            .where(BookRequest.id == self.id, BookRequest.status == transition.source)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            db.session.rollback()
            db.session.refresh(self)
            raise Conflict(f"Cannot {action} a request that is {self.status}.")
        db.session.refresh(self)
        if mail and transition.mail:
            OutboxMail.queue_for_patron(
                self.user_id, f"{action}:{self.id}", transition.mail, loan=self
            )
        db.session.commit()
        return self

    def renew(self):
        """Move an approved loan's due date LOAN_DAYS on, within the limits; else a Conflict."""
        config = current_app.config
        while True:
            self.refuse_renewal_unless_allowed()
            seen_due, seen_renewals = self.due_date, self.renewals
            # only a renewal moves an approved loan's due date, so `renewals` versions it:
            # of racing renewals one wins, and the rest read again and re-check the limits
            result = db.session.execute(
                update(BookRequest)
                .where(
                    BookRequest.id == self.id,
                    BookRequest.status == RequestStatus.APPROVED,
                    BookRequest.renewals == seen_renewals,
                )
                .values(
                    renewals=seen_renewals + 1,
                    due_date=seen_due + timedelta(days=config["LOAN_DAYS"]),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                # read back before the commit: the loan as this renewal left it
                db.session.refresh(self)
                db.session.commit()
                return self
            db.session.rollback()
            db.session.refresh(self)

    def refuse_renewal_unless_allowed(self):
        config = current_app.config
        if self.status != RequestStatus.APPROVED:
            raise Conflict(f"Only approved loans renew; this request is {self.status}.")
        if self.renewals >= config["MAX_RENEWALS"]:
            raise Conflict(f"This loan has been renewed {self.renewals} time(s), the most allowed.")
        grace = config["RENEW_GRACE_DAYS"]
        if self.due_date + timedelta(days=grace) < utcnow():
            raise Conflict(
                f"This loan was due on {self.due_date:%Y-%m-%d}; loans more than "
                f"{grace} day(s) overdue cannot be renewed."
            )


class OutboxMail(db.Model):
    """A mail to a patron, committed with the change it tells of and sent by the worker."""

    __tablename__ = "outbox_mail"
    __table_args__ = (Index("ix_outbox_mail_status_created_at", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # what the mail is about, e.g. "approve:12": the same event is never queued twice
    key: Mapped[str] = mapped_column(String(100), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    # pending -> sending (claimed by one delivery) -> sent, or failed for good
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @staticmethod
    def queue_for_patron(user_id, key, template, **context):
        """Add the mail to the session, unless the patron turned mails off; not committed."""
        user = db.session.get(User, user_id)
        # an unverified address may be someone else's: it gets verification mail only
        if not user.notify or not user.email_verified:
            return None
        # the template's first line is the subject, the rest the body
        subject, _, body = (
            render_template(f"email/{template}.txt", user=user, **context).strip().partition("\n")
        )
        subject = subject.strip()[:200]
        mail = OutboxMail(key=key, user_id=user_id, subject=subject, body=body.strip())
        db.session.add(mail)
        return mail


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
            report = Report(user_id=user.id, month=month, scope=scope, enqueued_at=utcnow())
            db.session.add(report)
            try:
                db.session.commit()
                return report
            except IntegrityError:
                db.session.rollback()
            active = db.session.scalar(
                select(Report.id).where(
                    Report.user_id == user.id, Report.status.in_(REPORT_ACTIVE_STATUSES)
                )
            )
            if active is not None:
                raise Conflict("A report of yours is still being prepared.", report_id=active)
        # reports finishing faster than a request can insert: only a runaway worker does that
        raise Unavailable("Reports are changing too fast; try again.")

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
        last_seq = -1
        while True:
            # one chunk per query keeps memory flat however large the report is
            chunk = db.session.execute(
                select(ReportChunk.seq, ReportChunk.data)
                .where(
                    ReportChunk.report_id == self.id,
                    ReportChunk.format == format,
                    ReportChunk.seq > last_seq,
                )
                .order_by(ReportChunk.seq)
                .limit(1)
            ).first()
            if chunk is None:
                return
            last_seq = chunk.seq
            yield zlib.decompress(chunk.data)


class ReportChunk(db.Model):
    """One compressed piece of a stored report file, so no host needs the whole file."""

    __tablename__ = "report_chunk"

    report_id: Mapped[str] = mapped_column(
        ForeignKey("report.id", ondelete="CASCADE"), primary_key=True
    )
    format: Mapped[str] = mapped_column(String(4), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
