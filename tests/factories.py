"""Helpers the tests share: accounts and reports made directly, bearer headers, assertions."""

from models import Report, ReportStatus, User, db, password_hasher
from tests.sessions import session_tokens

PASSWORD = "correct horse"
# hashed once: accounts made directly skip an argon2 hash each
PASSWORD_HASH = password_hasher.hash(PASSWORD)


def add_user(username, role="user"):
    """Add an account whose password is PASSWORD (inside an app context); return it."""
    user = User(
        username=username, email=f"{username}@example.org", password_hash=PASSWORD_HASH, role=role
    )
    db.session.add(user)
    db.session.commit()
    return user


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def bearer_for(user_id):
    """Headers with the access token of a new session of `user_id` (inside an app context)."""
    return bearer(session_tokens(user_id)[0])


def assert_unauthorized(response):
    """A 401 in the one error shape that asks for a bearer token."""
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert set(response.json) == {"code", "status", "message"}
    assert response.json["code"] == 401


def start_report(app, user_id, **values):
    """Record a queued report without publishing it, so that no worker takes it first."""
    with app.app_context():
        report = Report(user_id=user_id, status=ReportStatus.QUEUED, **values)
        db.session.add(report)
        db.session.commit()
        return report.id
