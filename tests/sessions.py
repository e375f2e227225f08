"""Mint tokens the way /login does (a session row and its `sid`), for tests that need
tokens with particular claims or for users created straight in the database."""

from flask_jwt_extended import create_access_token, create_refresh_token

from login_sessions import LoginSession
from models import User, db


def session_tokens(user_id, expires_delta=None, **claims):
    """Return `(access, refresh)` of a new session of the user, inside an app context."""
    session = LoginSession.start(db.session.get(User, user_id))
    identity = str(user_id)
    access = create_access_token(
        identity=identity,
        expires_delta=expires_delta,
        additional_claims={"sid": session.id, **claims},
    )
    refresh = create_refresh_token(
        identity=identity, additional_claims={"sid": session.id, "jti": session.refresh_jti}
    )
    return access, refresh
