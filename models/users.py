"""Accounts: the User model, password hashing, and the rules on usernames, emails and roles."""

import functools
import unicodedata
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from flask import current_app
from sqlalchemy import Boolean, String, bindparam, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Conflict, UTCDateTime, db, utcnow

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): ~20 ms a hash here
password_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# verified against when the user does not exist, so both failures cost the same time
DUMMY_PASSWORD_HASH = password_hasher.hash("not-a-real-password")


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
        # hashed before the address release below, whose UPDATE holds SQLite's write lock
        # until the commit: registrations would otherwise wait for each other's hashing
        password_hash = password_hasher.hash(password)
        release_stale_address(email)
        taken = db.session.scalar(
            select(User.username_key).where((User.username_key == key) | (User.email == email))
        )
        if taken is not None:
            raise Conflict(conflict_message(taken == key, username, email))
        user = User(username=username, email=email, role=role, password_hash=password_hash)
        user.email_verified_at = utcnow() if verified else None
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise Conflict("That username or email is already registered.") from None
        return user

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
        lock_users(role="admin")
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


def lock_users(**values):
    """Lock the accounts whose columns hold `values` (`lock_users(id=7)`) until commit, so
    that racing requests take turns.

    A no-op UPDATE, not SELECT ... FOR UPDATE: PostgreSQL locks the rows either way, but
    SQLite ignores FOR UPDATE, and only a write takes its (database-wide) write lock. It
    names the table's columns, not the entity's, so it runs as a plain statement without
    the ORM's bulk-update work, built once per set of columns.
    """
    db.session.connection().execute(
        lock_statement(*sorted(values)), {f"lock_{name}": value for name, value in values.items()}
    )


@functools.cache
def lock_statement(*names):
    table = User.__table__
    return (
        update(table)
        .where(*(table.c[name] == bindparam(f"lock_{name}") for name in names))
        .values(role=table.c.role)
    )


def conflict_message(username_taken, username, email):
    if username_taken:
        return f"Username '{username}' is already taken."
    return f"Email '{email}' is already registered."
