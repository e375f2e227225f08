"""Hostile callers beyond test_tokens.py and test_authorization.py: doubled Authorization
headers, tokens smuggled elsewhere, refresh tokens on every route, list parameters that try
to widen a patron's view, and other people's ids that must look exactly like missing ones."""

import http.client
import time
from urllib.parse import urlsplit

import jwt as pyjwt
import pytest
from sqlalchemy import select, update

from models import (
    BookRequest,
    Report,
    ReportStatus,
    RequestStatus,
    User,
    db,
    utcnow,
)
from tests.dbstate import snapshot
from tests.factories import add_user, assert_unauthorized, bearer
from tests.sessions import session_tokens

# the database allows one queued or running report per user: Alice's is queued, Bob's running
REPORT_STATUSES = {
    "alice": (ReportStatus.QUEUED, ReportStatus.DONE, ReportStatus.FAILED),
    "bob": (ReportStatus.RUNNING, ReportStatus.DONE, ReportStatus.FAILED),
}


@pytest.fixture
def people(app):
    """Alice and Bob, patrons with a request in every status and a report in every status."""
    with app.app_context():
        alice, bob = add_user("alice"), add_user("bob")
        librarian = add_user("librarian", role="admin")
        objects = {}
        for owner in (alice, bob):
            requests = {
                status: BookRequest(
                    user_id=owner.id,
                    book_name=f"Secret diary of {owner.username} ({status})",
                    author=f"{owner.username}-author",
                    note=f"{owner.username}-note",
                    status=status,
                    reason=f"{owner.username}-reason" if status == RequestStatus.REJECTED else None,
                )
                for status in RequestStatus
            }
            reports = {
                status: Report(user_id=owner.id, status=status, month="2026-01")
                for status in REPORT_STATUSES[owner.username]
            }
            db.session.add_all([*requests.values(), *reports.values()])
            db.session.commit()
            objects[owner.username] = {
                "requests": {status: r.id for status, r in requests.items()},
                "reports": {status: r.id for status, r in reports.items()},
            }
        return {
            "ids": {"alice": alice.id, "bob": bob.id, "librarian": librarian.id},
            "objects": objects,
            "access": {
                name: session_tokens(user.id)[0]
                for name, user in (("alice", alice), ("bob", bob), ("librarian", librarian))
            },
            "refresh": session_tokens(alice.id)[1],
        }


# ------------------------------------------------------------------ doubled headers


def get_me_with_headers(base_url, values):
    """GET /me sending one Authorization header per value (requests cannot repeat one)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", "/me")
        for value in values:
            conn.putheader("Authorization", value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "pair", [("alice", "alice"), ("alice", "librarian"), ("librarian", "alice")]
)
def test_two_bearer_headers_are_refused_under_gunicorn(live_server, people, pair):
    values = [f"Bearer {people['access'][name]}" for name in pair]
    status, body = get_me_with_headers(live_server.url, values)
    assert status == 401, body
    assert '"code":401' in body.replace(" ", "")


@pytest.mark.parametrize("other", ["Basic YWxpY2U6cGFzc3dvcmQ=", "garbage", "Bearer"])
def test_a_second_authorization_header_never_changes_who_you_are(live_server, people, other):
    alice = f"Bearer {people['access']['alice']}"
    for values in ([alice, other], [other, alice]):
        status, body = get_me_with_headers(live_server.url, values)
        # one bearer token among the values: it is that token's user, or nobody
        assert status in (200, 401), body
        if status == 200:
            assert '"username":"alice"' in body.replace(" ", "")


# ------------------------------------------------------------------ tokens elsewhere


def test_token_outside_the_authorization_header_is_ignored(client, people):
    token = people["access"]["alice"]
    for query in ("access_token", "jwt", "token", "auth", "Authorization"):
        assert_unauthorized(client.get(f"/me?{query}={token}"))
        assert_unauthorized(client.get(f"/me?{query}=Bearer%20{token}"))
    for header in ("X-Access-Token", "X-Auth-Token", "Token", "Proxy-Authorization", "Cookie"):
        assert_unauthorized(client.get("/me", headers={header: f"Bearer {token}"}))
    client.set_cookie("access_token_cookie", token)
    client.set_cookie("Authorization", f"Bearer {token}")
    assert_unauthorized(client.get("/me"))
    assert_unauthorized(client.post("/logout", json={"access_token": token}))
    assert_unauthorized(client.post("/logout", data={"access_token": token}))


def test_oversized_authorization_header_is_401_json(client, people):
    token = people["access"]["alice"]
    assert_unauthorized(client.get("/me", headers=bearer(token + "A" * 100_000)))
    assert_unauthorized(client.get("/me", headers=bearer("A" * 100_000)))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_token_signed_with_the_right_key_but_another_algorithm(client, app, people, algorithm):
    now = int(time.time())
    with app.app_context():
        access, _ = session_tokens(people["ids"]["librarian"])
    claims = {**pyjwt.decode(access, options={"verify_signature": False}), "iat": now}
    token = pyjwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm=algorithm)
    assert_unauthorized(client.get("/users", headers=bearer(token)))


# ------------------------------------------------------------------ refresh tokens


def secured_operations(client):
    """Every documented operation that takes an access token."""
    spec = client.get("/openapi.json").json
    return [
        (method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        and operation.get("security")
        and path not in ("/refresh", "/logout")  # a refresh token is right there
    ]


def test_refresh_token_is_refused_on_every_access_route(client, app, people):
    refresh = bearer(people["refresh"])
    objects = people["objects"]["alice"]
    ids = {
        "request_id": objects["requests"][RequestStatus.PENDING],
        "report_id": objects["reports"][ReportStatus.DONE],
        "user_id": people["ids"]["bob"],
    }
    bodies = {"/requests": {"book_name": "x"}, "/request-book": {"book_name": "x"},
              "/users/{user_id}": {"role": "admin"}, "/requests/{request_id}/reject":
              {"reason": "x"}}  # fmt: skip
    operations = secured_operations(client)
    assert len(operations) >= 15
    before = snapshot(app)
    for method, path in operations:
        response = client.open(
            path.format(**ids), method=method.upper(), headers=refresh, json=bodies.get(path)
        )
        assert_unauthorized(response)
    assert snapshot(app) == before


# ------------------------------------------------------------------ widening the view


@pytest.mark.parametrize(
    "query",
    [
        "", "user_id={bob}", "user_id={bob}&user_id={alice}", "user_id[]={bob}", "all=true",
        "admin=1", "role=admin", "per_page=100&page=1", "owner={bob}", "user={bob}",
        "filter=user_id%3D{bob}", "user_id={bob}%20OR%201%3D1", "status=done",
    ],
)  # fmt: skip
def test_report_list_filters_cannot_widen_a_patrons_view(client, people, query):
    query = query.format(**people["ids"])
    response = client.get(f"/reports?{query}", headers=bearer(people["access"]["alice"]))
    assert response.status_code == 200, response.json
    owners = {item["user_id"] for item in response.json["items"]}
    assert owners == {people["ids"]["alice"]}
    assert response.json["total"] == len(response.json["items"]) == 3


@pytest.mark.parametrize(
    "query",
    ["user_id={bob}", "user_id={bob}&user_id={alice}", "user_id[]={bob}", "all=true",
     "owner={bob}", "status=pending&user_id={bob}", "per_page=100"],
)  # fmt: skip
def test_request_list_filters_cannot_widen_a_patrons_view(client, people, query):
    query = query.format(**people["ids"])
    response = client.get(f"/requests?{query}", headers=bearer(people["access"]["alice"]))
    assert response.status_code == 200, response.json
    assert response.json["items"], "alice sees none of her own requests"
    assert {item["user_id"] for item in response.json["items"]} == {people["ids"]["alice"]}
    assert "bob" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "query", ["user_id={bob}%20OR%201%3D1", "status=done", "user_id={bob}&status=%00"]
)
def test_request_list_filters_that_are_not_values_are_422_showing_nothing(client, people, query):
    query = query.format(**people["ids"])
    response = client.get(f"/requests?{query}", headers=bearer(people["access"]["alice"]))
    assert response.status_code == 422, response.json
    assert set(response.json) == {"code", "status", "message", "errors"}
    assert "items" not in response.json and "bob" not in response.get_data(as_text=True)


# ------------------------------------------------------------------ other people's ids

MISSING_REQUEST = 2_000_000_000
MISSING_REPORT = "00000000-0000-4000-8000-000000000000"
ID_ROUTES = [
    ("get", "/requests/{id}", "requests"),
    ("post", "/requests/{id}/cancel", "requests"),
    ("post", "/requests/{id}/approve", "requests"),
    ("post", "/requests/{id}/reject", "requests"),
    ("post", "/requests/{id}/return", "requests"),
    ("get", "/reports/{id}", "reports"),
    ("get", "/reports/{id}/download?format=csv", "reports"),
    ("get", "/reports/{id}/download?format=html", "reports"),
]


def comparable(response, object_id):
    """The response with the id taken out, for comparing with the answer for a missing id."""
    text = response.get_data(as_text=True).replace(str(object_id), "<id>")
    # the rate-limit countdown moves with every call alike, object or not
    varying = (
        "date",
        "content-length",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-retry-after",
    )
    headers = {k: v for k, v in response.headers if k.lower() not in varying}
    return response.status_code, text, headers


@pytest.mark.parametrize(("method", "template", "kind"), ID_ROUTES, ids=[r[1] for r in ID_ROUTES])
def test_bobs_objects_look_to_alice_exactly_like_missing_ones(
    client, app, people, method, template, kind
):
    alice = bearer(people["access"]["alice"])
    missing = MISSING_REQUEST if kind == "requests" else MISSING_REPORT
    body = {"reason": "nope"} if template.endswith("/reject") else None
    expected = comparable(
        client.open(template.format(id=missing), method=method.upper(), headers=alice, json=body),
        missing,
    )
    assert expected[0] in (403, 404)
    before = snapshot(app)
    for status, object_id in people["objects"]["bob"][kind].items():
        response = client.open(
            template.format(id=object_id), method=method.upper(), headers=alice, json=body
        )
        # no 409 (it would tell the object exists, and its state), no 200, nothing of Bob's
        assert comparable(response, object_id) == expected, (status, response.json)
        text = response.get_data(as_text=True)
        assert "bob" not in text and "Secret diary" not in text
    assert snapshot(app) == before


def test_librarian_sees_the_objects_that_are_404_to_alice(client, people):
    librarian = bearer(people["access"]["librarian"])
    bob = people["objects"]["bob"]
    for request_id in bob["requests"].values():
        assert client.get(f"/requests/{request_id}", headers=librarian).status_code == 200
    for report_id in bob["reports"].values():
        assert client.get(f"/reports/{report_id}", headers=librarian).status_code == 200


def test_alice_cannot_touch_bobs_account(client, app, people):
    alice = bearer(people["access"]["alice"])
    before = snapshot(app)
    for user_id in (people["ids"]["bob"], people["ids"]["librarian"], people["ids"]["alice"]):
        response = client.patch(f"/users/{user_id}", json={"role": "admin"}, headers=alice)
        assert response.status_code == 403
        assert "bob" not in response.get_data(as_text=True)
    assert snapshot(app) == before
    with app.app_context():
        assert db.session.get(User, people["ids"]["alice"]).role == "user"


# ------------------------------------------------------------------ login throttling


def login_from(client, address, username, password):
    return client.post(
        "/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def end_delays(app):
    """Let every running delay run out, as waiting would."""
    from throttle import LoginThrottle

    with app.app_context():
        db.session.execute(update(LoginThrottle).values(blocked_until=utcnow()))
        db.session.commit()


def delays(app):
    from throttle import LoginThrottle

    with app.app_context():
        rows = db.session.scalars(select(LoginThrottle)).all()
        return {
            row.key: round((row.blocked_until - row.last_failure_at).total_seconds())
            for row in rows
            if row.blocked_until is not None
        }


def test_guesses_at_one_account_meet_growing_delays(client, app, people):
    for attempt in range(5):
        assert login_from(client, "10.0.0.1", "alice", f"guess {attempt}").status_code == 401
    assert delays(app) == {}
    assert login_from(client, "10.0.0.1", "alice", "guess 5").status_code == 401
    refused = login_from(client, "10.0.0.1", "alice", "correct horse")
    # even the right password waits while the delay runs: no free guesses through it
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "try again in" in refused.json["message"]
    account = f"account:{people['ids']['alice']}"
    assert delays(app)[account] == 1
    for expected in (2, 4, 8):
        end_delays(app)
        assert login_from(client, "10.0.0.1", "alice", "wrong").status_code == 401
        assert delays(app)[account] == expected
    # once it has run out the owner logs in, and the count starts again
    end_delays(app)
    assert login_from(client, "10.0.0.1", "alice", "correct horse").status_code == 200
    assert account not in delays(app)


def test_guesses_spread_over_many_addresses_are_still_slowed(client, app, people):
    for n in range(6):
        login_from(client, f"198.51.100.{n}", "alice@example.org", "wrong password")
    # by email or by name, in any case: the same account, the same count
    assert login_from(client, "198.51.100.99", "ALICE", "correct horse").status_code == 429


def test_someone_elses_guesses_on_a_shared_address_do_not_lock_a_user_out(client, app, people):
    # a neighbour behind the same address guesses at Alice's account (and at names)
    for n in range(6):
        login_from(client, "203.0.113.7", "alice", f"guess {n}")
    for n in range(10):
        login_from(client, "203.0.113.7", f"nobody{n}", "guess")
    assert login_from(client, "203.0.113.7", "bob", "correct horse").status_code == 200


def test_an_address_that_keeps_failing_is_slowed_for_at_most_a_minute(client, app, people):
    for n in range(21):
        login_from(client, "203.0.113.9", f"name{n}", "guess")
    slowed = login_from(client, "203.0.113.9", "bob", "correct horse")
    assert slowed.status_code == 429
    for n in range(12):
        end_delays(app)
        login_from(client, "203.0.113.9", f"more{n}", "guess")
    assert max(delays(app).values()) == app.config["LOGIN_MAX_DELAY_PER_ADDRESS"] == 60
    # other addresses are untouched, and when the delay runs out Bob is in
    assert login_from(client, "192.0.2.1", "bob", "correct horse").status_code == 200
    end_delays(app)
    assert login_from(client, "203.0.113.9", "bob", "correct horse").status_code == 200


def test_wrong_current_passwords_count_against_the_account(client, app, people):
    headers = bearer(people["access"]["alice"])
    body = {"current_password": "wrong", "new_password": "new password"}
    for _ in range(6):
        assert client.post("/me/password", json=body, headers=headers).status_code == 403
    right = {**body, "current_password": "correct horse"}
    assert client.post("/me/password", json=right, headers=headers).status_code == 429
