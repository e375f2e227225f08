"""Accounts and sessions: register, login, refresh, logout and me."""

import pytest

from models import User, db


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
    assert set(body) == {"id", "username", "email", "role", "created_at", "notify"}

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
    assert "taken" in same_name.json["message"]
    assert same_email.status_code == 409


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
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"] == "Bearer"


def test_refresh_gives_a_new_access_token(client, auth):
    user = auth.register()
    tokens = auth.login(user)
    response = client.post(
        "/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )
    assert response.status_code == 200
    assert set(response.json) == {"access_token", "token_type", "expires_in"}
    me = client.get("/me", headers={"Authorization": f"Bearer {response.json['access_token']}"})
    assert me.json["id"] == user["id"]


def test_logout_revokes_the_presented_access_token(client, auth):
    headers = auth.headers()
    assert client.post("/logout", headers=headers).status_code == 200
    response = client.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "revoked" in response.json["message"]


def test_logout_with_a_refresh_token_revokes_it(client, auth):
    tokens = auth.login(auth.register())
    refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    assert client.post("/logout", headers=refresh).status_code == 200
    assert client.post("/refresh", headers=refresh).status_code == 401
    # the access token is a different token and still works
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/me", headers=access).status_code == 200


def test_role_is_read_from_the_database_not_the_token(client, app, auth):
    user = auth.register()
    headers = auth.headers(user)
    assert client.get("/users", headers=headers).status_code == 403
    with app.app_context():
        db.session.get(User, user["id"]).role = "admin"
        db.session.commit()
    # same token, whose role claim still says "user"
    assert client.get("/users", headers=headers).status_code == 200
