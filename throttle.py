"""Login throttling by failures: per account and per client address, with delays that grow
with each failure past a free allowance and stop growing at a cap.

Only failures count, and a delay ends on its own, so a real user behind a shared address
is slowed for at most the address's cap by someone else's guesses, never locked out;
guesses at one account spread over many addresses still meet the account's delay.
The counters live in the database, so every API process and host sees the same ones.
"""

from datetime import datetime, timedelta

from flask import current_app, request
from sqlalchemy import Integer, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from models import UTCDateTime, db, username_key, utcnow


class LoginThrottle(db.Model):
    __tablename__ = "login_throttle"

    # "account:<user id or name>" or "address:<client address>"
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


def throttle_keys(login, user):
    """The account's key (its id when it exists, so username and email share one) and the
    address's key."""
    account = f"account:{user.id}" if user is not None else f"account:{username_key(login)}"
    return [account[:120], f"address:{request.remote_addr}"[:120]]


def seconds_to_wait(keys):
    """Seconds until a login may be tried for these keys, 0 when it may be tried now."""
    now = utcnow()
    until = db.session.scalar(
        select(LoginThrottle.blocked_until)
        .where(LoginThrottle.key.in_(keys), LoginThrottle.blocked_until > now)
        .order_by(LoginThrottle.blocked_until.desc())
        .limit(1)
    )
    return 0 if until is None else max(1, int((until - now).total_seconds() + 0.999))


def rules(key):
    config = current_app.config
    if key.startswith("account:"):
        return config["LOGIN_FREE_FAILURES_PER_ACCOUNT"], config["LOGIN_MAX_DELAY_PER_ACCOUNT"]
    return config["LOGIN_FREE_FAILURES_PER_ADDRESS"], config["LOGIN_MAX_DELAY_PER_ADDRESS"]


def record_failure(keys):
    """Count one failure against each key, and set its delay: 1 s, 2 s, 4 s ... up to a cap."""
    now = utcnow()
    window = timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW"])
    for key in keys:
        for _ in range(2):  # a concurrent first failure may insert the row first
            row = db.session.get(LoginThrottle, key, with_for_update=True)
            if row is None:
                row = LoginThrottle(key=key, failures=0, last_failure_at=now)
                db.session.add(row)
            elif row.last_failure_at < now - window:
                # failures long ago are forgotten
                row.failures = 0
            row.failures += 1
            row.last_failure_at = now
            free, cap = rules(key)
            if row.failures > free:
                delay = min(2 ** min(row.failures - free - 1, 20), cap)
                row.blocked_until = now + timedelta(seconds=delay)
            try:
                db.session.commit()
                break
            except IntegrityError:
                db.session.rollback()


def clear_account(key):
    """A correct password ends the account's count (the address's count stays)."""
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
    db.session.commit()


def purge_old():
    """Delete counters untouched for longer than the failure window; return how many."""
    cutoff = utcnow() - timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW"])
    result = db.session.execute(delete(LoginThrottle).where(LoginThrottle.last_failure_at < cutoff))
    db.session.commit()
    return result.rowcount
