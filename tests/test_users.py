"""Librarian administration of accounts, and the create-admin command."""

from models import User, db


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
    response = client.patch(
        f"/users/{librarian_user['id']}", json={"role": "user"}, headers=librarian
    )
    assert response.status_code == 409
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


def test_create_admin_promotes_an_existing_user(runner, app, auth):
    user = auth.register(username="promote.me")
    result = runner.invoke(
        args=["create-admin", "--username", "promote.me", "--email", "whatever@example.org"]
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.query(User).count() == 1
        assert db.session.get(User, user["id"]).role == "admin"


def test_create_admin_refuses_a_short_password(runner, app):
    result = runner.invoke(
        args=["create-admin", "--username", "head", "--email", "h@example.org", "--password-stdin"],
        input="short\n",
    )
    assert result.exit_code != 0
    assert "8 to 128" in result.output
    with app.app_context():
        assert db.session.query(User).count() == 0
