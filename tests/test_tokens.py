"""Every token problem is a 401 with `WWW-Authenticate: Bearer`, and leaks nothing."""

import base64
import json
import time
from datetime import timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token, create_refresh_token

from models import User, db
from tests.factories import assert_unauthorized


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(user_id, **extra):
    now = int(time.time())
    return {
        "sub": str(user_id),
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
        token = create_access_token(identity=str(patron["id"]), expires_delta=timedelta(seconds=-1))
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


@pytest.mark.parametrize("subject", ["abc", "", "-1", "1.5"])
def test_token_with_a_strange_subject(client, app, subject):
    with app.app_context():
        token = create_access_token(identity=subject)
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_integer_subject_is_refused(client, app, patron):
    key = app.config["JWT_SECRET_KEY"]
    token = pyjwt.encode({**claims(patron["id"]), "sub": patron["id"]}, key, algorithm="HS256")
    assert_unauthorized(client.get("/me", headers={"Authorization": f"Bearer {token}"}))


def test_tokens_carry_the_user_id_as_a_string_subject(app, patron):
    payload = pyjwt.decode(
        patron["tokens"]["access_token"], app.config["JWT_SECRET_KEY"], algorithms=["HS256"]
    )
    assert payload["sub"] == str(patron["id"])
    assert payload["role"] == "user"
    with app.app_context():
        refresh = create_refresh_token(identity=str(patron["id"]))
    assert pyjwt.decode(refresh, options={"verify_signature": False})["type"] == "refresh"
