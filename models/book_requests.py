"""Book requests: the status machine (TRANSITIONS) and the mails its decisions queue."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from flask import current_app, render_template
from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Conflict, UTCDateTime, db, own_commit_on_sqlite, utcnow
from models.statuses import RequestStatus
from models.users import User, lock_users


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
        """Record a new pending request, keeping each patron under the pending limit.

        Returns the inserted row's values, read by attribute (`.id`, `.status` ...), not an
        entity: plain statements, built once, on the session's connection, without the ORM's
        unit of work (`db.session.get` gives the entity). Every request creating one takes
        the write lock (SQLite) or the patron's row lock (PostgreSQL) before it counts.
        """
        limit = current_app.config["MAX_PENDING_REQUESTS"]
        values = {"user_id": user.id, "book_name": book_name, "author": author, "note": note}
        connection = db.session.connection()
        if connection.dialect.name == "sqlite":
            # one statement counts and inserts: SQLite's write lock, taken as the statement
            # starts, makes the count its own. It is the request's only write, so it runs
            # as a statement of its own, committed as it runs (`own_commit_on_sqlite`): the
            # lock is let go inside it rather than held until the COMMIT, across Python code.
            # Every column is bound, so nothing needs reading back (no RETURNING, which
            # would keep the statement, and the lock, open until its row is fetched).
            values |= {"status": RequestStatus.PENDING.value, "request_date": utcnow()}
            values |= {"renewals": 0}
            with own_commit_on_sqlite(connection):
                result = connection.execute(INSERT_UNDER_LIMIT, {**values, "limit": limit})
            row = None
            if result.rowcount == 1:
                row = SimpleNamespace(**NO_VALUES, **values, id=result.lastrowid)
        else:
            # lock the patron's row so concurrent requests count one at a time: a count
            # within the INSERT would read a snapshot from before the lock was granted
            lock_users(id=user.id)
            pending = connection.scalar(PENDING_COUNT, {"user_id": user.id})
            row = connection.execute(INSERT_REQUEST, values).one() if pending < limit else None
        if row is None:
            db.session.rollback()
            raise Conflict(f"You already have {limit} pending requests.")
        db.session.commit()
        return row

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


# built once: BookRequest.create runs them for every new request
PENDING_COUNT = (
    select(func.count())
    .select_from(BookRequest)
    .where(
        BookRequest.user_id == bindparam("user_id"),
        BookRequest.status == RequestStatus.PENDING,
    )
)
INSERT_REQUEST = (
    insert(BookRequest.__table__)
    .values(
        user_id=bindparam("user_id"),
        book_name=bindparam("book_name"),
        author=bindparam("author"),
        note=bindparam("note"),
    )
    .returning(*BookRequest.__table__.c)
)
# on SQLite, the same with every column bound (those it leaves null in NO_VALUES),
# inserting nothing when the patron is at the limit
NEW_VALUES = ("user_id", "book_name", "author", "note", "status", "request_date", "renewals")
NO_VALUES = dict.fromkeys(set(BookRequest.__table__.c.keys()) - {"id", *NEW_VALUES})
INSERT_UNDER_LIMIT = insert(BookRequest.__table__).from_select(
    NEW_VALUES,
    select(
        *(bindparam(name, type_=BookRequest.__table__.c[name].type) for name in NEW_VALUES)
    ).where(PENDING_COUNT.scalar_subquery() < bindparam("limit")),
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
