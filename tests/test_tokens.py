"""Every token problem is a 401 with `WWW-Authenticate: Bearer`, and leaks nothing."""

import base64
import json
import time
from datetime import timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token

from login_sessions import LoginSession
from models import User, db
from tests.factories import assert_unauthorized
from tests.sessions import session_tokens


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(user_id, sid="no-such-session", **extra):
    now = int(time.time())
    return {
        "sub": str(user_id),
        "sid": sid,
        "iss": "library-api",
        "aud": "library-api",
        "jti": f"jti-{now}-{user_id}",
        "type": "access",
        "fresh": False,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "role": "user",
        **extra,
    }


@pytest.fixture
def patron(auth):
    user = auth.register()
    user["tokens"] = auth.login(user)
    return user


def test_missing_token(client):
    assert_unauthorized(client.get("/me"))


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Token abc",
        "Basic dXNlcjpwYXNz",
        "Bearer not.a.jwt",
        "Bearer a.b",
        "Bearer ###",
        "bearer {token}",
        "Bearer {token} Bearer {token}",
        "Bearer {token}x",
        "{token}",
    ],
)
def test_malformed_authorization_headers(client, patron, header):
    value = header.format(token=patron["tokens"]["access_token"])
    assert_unauthorized(client.get("/me", headers={"Authorization": value}))


def test_token_signed_with_another_key(client, patron):
    forged = pyjwt.encode(
        claims(patron["id"]), "not-the-server-key-but-long-enough-for-hs256", algorithm="HS256"
    )
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {forged}"}))


def test_alg_none_token(client, patron):
    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(patron['id']))}."
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {forged}"}))


def test_payload_tampered_to_claim_admin(client, patron):
    header, _, signature = patron["tokens"]["access_token"].split(".")
    payload = pyjwt.decode(patron["tokens"]["access_token"], options={"verify_signature": False})
    payload["role"] = "admin"
    tampered = f"{header}.{b64(payload)}.{signature}"
    response = client.get("/users", headers={"Authorization": f"Bearer {tampered}"})
    assert_unauthorized(response)


def test_expired_token(client, app, patron):
    with app.app_context():
        token, _ = session_tokens(patron["id"], expires_delta=timedelta(seconds=-1))
    response = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert_unauthorized(response)
    assert "expired" in response.json["message"]


def test_token_not_yet_valid(client, app, patron):
    key = app.config["JWT_SECRET_KEY"]
    future = int(time.time()) + 3600
    token = pyjwt.encode(claims(patron["id"], nbf=future, iat=future), key, algorithm="HS256")
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_refresh_token_used_as_access(client, patron):
    refresh = {"Authorization": f"Bearer {patron['tokens']['refresh_token']}"}
    assert_unauthorized(client.get("/me", headers=refresh))


def test_access_token_used_to_refresh(client, patron):
    access = {"Authorization": f"Bearer {patron['tokens']['access_token']}"}
    assert_unauthorized(client.post("/refresh", headers=access))


def test_revoked_token(client, patron):
    access = {"Authorization": f"Bearer {patron['tokens']['access_token']}"}
    assert client.post("/logout", headers=access).status_code == 200
    assert_unauthorized(client.get("/me", headers=access))
    assert_unauthorized(client.post("/logout", headers=access))


def test_token_of_a_deleted_user(client, app, patron):
    with app.app_context():
        db.session.delete(db.session.get(User, patron["id"]))
        db.session.commit()
    access = {"Authorization": f"Bearer {patron['tokens']['access_token']}"}
    assert_unauthorized(client.get("/me", headers=access))
    refresh = {"Authorization": f"Bearer {patron['tokens']['refresh_token']}"}
    assert_unauthorized(client.post("/refresh", headers=refresh))


@pytest.mark.parametrize("subject", ["abc", "", "-1", "1.5", "9" * 30])
def test_token_with_a_strange_subject(client, app, subject):
    with app.app_context():
        # every required claim is there, so the subject itself is what gets checked
        token = create_access_token(identity=subject, additional_claims={"sid": "no-session"})
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_integer_subject_is_refused(client, app, patron):
    key = app.config["JWT_SECRET_KEY"]
    token = pyjwt.encode({**claims(patron["id"]), "sub": patron["id"]}, key, algorithm="HS256")
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_tokens_carry_the_user_id_as_a_string_subject(app, patron):
    payload = pyjwt.decode(
        patron["tokens"]["access_token"],
        app.config["JWT_SECRET_KEY"],
        algorithms=["HS256"],
        audience="library-api",
    )
    assert payload["sub"] == str(patron["id"])
    assert payload["role"] == "user"
    refresh = pyjwt.decode(patron["tokens"]["refresh_token"], options={"verify_signature": False})
    assert refresh["type"] == "refresh"
    # both tokens of a login carry the same session, which /logout ends as a whole
    assert refresh["sid"] == payload["sid"]
    assert (payload["iss"], payload["aud"]) == ("library-api", "library-api")


def test_login_tokens_name_their_session_and_end_with_it(client, app, patron):
    tokens = patron["tokens"]
    assert (tokens["token_type"], tokens["expires_in"]) == ("Bearer", 900)
    key = app.config["JWT_SECRET_KEY"]
    access = pyjwt.decode(tokens["access_token"], key, algorithms=["HS256"], audience="library-api")
    refresh = pyjwt.decode(
        tokens["refresh_token"], key, algorithms=["HS256"], audience="library-api"
    )
    with app.app_context():
        session = db.session.get(LoginSession, access["sid"])
        assert session.user_id == patron["id"]
        assert refresh["jti"] == session.refresh_jti
        # the refresh token lasts as long as its session (to the second it is minted in)
        assert 0 <= refresh["exp"] - int(session.expires_at.timestamp()) <= 1
    assert access["exp"] - access["iat"] == 900
    # a rotated refresh token keeps the session's end, however often it is rotated
    rotated = client.post(
        "/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    ).json
    again = pyjwt.decode(
        rotated["refresh_token"], key, algorithms=["HS256"], audience="library-api"
    )
    assert (again["sid"], again["exp"]) == (refresh["sid"], refresh["exp"])
    assert again["jti"] != refresh["jti"]


def live_claims(app, user_id):
    """Claims of a token that would be accepted: a real session, signed with the key."""
    with app.app_context():
        access, _ = session_tokens(user_id)
    return pyjwt.decode(
        access, app.config["JWT_SECRET_KEY"], audience="library-api", algorithms=["HS256"]
    )


def test_a_well_formed_hand_made_token_is_accepted(client, app, patron):
    # the control for the tests below: only the one changed claim makes them fail
    token = pyjwt.encode(live_claims(app, patron["id"]), app.config["JWT_SECRET_KEY"])
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("claim", ["exp", "type", "jti", "sid", "iss", "aud", "iat"])
def test_a_token_missing_a_required_claim_is_refused(client, app, patron, claim):
    payload = live_claims(app, patron["id"])
    del payload[claim]
    token = pyjwt.encode(payload, app.config["JWT_SECRET_KEY"])
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


@pytest.mark.parametrize(
    "claim, value",
    [("iss", "https://evil.example"), ("aud", "another-service"), ("aud", ["another-service"])],
)
def test_a_token_for_another_issuer_or_audience_is_refused(client, app, patron, claim, value):
    payload = {**live_claims(app, patron["id"]), claim: value}
    token = pyjwt.encode(payload, app.config["JWT_SECRET_KEY"])
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_a_token_without_a_session_is_refused(client, app, patron):
    with app.app_context():
        token = create_access_token(identity=str(patron["id"]))
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_a_session_of_another_user_does_not_carry_a_token(client, app, auth, patron):
    other = auth.register()
    payload = {**live_claims(app, other["id"]), "sub": str(patron["id"])}
    token = pyjwt.encode(payload, app.config["JWT_SECRET_KEY"])
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_a_deleted_users_token_never_acts_as_a_new_user(client, app, auth):
    """On SQLite without AUTOINCREMENT the next user took the deleted one's id."""
    first = auth.register()
    first_tokens = auth.login(first)
    with app.app_context():
        db.session.delete(db.session.get(User, first["id"]))
        db.session.commit()
    second = auth.register()
    assert second["id"] > first["id"]
    assert_unauthorized(
        client.get("/me", headers={"Authorization": f"Bearer {first_tokens['access_token']}"})
    )
    # even a hand-made token naming the old id finds nobody
    with app.app_context():
        token = create_access_token(identity=str(first["id"]), additional_claims={"sid": "x"})
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))
