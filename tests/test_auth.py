"""Accounts and sessions: register, login, refresh, logout and me."""

import re
import time
import uuid
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from login_sessions import LoginSession
from models import User, db, password_hasher, utcnow
from tests.factories import PASSWORD, add_user


def test_patron_registers_and_sees_own_account(client, auth):
    response = client.post(
        "/register",
        json={"username": "ada.l", "email": "Ada@Example.org", "password": "analytical"},
    )
    assert response.status_code == 201
    body = response.json
    assert body["username"] == "ada.l"
    assert body["email"] == "ada@example.org"
    assert body["role"] == "user"
    assert set(body) == {
        "id",
        "username",
        "email",
        "role",
        "notify",
        "created_at",
        "active",
        "email_verified",
        "mail_paused",
    }
    # a new address is unverified, and the account says what that means
    assert body["email_verified"] is False and "verify" in body["mail_paused"]

    tokens = auth.login({"username": "ada.l", "password": "analytical"})
    me = client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json == body


def test_password_is_stored_as_argon2id(app, auth):
    user = auth.register(password="a long password")
    with app.app_context():
        stored = db.session.get(User, user["id"]).password_hash
    assert stored.startswith("$argon2id$")
    assert "a long password" not in stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@b.org", "password": "password1"}, "username"),
        ({"username": "ab", "email": "a@b.org", "password": "password1"}, "username"),
        ({"username": "x" * 81, "email": "a@b.org", "password": "password1"}, "username"),
        ({"username": "bad name", "email": "a@b.org", "password": "password1"}, "username"),
        ({"username": "émile", "email": "a@b.org", "password": "password1"}, "username"),
        ({"username": "okname", "email": "not-an-email", "password": "password1"}, "email"),
        ({"username": "okname", "password": "password1"}, "email"),
        ({"username": "okname", "email": "a@b.org", "password": "short"}, "password"),
        ({"username": "okname", "email": "a@b.org", "password": "p" * 129}, "password"),
        ({"username": "okname", "email": "a@b.org"}, "password"),
        ({"username": 12345, "email": "a@b.org", "password": "password1"}, "username"),
        (
            {"username": "okname", "email": "a@b.org", "password": "password1", "role": "admin"},
            "role",
        ),
        ({"username": "okname", "email": "a@b.org", "password": "password1", "id": 1}, "id"),
    ],
)
def test_register_rejects_bad_bodies_naming_the_field(client, app, body, field):
    response = client.post("/register", json=body)
    assert response.status_code == 422
    assert response.json["code"] == 422
    assert response.json["status"] == "Unprocessable Entity"
    assert field in response.json["errors"]["json"]
    with app.app_context():
        assert db.session.query(User).count() == 0


def test_register_with_a_taken_username_or_email_is_409(client, auth):
    auth.register(username="taken", email="taken@example.org")
    same_name = client.post(
        "/register",
        json={"username": "taken", "email": "other@example.org", "password": "password1"},
    )
    same_email = client.post(
        "/register",
        json={"username": "other", "email": "TAKEN@example.org", "password": "password1"},
    )
    assert same_name.status_code == 409
    # the message names what is taken, as it was asked for
    assert same_name.json["message"] == "Username 'taken' is already taken."
    assert same_email.status_code == 409
    assert same_email.json["message"] == "Email 'taken@example.org' is already registered."


def test_login_accepts_username_or_email(client, auth):
    user = auth.register(username="reader", email="reader@example.org", password="password1")
    for login in ("reader", "reader@example.org", "READER@example.org"):
        response = client.post("/login", json={"username": login, "password": "password1"})
        assert response.status_code == 200, login
        body = response.json
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 900
        assert body["access_token"] and body["refresh_token"]
    assert user["id"]


def test_wrong_password_and_unknown_user_look_the_same(client, auth):
    """The same answer for both; that both take the same time is measured by bench/run.py."""
    auth.register(username="reader", password="password1")
    wrong = client.post("/login", json={"username": "reader", "password": "wrong-pass"})
    unknown = client.post("/login", json={"username": "nobody", "password": "wrong-pass"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json
    assert wrong.json["message"] == "Wrong username or password."
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"] == "Bearer"


def test_a_password_hashed_with_older_parameters_is_rehashed_at_login(client, app):
    """An account from before a change of argon2 parameters still logs in, and its stored
    hash is brought up to the current parameters on the way."""
    older = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    with app.app_context():
        user = add_user("old.reader")
        user.password_hash = older.hash("an old password")
        db.session.commit()
    response = client.post("/login", json={"username": "old.reader", "password": "an old password"})
    assert response.status_code == 200, response.json
    with app.app_context():
        stored = db.session.scalar(select(User.password_hash).where(User.username == "old.reader"))
    assert not password_hasher.check_needs_rehash(stored)
    assert password_hasher.verify(stored, "an old password")


def test_a_refresh_lifetime_configured_in_seconds_sets_the_sessions_end(client, app, monkeypatch):
    """FLASK_JWT_REFRESH_TOKEN_EXPIRES=3600 in the environment arrives as an int, not a
    timedelta; a login still works and its session lasts that long."""
    monkeypatch.setitem(app.config, "JWT_REFRESH_TOKEN_EXPIRES", 3600)
    with app.app_context():
        add_user("reader")
    before = utcnow()
    response = client.post("/login", json={"username": "reader", "password": PASSWORD})
    after = utcnow()
    assert response.status_code == 200, response.json
    with app.app_context():
        expires_at = db.session.scalar(select(LoginSession.expires_at))
    hour = timedelta(seconds=3600)
    assert before + hour <= expires_at <= after + hour


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_every_login_mints_a_refresh_token_with_an_id_of_its_own(app, auth):
    """A token id (jti) names one token (RFC 7519 §4.1.7): no two logins share one."""
    from flask_jwt_extended import decode_token

    user = auth.register()
    logins = [auth.login(user) for _ in range(2)]
    with app.app_context():
        ids = [decode_token(tokens["refresh_token"])["jti"] for tokens in logins]
    assert ids[0] != ids[1]
    assert all(uuid.UUID(jti) for jti in ids)


def test_refresh_rotates_the_refresh_token(client, auth):
    user = auth.register()
    tokens = auth.login(user)
    response = client.post("/refresh", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 200
    assert set(response.json) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert response.json["refresh_token"] != tokens["refresh_token"]
    me = client.get("/me", headers=bearer(response.json["access_token"]))
    assert me.json["id"] == user["id"]
    # the new refresh token works in turn
    again = client.post("/refresh", headers=bearer(response.json["refresh_token"]))
    assert again.status_code == 200


def test_a_rotated_refresh_token_expires_when_the_first_one_would(client, app, auth):
    from flask_jwt_extended import decode_token

    tokens = auth.login(auth.register())
    time.sleep(1.1)  # a lifetime counted from the rotation would end a second later
    rotated = client.post("/refresh", headers=bearer(tokens["refresh_token"])).json
    with app.app_context():
        first, then = (decode_token(t["refresh_token"])["exp"] for t in (tokens, rotated))
    # however often it is rotated, a login's refresh token lives no longer than the first
    assert then == first


def test_reusing_a_spent_refresh_token_ends_the_session(client, auth):
    tokens = auth.login(auth.register())
    rotated = client.post("/refresh", headers=bearer(tokens["refresh_token"])).json
    reuse = client.post("/refresh", headers=bearer(tokens["refresh_token"]))
    assert reuse.status_code == 401
    assert "already used" in reuse.json["message"]
    # every token of that login is dead now, the thief's and the owner's alike
    for token in (rotated["access_token"], tokens["access_token"]):
        assert client.get("/me", headers=bearer(token)).status_code == 401
    assert client.post("/refresh", headers=bearer(rotated["refresh_token"])).status_code == 401


def test_a_spent_refresh_token_cannot_log_out_and_ends_the_session_anywhere(client, auth):
    tokens = auth.login(auth.register())
    rotated = client.post("/refresh", headers=bearer(tokens["refresh_token"])).json
    # /logout takes either token: a spent refresh token is still refused there, as a reuse
    reuse = client.post("/logout", headers=bearer(tokens["refresh_token"]))
    assert reuse.status_code == 401
    assert reuse.json["message"] == "This refresh token was already used; the session has ended."
    assert client.get("/me", headers=bearer(rotated["access_token"])).status_code == 401


def test_a_rotation_spends_only_the_presented_token_of_its_own_live_session(app):
    """The conditional UPDATE behind /refresh: what two racing refreshes rely on."""
    with app.app_context():
        mine = LoginSession.start(add_user("rotating"))
        theirs = LoginSession.start(add_user("bystander"))
        first_jti, their_jti = mine.refresh_jti, theirs.refresh_jti
        next_jti = LoginSession.rotate(mine.id, first_jti)
        assert uuid.UUID(next_jti) and next_jti != first_jti
        # the spent token, or another session's, spends nothing
        assert LoginSession.rotate(mine.id, first_jti) is None
        assert LoginSession.rotate(mine.id, their_jti) is None
        db.session.expire_all()
        assert db.session.get(LoginSession, mine.id).refresh_jti == next_jti
        assert db.session.get(LoginSession, theirs.id).refresh_jti == their_jti
        # each rotation hands out a new jti
        assert LoginSession.rotate(theirs.id, their_jti) not in (None, next_jti, their_jti)
        # an ended session's current token is refused too
        LoginSession.end(mine.id)
        assert LoginSession.rotate(mine.id, next_jti) is None


def test_ending_sessions_again_keeps_when_each_one_ended(app):
    with app.app_context():
        user = add_user("twice")
        first, second = LoginSession.start(user), LoginSession.start(user)
        LoginSession.end(first.id)
        db.session.expire_all()
        ended = db.session.get(LoginSession, first.id).revoked_at
        assert ended is not None
        LoginSession.end_all(user.id)
        db.session.expire_all()
        assert db.session.get(LoginSession, first.id).revoked_at == ended
        assert db.session.get(LoginSession, second.id).revoked_at >= ended


def test_logout_with_the_access_token_ends_the_whole_session(client, auth):
    user = auth.register()
    tokens, other = auth.login(user), auth.login(user)
    assert client.post("/logout", headers=bearer(tokens["access_token"])).status_code == 200
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json["message"] == "The session has ended; log in again."
    assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 401
    # another login of the same account is another session
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 200


def test_logout_with_the_refresh_token_ends_the_whole_session(client, auth):
    tokens = auth.login(auth.register())
    assert client.post("/logout", headers=bearer(tokens["refresh_token"])).status_code == 200
    assert client.post("/refresh", headers=bearer(tokens["refresh_token"])).status_code == 401
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401


def test_logout_all_ends_every_session(client, auth):
    user, stranger = auth.register(), auth.register()
    first, second = auth.login(user), auth.login(user)
    kept = auth.login(stranger)
    assert client.post("/logout-all", headers=bearer(first["access_token"])).status_code == 200
    for token in (first["access_token"], second["access_token"]):
        assert client.get("/me", headers=bearer(token)).status_code == 401
    assert client.post("/refresh", headers=bearer(second["refresh_token"])).status_code == 401
    assert client.get("/me", headers=bearer(kept["access_token"])).status_code == 200
    # logging in again works
    assert client.get("/me", headers=bearer(auth.login(user)["access_token"])).status_code == 200


def test_password_change_ends_every_other_session(client, auth):
    user = auth.register(password="old password")
    current, other = auth.login(user), auth.login(user)
    response = client.post(
        "/me/password",
        json={"current_password": "old password", "new_password": "new password"},
        headers=bearer(current["access_token"]),
    )
    assert response.status_code == 200, response.json
    assert client.get("/me", headers=bearer(current["access_token"])).status_code == 200
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 401
    old = client.post("/login", json={"username": user["username"], "password": "old password"})
    assert old.status_code == 401
    new = client.post("/login", json={"username": user["username"], "password": "new password"})
    assert new.status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        ({"current_password": "wrong password", "new_password": "new password"}, 403),
        ({"current_password": "old password", "new_password": "short"}, 422),
        ({"current_password": "old password"}, 422),
        ({"new_password": "new password"}, 422),
        ({"current_password": "old password", "new_password": "n" * 129}, 422),
    ],
)
def test_password_change_refuses_bad_bodies(client, auth, body, status):
    user = auth.register(password="old password")
    tokens, other = auth.login(user), auth.login(user)
    response = client.post("/me/password", json=body, headers=bearer(tokens["access_token"]))
    assert response.status_code == status, response.json
    # nothing changed: the old password still logs in, the other session still works
    assert client.get("/me", headers=bearer(other["access_token"])).status_code == 200
    auth.login(user)


def test_role_is_read_from_the_database_not_the_token(client, app, auth):
    user = auth.register()
    headers = auth.headers(user)
    assert client.get("/users", headers=headers).status_code == 403
    with app.app_context():
        db.session.get(User, user["id"]).role = "admin"
        db.session.commit()
    # same token, whose role claim still says "user"
    assert client.get("/users", headers=headers).status_code == 200


def verification_mails(app, user_id):
    from models import OutboxMail

    with app.app_context():
        return db.session.scalars(
            select(OutboxMail.body).where(
                OutboxMail.user_id == user_id, OutboxMail.key.startswith("verify:")
            )
        ).all()


def token_in(body):
    return re.search(r"verify-email\?token=(\S+)", body).group(1)


def test_registration_mails_a_link_that_verifies_the_address(client, app, auth):
    user = auth.register(verified=False)
    headers = auth.headers(user)
    (body,) = verification_mails(app, user["id"])
    token = token_in(body)
    # the mail also shows the POST, for clients that cannot open links
    assert f'"token": "{token}"' in body
    response = client.post("/verify-email", json={"token": token})
    assert response.status_code == 200, response.json
    me = client.get("/me", headers=headers).json
    assert (me["email_verified"], me["mail_paused"]) == (True, None)
    # the link works as a link too, and verifying twice is harmless
    assert client.get(f"/verify-email?token={token}").status_code == 200


def test_resending_the_verification_mail_is_rate_limited(client, app, auth):
    user = auth.register(verified=False)
    headers = auth.headers(user)
    for _ in range(3):
        assert client.post("/verify-email/resend", headers=headers).status_code == 202
    refused = client.post("/verify-email/resend", headers=headers)
    assert refused.status_code == 429
    assert len(verification_mails(app, user["id"])) == 4
    # any of the links verifies
    token = token_in(verification_mails(app, user["id"])[-1])
    assert client.post("/verify-email", json={"token": token}).status_code == 200


def test_resending_to_a_verified_address_is_409(client, auth):
    response = client.post("/verify-email/resend", headers=auth.headers(auth.register()))
    assert response.status_code == 409


def test_an_unverified_address_is_released_after_email_verify_hours(client, app, auth):
    squatter = auth.register(email="ceo@victim-corp.example", verified=False)
    old_token = token_in(verification_mails(app, squatter["id"])[0])
    body = {"username": "the.ceo", "email": "ceo@victim-corp.example", "password": "password1"}
    # while it is fresh the address stays reserved
    assert client.post("/register", json=body).status_code == 409
    with app.app_context():
        hours = app.config["EMAIL_VERIFY_HOURS"]
        db.session.get(User, squatter["id"]).created_at = utcnow() - timedelta(hours=hours + 1)
        db.session.commit()
    owner = client.post("/register", json=body)
    assert owner.status_code == 201, owner.json
    with app.app_context():
        assert db.session.get(User, squatter["id"]).email is None
    # the squatter's old link verifies nothing now
    assert client.post("/verify-email", json={"token": old_token}).status_code == 400
    me = client.get("/me", headers=auth.headers(squatter)).json
    assert me["email"] is None and "released" in me["mail_paused"]


def test_a_registration_releases_only_the_stale_address_it_takes(client, app, auth):
    """Another account's unverified address, however old, stays with it."""
    squatter = auth.register(email="taken@example.org", verified=False)
    bystander = auth.register(email="waiting@example.org", verified=False)
    with app.app_context():
        long_ago = utcnow() - timedelta(hours=app.config["EMAIL_VERIFY_HOURS"] + 1)
        for account in (squatter, bystander):
            db.session.get(User, account["id"]).created_at = long_ago
        db.session.commit()
    body = {"username": "the.owner", "email": "taken@example.org", "password": "password1"}
    assert client.post("/register", json=body).status_code == 201
    with app.app_context():
        assert db.session.get(User, squatter["id"]).email is None
        assert db.session.get(User, bystander["id"]).email == "waiting@example.org"


def test_a_verified_address_is_never_released(client, app, auth):
    holder = auth.register(email="kept@example.org")
    with app.app_context():
        db.session.get(User, holder["id"]).created_at = utcnow() - timedelta(days=365)
        db.session.commit()
    body = {"username": "another", "email": "kept@example.org", "password": "password1"}
    assert client.post("/register", json=body).status_code == 409
