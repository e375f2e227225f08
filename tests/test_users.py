"""Librarian administration of accounts, and the create-admin command."""

import pytest
from sqlalchemy import select

from models import User, db, utcnow


def test_librarian_lists_users_in_pages(client, auth):
    _, librarian = auth.librarian()
    auth.register()
    page = client.get("/users?per_page=1", headers=librarian).json
    assert (page["total"], page["pages"], len(page["items"])) == (2, 2, 1)
    assert "password_hash" not in page["items"][0]


def test_librarian_promotes_and_demotes(client, auth):
    _, librarian = auth.librarian()
    patron = auth.register()
    promoted = client.patch(f"/users/{patron['id']}", json={"role": "admin"}, headers=librarian)
    assert promoted.status_code == 200 and promoted.json["role"] == "admin"
    demoted = client.patch(f"/users/{patron['id']}", json={"role": "user"}, headers=librarian)
    assert demoted.json["role"] == "user"


def test_last_librarian_cannot_be_demoted(client, app, auth):
    librarian_user, librarian = auth.librarian()
    # an active patron is no librarian to keep
    auth.register()
    response = client.patch(
        f"/users/{librarian_user['id']}", json={"role": "user"}, headers=librarian
    )
    assert response.status_code == 409
    assert response.json["message"] == "Cannot demote the last librarian."
    with app.app_context():
        assert db.session.get(User, librarian_user["id"]).role == "admin"


def test_patch_validates_role_and_user(client, auth):
    _, librarian = auth.librarian()
    patron = auth.register()
    for body in [{}, {"role": "superuser"}, {"role": "admin", "email": "x@y.org"}]:
        response = client.patch(f"/users/{patron['id']}", json=body, headers=librarian)
        assert response.status_code == 422, body
    assert (
        client.patch("/users/99999", json={"role": "admin"}, headers=librarian).status_code == 404
    )


def test_create_admin_command_creates_a_librarian(runner, client, app):
    result = runner.invoke(
        args=[
            "create-admin",
            "--username",
            "head",
            "--email",
            "Head@Example.org",
            "--password-stdin",
        ],
        input="a strong password\n",
    )
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    response = client.post("/login", json={"username": "head", "password": "a strong password"})
    token = response.json["access_token"]
    me = client.get("/me", headers={"Authorization": f"Bearer {token}"}).json
    assert (me["role"], me["email"]) == ("admin", "head@example.org")
    # the operator's own address: verified, so it is mailed and never released to another
    assert (me["email_verified"], me["mail_paused"]) == (True, None)


def create_admin(runner, *args, password=None):
    flags = ["--password-stdin"] if password is not None else []
    return runner.invoke(
        args=["create-admin", *args, *flags], input=None if password is None else password + "\n"
    )


def login(client, username, password):
    return client.post("/login", json={"username": username, "password": password})


def test_create_admin_refuses_a_squatted_username(runner, client, app, auth):
    """Someone registered the walkthrough's librarian name first, with their own email."""
    auth.register(username="librarian", email="squatter@evil.example", password="squatter pw")
    for args in (
        ["--username", "librarian", "--email", "librarian@example.org"],
        ["--username", "LIBRARIAN", "--email", "librarian@example.org"],
        ["--username", "librarian", "--email", "librarian@example.org", "--promote"],
    ):
        result = create_admin(runner, *args, password="the operator's password")
        assert result.exit_code != 0, result.output
        assert "librarian" in result.output and "Error" in result.output
    with app.app_context():
        assert db.session.scalar(select(User.role)) == "user"
    # neither password gives a librarian: the squatter's is still a patron's
    assert login(client, "librarian", "the operator's password").status_code == 401
    token = login(client, "librarian", "squatter pw").json["access_token"]
    assert client.get("/users", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_create_admin_without_promote_names_the_flag(runner, auth):
    auth.register(username="promote.me", email="me@example.org")
    result = create_admin(runner, "--username", "promote.me", "--email", "me@example.org")
    assert result.exit_code != 0
    assert "--promote" in result.output


def test_create_admin_promotes_a_verified_account_whose_email_matches(runner, app, auth):
    user = auth.register(username="promote.me", email="me@example.org")
    with app.app_context():
        db.session.get(User, user["id"]).email_verified_at = utcnow()
        db.session.commit()
    result = create_admin(
        runner, "--username", "promote.me", "--email", "ME@example.org", "--promote"
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.query(User).count() == 1
        assert db.session.get(User, user["id"]).role == "admin"


def test_promoting_an_unverified_account_needs_a_new_password(runner, client, app, auth):
    """A squatter may have typed the operator's address: only the operator's password is safe."""
    user = auth.register(
        username="librarian", email="librarian@example.org", password="squatted!", verified=False
    )
    squatter = auth.login(user)
    args = ["--username", "librarian", "--email", "librarian@example.org", "--promote"]
    refused = create_admin(runner, *args)
    assert refused.exit_code != 0 and "--password-stdin" in refused.output
    promoted = create_admin(runner, *args, password="operator password")
    assert promoted.exit_code == 0, promoted.output
    assert login(client, "librarian", "squatted!").status_code == 401
    assert login(client, "librarian", "operator password").status_code == 200
    # the squatter's session ended with the old password
    headers = {"Authorization": f"Bearer {squatter['access_token']}"}
    assert client.get("/me", headers=headers).status_code == 401


def test_create_admin_never_ignores_a_given_password(runner, client, app, auth):
    user = auth.register(username="head", email="head@example.org", password="old password")
    with app.app_context():
        db.session.get(User, user["id"]).email_verified_at = utcnow()
        db.session.commit()
    args = ["--username", "head", "--email", "head@example.org", "--promote"]
    result = create_admin(runner, *args, password="new password")
    assert result.exit_code == 0, result.output
    assert "new password" in result.output
    assert login(client, "head", "new password").status_code == 200


def test_create_admin_refuses_an_email_someone_else_has(runner, app, auth):
    auth.register(username="someone", email="taken@example.org")
    result = create_admin(
        runner, "--username", "head", "--email", "taken@example.org", password="long enough"
    )
    assert result.exit_code != 0 and "already registered" in result.output
    with app.app_context():
        assert db.session.query(User).count() == 1


def test_create_admin_refuses_a_short_password(runner, app):
    result = runner.invoke(
        args=["create-admin", "--username", "head", "--email", "h@example.org", "--password-stdin"],
        input="short\n",
    )
    assert result.exit_code != 0
    assert "between 8 and 128" in result.output
    with app.app_context():
        assert db.session.query(User).count() == 0


def test_librarian_disables_and_enables_an_account(client, auth):
    _, librarian = auth.librarian()
    patron = auth.register()
    tokens = auth.login(patron)
    response = client.patch(f"/users/{patron['id']}", json={"active": False}, headers=librarian)
    assert response.status_code == 200 and response.json["active"] is False
    me = client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 401 and me.json["message"] == "The account is disabled."
    refresh = client.post(
        "/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )
    assert refresh.status_code == 401
    body = {"username": patron["username"], "password": patron["password"]}
    refused = client.post("/login", json=body)
    assert refused.status_code == 401 and "disabled" in refused.json["message"]
    # a wrong password on a disabled account says nothing about it being disabled
    wrong = client.post("/login", json={**body, "password": "wrong password"})
    assert "disabled" not in wrong.json["message"]
    enabled = client.patch(f"/users/{patron['id']}", json={"active": True}, headers=librarian)
    assert enabled.json["active"] is True
    # the old tokens stay dead; a new login works
    me = client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 401
    assert client.post("/login", json=body).status_code == 200


def test_the_last_librarian_cannot_be_disabled(client, app, auth):
    librarian_user, librarian = auth.librarian()
    auth.register()
    response = client.patch(
        f"/users/{librarian_user['id']}", json={"active": False}, headers=librarian
    )
    assert response.status_code == 409
    assert response.json["message"] == "Cannot disable the last librarian."
    with app.app_context():
        assert db.session.get(User, librarian_user["id"]).active is True
    assert client.get("/me", headers=librarian).status_code == 200


def test_the_last_librarian_may_confirm_their_own_role_and_access(client, auth):
    librarian_user, librarian = auth.librarian()
    for body in ({"role": "admin"}, {"active": True}, {"role": "admin", "active": True}):
        response = client.patch(f"/users/{librarian_user['id']}", json=body, headers=librarian)
        assert response.status_code == 200, (body, response.json)
        assert (response.json["role"], response.json["active"]) == ("admin", True)


def test_a_disabled_librarian_does_not_count_as_the_last_one(client, auth):
    first_user, first = auth.librarian()
    second_user, _ = auth.librarian()
    disabled = client.patch(f"/users/{second_user['id']}", json={"active": False}, headers=first)
    assert disabled.status_code == 200
    demote = client.patch(f"/users/{first_user['id']}", json={"role": "user"}, headers=first)
    assert demote.status_code == 409


@pytest.mark.parametrize("value", [0, 1, "false", "no", None, []])
def test_active_must_be_a_json_boolean(client, app, auth, value):
    _, librarian = auth.librarian()
    patron = auth.register()
    response = client.patch(f"/users/{patron['id']}", json={"active": value}, headers=librarian)
    assert response.status_code == 422
    assert "active" in response.json["errors"]["json"]
    with app.app_context():
        assert db.session.get(User, patron["id"]).active is True


def test_patrons_cannot_disable_anyone(client, auth):
    patron, headers = auth.patron()
    other = auth.register()
    for user_id in (patron["id"], other["id"]):
        response = client.patch(f"/users/{user_id}", json={"active": False}, headers=headers)
        assert response.status_code == 403
