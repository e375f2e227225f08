"""Per-user limits on every write: floods are 429s that name the limit and when to retry."""

import re

import pytest
from sqlalchemy import func, select

from config import default_config
from models import BookRequest, db
from tests.factories import bearer

MESSAGE = re.compile(r"Too many requests: (.+)\. Try again in (\d+) s\.")


def assert_limited(response, limit, window=60):
    """The response is the one error shape, naming `limit` and a wait that Retry-After repeats."""
    assert response.status_code == 429, response.json
    body = response.json
    assert set(body) == {"code", "status", "message"}
    assert body["code"] == 429 and body["status"] == "Too Many Requests"
    match = MESSAGE.fullmatch(body["message"])
    assert match, body["message"]
    assert match.group(1) == limit
    assert 1 <= int(match.group(2)) <= window
    assert response.headers["Retry-After"] == match.group(2)


def pending_count(app, user_id):
    with app.app_context():
        query = select(func.count()).select_from(BookRequest).where(BookRequest.user_id == user_id)
        return db.session.scalar(query)


def test_request_creation_is_limited_per_user_across_both_paths(app, client, auth, monkeypatch):
    monkeypatch.setitem(app.config, "REQUEST_RATE_LIMIT", "3 per minute")
    user, headers = auth.patron()
    paths = ["/requests", "/request-book", "/requests", "/request-book"]
    responses = [client.post(path, json={"book_name": "Dune"}, headers=headers) for path in paths]

    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    assert_limited(responses[-1], "3 per 1 minute")
    assert pending_count(app, user["id"]) == 3
    # another patron has a count of their own
    _, other = auth.patron()
    assert client.post("/requests", json={"book_name": "Dune"}, headers=other).status_code == 201


def test_a_flood_of_invalid_bodies_counts_too(app, client, auth, monkeypatch):
    monkeypatch.setitem(app.config, "REQUEST_RATE_LIMIT", "2 per minute")
    user, headers = auth.patron()
    statuses = [client.post("/requests", json={}, headers=headers).status_code for _ in range(3)]
    assert statuses == [422, 422, 429]
    assert pending_count(app, user["id"]) == 0


def test_create_and_cancel_cycles_are_refused_once_the_cancel_limit_is_reached(
    app, client, auth, monkeypatch
):
    monkeypatch.setitem(app.config, "CANCEL_RATE_LIMIT", "2 per minute")
    user, headers = auth.patron()
    ids = [client.post("/requests", json={"book_name": f"B{n}"}, headers=headers).json["id"]
           for n in range(3)]  # fmt: skip
    responses = [client.post(f"/requests/{i}/cancel", headers=headers) for i in ids]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert_limited(responses[-1], "2 per 1 minute")
    third = client.get(f"/requests/{ids[2]}", headers=headers).json
    assert third["status"] == "pending"


def test_refresh_is_limited_per_user(app, client, auth, monkeypatch):
    monkeypatch.setitem(app.config, "REFRESH_RATE_LIMIT", "2 per minute")
    user = auth.register()
    refresh_token = auth.login(user)["refresh_token"]
    responses = []
    for _ in range(3):
        # each refresh spends its token and hands out the next one
        response = client.post("/refresh", headers={"Authorization": f"Bearer {refresh_token}"})
        responses.append(response)
        refresh_token = (response.json or {}).get("refresh_token", refresh_token)

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert_limited(responses[-1], "2 per 1 minute")
    assert "access_token" not in responses[-1].json


def test_logout_is_limited_per_user_and_a_refused_one_revokes_nothing(
    app, client, auth, monkeypatch
):
    monkeypatch.setitem(app.config, "LOGOUT_RATE_LIMIT", "1 per minute")
    user = auth.register()
    first, second = auth.login(user), auth.login(user)
    assert client.post("/logout", headers=bearer(first["access_token"])).status_code == 200
    refused = client.post("/logout", headers=bearer(second["access_token"]))

    assert_limited(refused, "1 per 1 minute")
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200


def test_exports_name_their_limit(app, client, auth, monkeypatch):
    monkeypatch.setitem(app.config, "EXPORT_RATE_LIMIT", "1 per hour")
    _, headers = auth.patron()
    client.post("/export-report", headers=headers)
    assert_limited(client.post("/export-report", headers=headers), "1 per 1 hour", window=3600)


def test_an_invalid_token_is_401_before_any_limit_is_counted(app, client, auth, monkeypatch):
    monkeypatch.setitem(app.config, "REQUEST_RATE_LIMIT", "1 per minute")
    bad = bearer("not.a.token")
    statuses = [client.post("/requests", json={"book_name": "x"}, headers=bad).status_code
                for _ in range(3)]  # fmt: skip
    assert statuses == [401, 401, 401]


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/requests"), ("post", "/request-book"), ("post", "/requests/{request_id}/cancel"),
     ("post", "/refresh"), ("post", "/logout"), ("post", "/export-report")],
)  # fmt: skip
def test_openapi_documents_the_429(client, method, path):
    operation = client.get("/openapi.json").json["paths"][path][method]
    assert "429" in operation["responses"]


def test_defaults_leave_room_for_a_person_and_none_for_a_flood(monkeypatch):
    for key in (
        "REQUEST_RATE_LIMIT",
        "CANCEL_RATE_LIMIT",
        "REFRESH_RATE_LIMIT",
        "LOGOUT_RATE_LIMIT",
    ):
        monkeypatch.delenv(key, raising=False)
    config = default_config("/tmp")
    assert config["REQUEST_RATE_LIMIT"] == "30 per minute; 300 per day"
    assert config["CANCEL_RATE_LIMIT"] == "30 per minute; 300 per day"
    assert config["REFRESH_RATE_LIMIT"] == "30 per minute"
    assert config["LOGOUT_RATE_LIMIT"] == "30 per minute"
    monkeypatch.setenv("REQUEST_RATE_LIMIT", "5 per second")
    assert default_config("/tmp")["REQUEST_RATE_LIMIT"] == "5 per second"
