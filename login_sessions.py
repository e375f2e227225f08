"""Login sessions: each login starts one, both of its tokens carry its id (`sid`), and
ending it (logout, reuse of a spent refresh token, password change, disabling) ends them all.

Revocation lives here, in the database: a token is good only while its session row exists,
is not revoked and, for a refresh token, names the session's current refresh token.
"""

import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import ForeignKey, String, bindparam, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from models import User, UTCDateTime, db, utcnow

# every token must carry these (RFC 8725 §3.10: no claim may be silently optional)
REQUIRED_CLAIMS = ("exp", "iat", "jti", "type", "sub", "sid", "iss", "aud")


class LoginSession(db.Model):
    __tablename__ = "login_session"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    # the one refresh token that may still be used; any other of this session is spent
    refresh_jti: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @staticmethod
    def start(user):
        """Open a session for `user`, lasting as long as a refresh token does."""
        session = LoginSession(
            id=str(uuid.uuid4()),
            user_id=user.id,
            refresh_jti=str(uuid.uuid4()),
            expires_at=utcnow() + refresh_lifetime(),
        )
        db.session.add(session)
        db.session.commit()
        return session

    @staticmethod
    def rotate(sid, spent_jti):
        """Spend refresh token `spent_jti` and return the next one's jti, or None if spent.

        A conditional UPDATE: of two requests presenting the same refresh token, one wins.
        """
        next_jti = str(uuid.uuid4())
        result = db.session.execute(
            update(LoginSession)
            .where(
                LoginSession.id == sid,
                LoginSession.refresh_jti == spent_jti,
                LoginSession.revoked_at.is_(None),
            )
            .values(refresh_jti=next_jti)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        return next_jti if result.rowcount == 1 else None

    @staticmethod
    def end(sid):
        """Revoke one session: every token it issued is refused from now on."""
        end_sessions(LoginSession.id == sid)

    @staticmethod
    def end_all(user_id, keep_sid=None):
        """Revoke every session of the user, except `keep_sid` when given."""
        conditions = [LoginSession.user_id == user_id]
        if keep_sid is not None:
            conditions.append(LoginSession.id != keep_sid)
        end_sessions(*conditions)

    @staticmethod
    def purge_expired():
        """Delete sessions whose refresh tokens have all expired; return how many."""
        result = db.session.execute(delete(LoginSession).where(LoginSession.expires_at < utcnow()))
        db.session.commit()
        return result.rowcount


def end_sessions(*conditions):
    db.session.execute(
        update(LoginSession)
        .where(LoginSession.revoked_at.is_(None), *conditions)
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def refresh_lifetime():
    value = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


class TokenUser:
    """The token's account as the database has it at this request: its columns, and the
    read-only properties of User. Read as plain columns, without the ORM's work of loading
    an entity; a view that changes the account loads the User itself (`account()`)."""

    __slots__ = tuple(column.key for column in User.__table__.c)
    is_admin = User.is_admin
    email_verified = User.email_verified
    mail_paused = User.mail_paused

    def __init__(self, values):
        for name, value in zip(self.__slots__, values, strict=False):
            setattr(self, name, value)


# built once, run by every authenticated request with its own values: the token's user and
# its session, if that session is still unexpired
TOKEN_USER = (
    select(*User.__table__.c, LoginSession.revoked_at, LoginSession.refresh_jti, LoginSession.id)
    .outerjoin(
        LoginSession,
        (LoginSession.id == bindparam("sid"))
        & (LoginSession.user_id == User.id)
        & (LoginSession.expires_at > bindparam("now")),
    )
    .where(User.id == bindparam("user_id"))
)


def load_token_user(jwt_data):
    """Return the token's user and why the token is refused (None when it is good).

    One query answers both, since every authenticated request asks both questions.
    """
    subject = jwt_data.get("sub")
    # a malformed subject is an invalid token, not a server error
    if not isinstance(subject, str) or not subject.isdigit() or len(subject) > 10:
        return None, None
    row = (
        db.session.connection()
        .execute(
            TOKEN_USER,
            {"user_id": int(subject), "sid": str(jwt_data.get("sid")), "now": utcnow()},
        )
        .first()
    )
    if row is None:
        return None, None
    user = TokenUser(row)
    revoked_at, refresh_jti, sid = row[-3:]
    if not user.active:
        return user, "The account is disabled."
    if sid is None or revoked_at is not None:
        return user, "The session has ended; log in again."
    if jwt_data.get("type") == "refresh" and jwt_data.get("jti") != refresh_jti:
        # a spent refresh token came back: someone holds a copy, so the session ends
        LoginSession.end(sid)
        return user, "This refresh token was already used; the session has ended."
    return user, None
