"""One JSON error shape for every error from every layer; never HTML, never a traceback."""

import pytest

from models import User, db
from tests.servers import run_python


def assert_error_shape(response, code):
    assert response.status_code == code
    assert response.mimetype == "application/json"
    body = response.json
    assert body["code"] == code
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_route_is_json_404(client):
    assert_error_shape(client.get("/no/such/page"), 404)


def test_wrong_method_is_json_405_with_allow(client):
    response = client.delete("/requests")
    assert_error_shape(response, 405)
    assert "GET" in response.headers["Allow"]


def test_validation_error_has_errors(client):
    response = client.post("/register", json={"username": "x"})
    assert_error_shape(response, 422)
    assert set(response.json["errors"]["json"]) >= {"username", "email", "password"}


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("{not json", "application/json"), ("[1, 2", "application/json")],
)
def test_invalid_json_is_a_clear_400(client, data, content_type):
    response = client.post("/register", data=data, content_type=content_type)
    assert_error_shape(response, 400)


@pytest.mark.parametrize("body", [[], "text", 42, None])
def test_json_that_is_not_an_object_is_422(client, app, body):
    response = client.post("/register", json=body)
    assert response.status_code in (400, 422)
    assert_error_shape(response, response.status_code)
    with app.app_context():
        assert db.session.query(User).count() == 0


def test_body_without_json_content_type_is_refused(client, app):
    response = client.post(
        "/register",
        data='{"username": "formuser", "email": "f@example.org", "password": "password1"}',
        content_type="text/plain",
    )
    assert response.status_code in (415, 422)
    assert_error_shape(response, response.status_code)
    with app.app_context():
        assert db.session.query(User).count() == 0


def test_body_over_one_mebibyte_is_413(client, app):
    big = '{"username": "' + "x" * (1024 * 1024) + '"}'
    response = client.post("/register", data=big, content_type="application/json")
    assert_error_shape(response, 413)
    with app.app_context():
        assert db.session.query(User).count() == 0


def test_non_admin_on_admin_route_is_json_403(client, auth):
    assert_error_shape(client.get("/users", headers=auth.headers()), 403)


def test_unexpected_error_is_json_500_without_details(app, client, auth, monkeypatch):
    headers = auth.headers()

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("models.BookRequest.create", staticmethod(explode))
    app.testing = False  # let the error reach the handler instead of the test
    try:
        response = client.post("/requests", json={"book_name": "x"}, headers=headers)
    finally:
        app.testing = True
    assert_error_shape(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)


def test_rate_limited_login_is_429_with_retry_after(app, client, auth, monkeypatch):
    user = auth.register()
    monkeypatch.setitem(app.config, "LOGIN_RATE_LIMIT", "3 per minute")
    statuses = [
        client.post("/login", json={"username": user["username"], "password": "wrong pass"})
        for _ in range(4)
    ]
    assert [r.status_code for r in statuses] == [401, 401, 401, 429]
    assert_error_shape(statuses[-1], 429)
    assert int(statuses[-1].headers["Retry-After"]) > 0


def test_rate_limit_can_be_switched_off(service_env):
    # a process of its own: the limiter is one object per process, shared by every app
    code = (
        "from app import create_app\n"
        "client = create_app({'TESTING': True}).test_client()\n"
        "body = {'username': 'nobody', 'password': 'whatever1'}\n"
        "print(sorted({client.post('/login', json=body).status_code for _ in range(3)}))\n"
    )
    env = {**service_env, "RATELIMIT_ENABLED": "false", "LOGIN_RATE_LIMIT": "1 per minute"}
    result = run_python("-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[401]"
