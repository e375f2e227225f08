"""Database models and the business rules that belong to them."""

import uuid
import zlib
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from flask import current_app
from flask_smorest import abort
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): ~20 ms a hash here
password_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# verified against when the user does not exist, so both failures cost the same time
DUMMY_PASSWORD_HASH = password_hasher.hash("not-a-real-password")


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

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


class User(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(10), default="user")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def is_admin(self):
        return self.role == "admin"

    def set_password(self, password):
        self.password_hash = password_hasher.hash(password)

    def check_password(self, password):
        try:
            return password_hasher.verify(self.password_hash, password)
        except (VerifyMismatchError, InvalidHashError):
            return False

    @staticmethod
    def for_token(jwt_data):
        """Return the token's user (None when gone) and whether the token is revoked.

        One query for both, since every authenticated request asks both questions.
        """
        subject = jwt_data.get("sub")
        # a malformed subject is an invalid token, not a server error
        if not isinstance(subject, str) or not subject.isdigit() or len(subject) > 10:
            return None, False
        revoked = select(RevokedToken.id).where(RevokedToken.jti == jwt_data.get("jti", ""))
        row = db.session.execute(
            select(User, revoked.exists()).where(User.id == int(subject))
        ).first()
        return (row[0], row[1]) if row else (None, False)

    @staticmethod
    def authenticate(login, password):
        """Return the user whose username or email and password match, else None."""
        user = db.session.scalar(
            select(User).where((User.username == login) | (User.email == login.lower()))
        )
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
    def register(username, email, password, role="user"):
        """Create a user; a taken username or email is 409, also when two requests race."""
        taken = db.session.scalar(
            select(User.username).where((User.username == username) | (User.email == email))
        )
        if taken is not None:
            abort(409, message=conflict_message(taken == username, username, email))
        user = User(username=username, email=email, role=role)
        user.set_password(password)
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            abort(409, message="That username or email is already registered.")
        return user

    def change_role(self, role):
        """Set the role; demoting the last librarian is refused."""
        if self.role == "admin" and role != "admin":
            # locking the librarians' rows stops two of them demoting each other at once
            lock_users(User.role == "admin")
            admins = db.session.scalar(
                select(func.count()).select_from(User).where(User.role == "admin")
            )
            if admins <= 1:
                db.session.rollback()
                abort(409, message="Cannot demote the last librarian.")
        self.role = role
        db.session.commit()


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


# the whole status machine: action -> (status it requires, status it leads to)
TRANSITIONS = {
    "approve": ("pending", "approved"),
    "reject": ("pending", "rejected"),
    "cancel": ("pending", "cancelled"),
    "return": ("approved", "returned"),
}
REQUEST_STATUSES = ("pending", "approved", "rejected", "cancelled", "returned")


class BookRequest(db.Model):
    __tablename__ = "book_request"
    __table_args__ = (
        Index("ix_book_request_user_id_id", "user_id", "id"),
        # the pending count every new request makes, however long the patron's history
        Index("ix_book_request_user_id_status", "user_id", "status"),
        Index("ix_book_request_status_due_date", "status", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    book_name: Mapped[str] = mapped_column(String(200))
    author: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    request_date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(String(500))
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @staticmethod
    def create(user, book_name, author=None, note=None):
        """Record a new pending request, keeping each patron under the pending limit."""
        # lock the patron's row so concurrent requests count one at a time
        lock_users(User.id == user.id)
        pending = db.session.scalar(
            select(func.count())
            .select_from(BookRequest)
            .where(BookRequest.user_id == user.id, BookRequest.status == "pending")
        )
        limit = current_app.config["MAX_PENDING_REQUESTS"]
        if pending >= limit:
            db.session.rollback()
            abort(409, message=f"You already have {limit} pending requests.")
        book_request = BookRequest(user_id=user.id, book_name=book_name, author=author, note=note)
        db.session.add(book_request)
        db.session.commit()
        return book_request

    def apply(self, action, actor, reason=None):
        """Move the request along the status machine, atomically; a wrong status is 409."""
        required, target = TRANSITIONS[action]
        now = utcnow()
        values = {"status": target}
        if action in ("approve", "reject"):
            values.update(decided_at=now, decided_by=actor.id)
        if action == "approve":
            values["due_date"] = now + timedelta(days=current_app.config["LOAN_DAYS"])
        if action == "reject":
            values["reason"] = reason
        if action == "return":
            values["returned_at"] = now
        # a conditional UPDATE: of two racing actions exactly one finds the status it needs
        result = db.session.execute(
            update(BookRequest)
            .where(BookRequest.id == self.id, BookRequest.status == required)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        db.session.refresh(self)
        if result.rowcount != 1:
            abort(409, message=f"Cannot {action} a request that is {self.status}.")
        return self


REPORT_ACTIVE_STATUSES = ("queued", "running")


class Report(db.Model):
    __table_args__ = (
        Index("ix_report_user_id_created_at", "user_id", "created_at"),
        # at most one queued or running report per user, enforced by the database itself
        Index(
            "uq_report_one_active_per_user",
            "user_id",
            unique=True,
            sqlite_where=db.text("status IN ('queued', 'running')"),
            postgresql_where=db.text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=lambda: str(uuid.uuid4()))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10), default="queued", index=True)
    month: Mapped[str | None] = mapped_column(String(7))
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
    html_size: Mapped[int | None] = mapped_column(Integer)
    csv_size: Mapped[int | None] = mapped_column(Integer)

    @staticmethod
    def start(user, month=None):
        """Record a queued report, or 409 naming the user's report that is still active."""
        report = Report(user_id=user.id, month=month, enqueued_at=utcnow())
        db.session.add(report)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            active = db.session.scalar(
                select(Report.id).where(
                    Report.user_id == user.id, Report.status.in_(REPORT_ACTIVE_STATUSES)
                )
            )
            abort(
                409,
                message="A report of yours is still being prepared.",
                report_id=active,
            )
        return report

    @property
    def is_done(self):
        return self.status == "done"

    def read_chunks(self, kind):
        """Yield the stored file decompressed, one chunk at a time."""
        last_seq = -1
        while True:
            # one chunk per query keeps memory flat however large the report is
            chunk = db.session.execute(
                select(ReportChunk.seq, ReportChunk.data)
                .where(
                    ReportChunk.report_id == self.id,
                    ReportChunk.kind == kind,
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
    """One compressed piece of a report's HTML or CSV, so no host needs the whole file."""

    __tablename__ = "report_chunk"

    report_id: Mapped[str] = mapped_column(
        ForeignKey("report.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(4), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class RevokedToken(db.Model):
    __tablename__ = "revoked_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    @staticmethod
    def revoke(jwt_payload):
        """Record the token as revoked; revoking it twice is harmless."""
        db.session.add(
            RevokedToken(
                jti=jwt_payload["jti"],
                user_id=int(jwt_payload["sub"]),
                expires_at=datetime.fromtimestamp(jwt_payload["exp"], UTC),
            )
        )
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()


def paginate(statement, page, per_page):
    """Run `statement` for one page and return the page envelope.

    The total rides along on each row as a window count, so a page costs one query.
    """
    rows = db.session.execute(
        statement.add_columns(func.count().over()).limit(per_page).offset((page - 1) * per_page)
    ).all()
    if rows:
        total = rows[0][1]
    elif page == 1:
        total = 0
    else:  # past the last page: no row to carry the total
        total = db.session.scalar(
            select(func.count()).select_from(statement.order_by(None).subquery())
        )
    return {
        "items": [row[0] for row in rows],
        "page": page,
        "per_page": per_page,
        "total": total,
        "pages": -(-total // per_page),
    }
