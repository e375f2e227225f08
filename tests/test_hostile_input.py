"""Hostile input: broken JSON, wrong content types, huge and deep bodies, control characters,
odd unicode, numbers as strings, absurd page numbers. Each is refused in the one error shape,
never a 5xx, and leaves the database exactly as it was."""

import json
import re

import pytest
import requests

from models import BookRequest, ReportStatus, db
from tests.dbstate import snapshot
from tests.factories import PASSWORD, add_user, bearer_for

ERROR_KEYS = {"code", "status", "message", "errors"}

# every operation that reads a JSON body, with a body it would accept
BODY_ROUTES = [
    ("post", "/register", "anonymous", {"username": "newcomer", "email": "n@example.org",
                                        "password": "password123"}),
    ("post", "/login", "anonymous", {"username": "patron", "password": PASSWORD}),
    ("post", "/requests", "patron", {"book_name": "Dune"}),
    ("post", "/request-book", "patron", {"book_name": "Dune"}),
    ("post", "/requests/{request_id}/reject", "librarian", {"reason": "not in stock"}),
    ("post", "/export-report", "patron", {"month": "2026-01"}),
    ("patch", "/users/{patron_id}", "librarian", {"role": "admin"}),
]  # fmt: skip
BODY_IDS = [f"{method} {path}" for method, path, _, _ in BODY_ROUTES]


@pytest.fixture
def world(app):
    """A patron with a pending request and a librarian, made directly (no argon2 per test)."""
    with app.app_context():
        patron = add_user("patron")
        librarian = add_user("librarian", role="admin")
        pending = BookRequest(user_id=patron.id, book_name="Middlemarch")
        db.session.add(pending)
        db.session.commit()
        return {
            "ids": {"patron_id": patron.id, "request_id": pending.id},
            "headers": {
                "anonymous": {},
                "patron": bearer_for(patron.id),
                "librarian": bearer_for(librarian.id),
            },
        }


def assert_refused(response, *codes):
    """A 4xx among `codes` (any 4xx when none given), JSON in the one error shape."""
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    if codes:
        assert response.status_code in codes, response.get_data(as_text=True)[:500]
    assert 400 <= response.status_code < 500
    assert response.mimetype == "application/json"
    body = response.json
    assert {"code", "status", "message"} <= set(body) <= ERROR_KEYS, body
    assert body["code"] == response.status_code
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.fixture
def send(client, app, world):
    """Send a request as `caller` and check the database did not change."""

    def send(method, path, caller="patron", unchanged=True, **kwargs):
        before = snapshot(app)
        headers = {**world["headers"][caller], **kwargs.pop("headers", {})}
        response = getattr(client, method)(path.format(**world["ids"]), headers=headers, **kwargs)
        if unchanged:
            assert snapshot(app) == before, f"{method} {path} changed the database"
        return response

    return send


# ------------------------------------------------------------------ broken bodies


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[1, 2",
        b'{"book_name": "x"}}',
        b"'single quotes'",
        b'{"book_name": "x",}',
        b"\xff\xfe\x00garbage",
        '{"book_name": "x"}'.encode("utf-16"),
        b'{"book_name": "\\ud800"}',  # a lone surrogate: no database can store it
        b'{"book_name": "x", "n": ' + b"9" * 5000 + b"}",  # past Python's int digit limit
    ],
    ids=["unclosed", "array", "trailing", "quotes", "comma", "bytes", "utf16", "surrogate",
         "digits"],
)  # fmt: skip
@pytest.mark.parametrize(("method", "path", "caller", "body"), BODY_ROUTES, ids=BODY_IDS)
def test_invalid_json_is_400(send, method, path, caller, body, data):
    response = send(method, path, caller, data=data, content_type="application/json")
    assert_refused(response, 400)


@pytest.mark.parametrize("body", [None, [], "text", 42, True], ids=repr)
@pytest.mark.parametrize(("method", "path", "caller", "valid"), BODY_ROUTES, ids=BODY_IDS)
def test_json_that_is_not_an_object_is_refused(send, method, path, caller, valid, body):
    response = send(method, path, caller, data=json.dumps(body), content_type="application/json")
    assert_refused(response, 400, 422)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", None],
)
@pytest.mark.parametrize(("method", "path", "caller", "body"), BODY_ROUTES, ids=BODY_IDS)
def test_body_that_is_not_declared_json_is_415(send, method, path, caller, body, content_type):
    # curl -d without -H sends a form: the body must not be silently ignored (for an export
    # that would build an all-time report instead of the month asked for)
    headers = {"Content-Type": content_type} if content_type else {}
    response = send(method, path, caller, data=json.dumps(body), headers=headers)
    assert_refused(response, 415)


@pytest.mark.parametrize(("method", "path", "caller", "body"), BODY_ROUTES, ids=BODY_IDS)
def test_two_mebibyte_body_is_413(send, method, path, caller, body):
    big = json.dumps({**body, "padding": "x" * (2 * 1024 * 1024)})
    response = send(method, path, caller, data=big, content_type="application/json")
    assert_refused(response, 413)


MIB = 1024 * 1024


@pytest.mark.parametrize(("extra", "status"), [(0, 422), (1, 413), (MIB, 413)])
def test_chunked_body_past_one_mebibyte_is_413_under_gunicorn(live_server, extra, status):
    # no Content-Length: the limit must hold while the body streams in, to the byte
    head, tail = b'{"username": "x", "email": "x@example.org", "password": "', b'"}'
    body = head + b"p" * (MIB - len(head) - len(tail)) + tail + b" " * extra

    def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = requests.post(
        f"{live_server.url}/register",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status
    assert response.json()["code"] == status


@pytest.mark.parametrize("depth", [50, 100_000])
@pytest.mark.parametrize("shape", ["array", "object", "in a field"])
def test_deeply_nested_json_is_refused(send, depth, shape):
    nested = {
        "array": "[" * depth + "]" * depth,
        "object": '{"a":' * depth + "1" + "}" * depth,
        "in a field": '{"book_name": ' + "[" * depth + "]" * depth + "}",
    }[shape]
    response = send("post", "/requests", data=nested, content_type="application/json")
    # a depth Python can parse is a wrong type (422); deeper is not JSON it will read (400)
    assert_refused(response, 400, 422)


# ------------------------------------------------------------------ hostile strings

# every text field a client can send, with the route that takes it
TEXT_FIELDS = [
    ("post", "/register", "anonymous", {"username": "newcomer", "email": "n@example.org",
                                        "password": "password123"}, "username"),
    ("post", "/register", "anonymous", {"username": "newcomer", "email": "n@example.org",
                                        "password": "password123"}, "email"),
    ("post", "/login", "anonymous", {"username": "patron", "password": PASSWORD}, "username"),
    ("post", "/requests", "patron", {"book_name": "Dune"}, "book_name"),
    ("post", "/requests", "patron", {"book_name": "Dune", "author": "Herbert"}, "author"),
    ("post", "/requests", "patron", {"book_name": "Dune", "note": "hardback"}, "note"),
    ("post", "/requests/{request_id}/reject", "librarian", {"reason": "no"}, "reason"),
    ("post", "/export-report", "patron", {"month": "2026-01"}, "month"),
    ("patch", "/users/{patron_id}", "librarian", {"role": "admin"}, "role"),
]  # fmt: skip
TEXT_IDS = [f"{path} {field}" for _, path, _, _, field in TEXT_FIELDS]
HOSTILE_STRINGS = {
    "10k": "x" * 10_000,
    "nul": "a\x00b",
    "only-nul": "\x00",
    "bell": "bell\x07",
    "ansi": "escape\x1b[31m",
    "del": "delete\x7f",
    "newline": "line\nbreak",
    "final-newline": "trailing-newline\n",
    "cr": "carriage\rreturn",
    "tab": "tab\there",
}


def refused_strings():
    """Each text field with each hostile string it must refuse."""
    for method, path, caller, body, field in TEXT_FIELDS:
        for name, value in HOSTILE_STRINGS.items():
            if field in ("note", "reason") and name in ("newline", "cr", "tab"):
                continue  # a note or a reason may span lines
            if field in ("book_name", "author", "note", "reason") or path == "/login":
                if name == "final-newline":
                    continue  # trimmed, like any surrounding space
            yield pytest.param(
                method, path, caller, body, field, value, id=f"{path} {field} {name}"
            )


@pytest.mark.parametrize(
    ("method", "path", "caller", "body", "field", "value"), list(refused_strings())
)
def test_long_strings_and_control_characters_are_422(send, method, path, caller, body, field,
                                                     value):  # fmt: skip
    response = send(method, path, caller, json={**body, field: value})
    assert_refused(response, 422)
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize(
    "value",
    ["📚 Dune 🐛", "מלחמה ושלום", "الحرب والسلام", "\u202eevil\u202c", "Ǆ̶̡z̷a̸l̵g̶o̷",
     "ｆｕｌｌｗｉｄｔｈ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "zero\u200bwidth"],
    ids=["emoji", "hebrew", "arabic", "rtl-override", "zalgo", "fullwidth", "math", "zwsp"],
)  # fmt: skip
def test_unicode_titles_round_trip_exactly(send, value):
    response = send(
        "post", "/requests", json={"book_name": value, "author": value, "note": value},
        unchanged=False,
    )  # fmt: skip
    assert response.status_code == 201, response.json
    shown = send("get", f"/requests/{response.json['id']}").json
    assert (shown["book_name"], shown["author"], shown["note"]) == (value, value, value)


@pytest.mark.parametrize(
    "username", ["📚reader", "רות", "ruth\u200b", "ｒｕｔｈ", "ruth\u202e", "ru th", "ru/th"]
)
def test_usernames_are_plain_ascii(send, username):
    body = {"username": username, "email": "u@example.org", "password": "password123"}
    response = send("post", "/register", "anonymous", json=body)
    assert_refused(response, 422)
    assert "username" in response.json["errors"]["json"]


@pytest.mark.parametrize(
    "email",
    [
        "İ" * 240 + "@example.org",  # 252 characters, 492 once lower-cased
        "a" * 64 + "@" + "İ" * 95 + ".example.org",
    ],
    ids=["dotted-capital-i-local", "dotted-capital-i-domain"],
)
def test_emails_are_checked_as_they_would_be_stored(send, email):
    """Lower-casing grows 'İ' to two characters: what is stored must fit, else 422, not 500."""
    body = {"username": "newcomer", "email": email, "password": "password123"}
    response = send("post", "/register", "anonymous", json=body)
    assert_refused(response, 422)
    assert "email" in response.json["errors"]["json"]


@pytest.mark.parametrize("taken", ["Patron", "PATRON", "pAtRoN"])
def test_usernames_differing_only_in_case_are_taken(send, taken):
    # the world's patron registered as "patron"
    body = {"username": taken, "email": "another@example.org", "password": "password123"}
    response = send("post", "/register", "anonymous", json=body)
    assert_refused(response, 409)


def test_login_accepts_the_username_in_any_case(send):
    response = send(
        "post", "/login", "anonymous", json={"username": "PATRON", "password": PASSWORD},
        unchanged=False,
    )  # fmt: skip
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    "password", ["pass\x00word\x00", "📚📚📚📚📚📚📚📚", "סיסמה ארוכה", "\t\r\n\x1b[0m tabs"]
)
def test_any_password_round_trips(client, send, password):
    body = {"username": "hostile_pw", "email": "pw@example.org", "password": password}
    assert send("post", "/register", "anonymous", json=body, unchanged=False).status_code == 201
    login = {"username": "hostile_pw", "password": password}
    assert client.post("/login", json=login).status_code == 200
    wrong = {"username": "hostile_pw", "password": password + "x"}
    assert client.post("/login", json=wrong).status_code == 401


# ------------------------------------------------------------------ wrong types


@pytest.mark.parametrize("value", [123, 1.5, True, ["Dune"], {"title": "Dune"}], ids=repr)
@pytest.mark.parametrize(("method", "path", "caller", "body", "field"), TEXT_FIELDS, ids=TEXT_IDS)
def test_wrong_json_types_are_422(send, method, path, caller, body, field, value):
    response = send(method, path, caller, json={**body, field: value})
    assert_refused(response, 422)
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize(("method", "path", "caller", "body"), BODY_ROUTES, ids=BODY_IDS)
def test_unknown_body_fields_are_422_naming_them(send, method, path, caller, body):
    response = send(method, path, caller, json={**body, "is_admin": True, "id": 1})
    assert_refused(response, 422)
    assert {"is_admin", "id"} <= set(response.json["errors"]["json"])


# ------------------------------------------------------------------ query strings

LISTS = [("/requests", "patron"), ("/reports", "patron"), ("/users", "librarian")]


@pytest.mark.parametrize(
    "query",
    [
        "page=0", "page=-1", "page=1000001", "page=" + "9" * 30, "page=1.5", "page=1e3",
        "page=0x10", "page=abc", "page=", "page=%00", "per_page=0", "per_page=-5",
        "per_page=101", "per_page=" + "9" * 30, "per_page=ten", "per_page=NaN",
    ],
)  # fmt: skip
@pytest.mark.parametrize(("path", "caller"), LISTS)
def test_bad_page_numbers_are_422(send, path, caller, query):
    assert_refused(send("get", f"{path}?{query}", caller), 422)


@pytest.mark.parametrize(("path", "caller"), LISTS)
def test_far_pages_and_unknown_parameters_are_harmless(send, path, caller):
    # past the 10,000th row a page number is refused: deep pages come by cursor
    far = send("get", f"{path}?page=1000000&per_page=100", caller)
    assert_refused(far, 400)
    assert "next" in far.json["message"]
    odd = send("get", f"{path}?page=1&page=2&utm_source=x&page[]=3&%00=%00&sort=;drop", caller)
    assert odd.status_code == 200
    assert odd.json["page"] == 1


@pytest.mark.parametrize(
    "query",
    ["status=PENDING", "status=%00", "status=" + "x" * 10_000, "user_id=0",
     "user_id=2147483648", "user_id=" + "9" * 30, "user_id=one", "user_id=-1"],
)  # fmt: skip
def test_bad_request_filters_are_422(send, query):
    assert_refused(send("get", f"/requests?{query}", "librarian"), 422)


@pytest.mark.parametrize(
    "month",
    ["0000-01", "9999-12", "1899-12", "2026-1", "2026-13", "2026-00", "２０２６-01",
     "2026-01%0A", "2026-01%00", "%00", "2026-01-01", "", "x" * 10_000],
)  # fmt: skip
def test_bad_export_months_are_422(send, month):
    assert_refused(send("get", f"/export-report?month={month}"), 422)
    body = {"month": month.replace("%0A", "\n").replace("%00", "\x00")}
    assert_refused(send("post", "/export-report", json=body), 422)


@pytest.mark.parametrize("fmt", ["pdf", "HTML", "%00", "html%00", "x" * 10_000])
def test_bad_download_formats_are_422(send, app, world, fmt):
    from models import Report

    with app.app_context():
        report = Report(user_id=world["ids"]["patron_id"], status=ReportStatus.DONE)
        db.session.add(report)
        db.session.commit()
        report_id = report.id
    assert_refused(send("get", f"/reports/{report_id}/download?format={fmt}"), 422)


# ------------------------------------------------------------------ path parameters


@pytest.mark.parametrize(
    "path",
    [
        "/requests/0", "/requests/-1", "/requests/2147483648", "/requests/9223372036854775808",
        "/requests/" + "9" * 30, "/requests/1.5", "/requests/%00", "/requests/1%00",
        "/requests/2147483648/cancel", "/requests/" + "9" * 30 + "/approve",
        "/reports/%00", "/reports/" + "a" * 10_000, "/reports/not-a-uuid",
        "/reports/00000000-0000-0000-0000-000000000000",
        "/reports/00000000-0000-0000-0000-000000000000%00/download",
        "/users/2147483648", "/users/" + "9" * 30,
    ],
)  # fmt: skip
def test_impossible_ids_are_404(send, path):
    method = "get"
    if path.endswith(("/cancel", "/approve")):
        method = "post"
    elif path.startswith("/users/"):
        method = "patch"
    response = send(method, path, "librarian", json={"role": "user"} if method == "patch" else None)
    assert_refused(response, 404)


# ------------------------------------------------------------------ the document's word

PATTERN_PROBES = [
    "Dune", " Dune ", "\tDune\r\n", "Du ne", "Du\tne", "Du\nne", "Du\x00ne", "Dune\x0b",
    "\x1fDune", "Dune\x7f", "Dune\x85", "Dune\u3000", "\u00a0", " ", "\n", "", "x" * 200,
    " " + "x" * 200, "x" * 199 + "\n",
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema_name", "field"),
    [("BookRequestCreate", "book_name"), ("BookRequestCreate", "author"),
     ("BookRequestCreate", "note"), ("Reject", "reason"), ("Login", "username")],
)  # fmt: skip
def test_text_fields_accept_exactly_what_the_document_allows(client, schema_name, field):
    """The OpenAPI pattern and lengths of each text field say what the API accepts."""
    import schemas

    documented = client.get("/openapi.json").json["components"]["schemas"][schema_name]
    rule = documented["properties"][field]
    schema = getattr(schemas, f"{schema_name}Schema")()
    others = {"book_name": "Dune", "username": "reader", "password": "secret", "reason": "no"}
    for probe in PATTERN_PROBES:
        allowed = (
            re.fullmatch(rule["pattern"], probe) is not None
            and rule.get("minLength", 0) <= len(probe) <= rule["maxLength"]
        )
        body = {**{k: v for k, v in others.items() if k in schema.fields}, field: probe}
        accepted = not schema.validate(body)
        assert accepted == allowed, f"{field}={probe!r}: accepted {accepted}, documented {allowed}"
