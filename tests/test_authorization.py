"""Who may call what: every route for anonymous, the owner, another patron and a librarian."""

import pytest

from models import Report, ReportStatus, db

# (method, path template, body): {owner} etc. are filled in from the fixture's objects
ROUTES = [
    ("get", "/me", None),
    ("get", "/requests", None),
    ("post", "/requests", {"book_name": "Matrix"}),
    ("post", "/request-book", {"book_name": "Matrix"}),
    ("get", "/requests/{request_id}", None),
    ("post", "/requests/{request_id}/cancel", None),
    ("post", "/requests/{request_id}/approve", None),
    ("post", "/requests/{request_id}/reject", {"reason": "no"}),
    ("post", "/requests/{approved_id}/return", None),
    ("get", "/reports", None),
    ("get", "/reports/{report_id}", None),
    ("get", "/reports/{report_id}/download?format=csv", None),
    ("get", "/users", None),
    ("patch", "/users/{owner_id}", {"role": "user"}),
    ("post", "/logout", None),
]

# expected status per caller; "ok" is the route's success status
EXPECTED = {
    "/me": {"anonymous": 401, "owner": "ok", "other": "ok", "librarian": "ok"},
    "/requests": {"anonymous": 401, "owner": "ok", "other": "ok", "librarian": "ok"},
    "/request-book": {"anonymous": 401, "owner": "ok", "other": "ok", "librarian": "ok"},
    "/requests/{request_id}": {"anonymous": 401, "owner": "ok", "other": 404, "librarian": "ok"},
    "/requests/{request_id}/cancel": {
        "anonymous": 401,
        "owner": "ok",
        "other": 404,
        "librarian": 403,
    },
    "/requests/{request_id}/approve": {
        "anonymous": 401,
        "owner": 403,
        "other": 403,
        "librarian": "ok",
    },
    "/requests/{request_id}/reject": {
        "anonymous": 401,
        "owner": 403,
        "other": 403,
        "librarian": "ok",
    },
    "/requests/{approved_id}/return": {
        "anonymous": 401,
        "owner": 403,
        "other": 403,
        "librarian": "ok",
    },
    "/reports": {"anonymous": 401, "owner": "ok", "other": "ok", "librarian": "ok"},
    "/reports/{report_id}": {"anonymous": 401, "owner": "ok", "other": 404, "librarian": "ok"},
    "/reports/{report_id}/download?format=csv": {
        "anonymous": 401,
        "owner": 409,
        "other": 404,
        "librarian": 409,
    },
    "/users": {"anonymous": 401, "owner": 403, "other": 403, "librarian": "ok"},
    "/users/{owner_id}": {"anonymous": 401, "owner": 403, "other": 403, "librarian": "ok"},
    "/logout": {"anonymous": 401, "owner": "ok", "other": "ok", "librarian": "ok"},
}
SUCCESS = {"post /requests": 201, "post /request-book": 201}


@pytest.fixture
def world(client, app, auth):
    owner, owner_headers = auth.patron()
    _, other_headers = auth.patron()
    _, librarian_headers = auth.librarian()
    request_id = client.post("/requests", json={"book_name": "Owned"}, headers=owner_headers).json[
        "id"
    ]
    approved_id = client.post("/requests", json={"book_name": "Lent"}, headers=owner_headers).json[
        "id"
    ]
    client.post(f"/requests/{approved_id}/approve", headers=librarian_headers)
    with app.app_context():
        report = Report(user_id=owner["id"], status=ReportStatus.QUEUED)
        db.session.add(report)
        db.session.commit()
        report_id = report.id
    return {
        "ids": {
            "request_id": request_id,
            "approved_id": approved_id,
            "report_id": report_id,
            "owner_id": owner["id"],
        },
        "headers": {
            "anonymous": {},
            "owner": owner_headers,
            "other": other_headers,
            "librarian": librarian_headers,
        },
    }


@pytest.mark.parametrize("caller", ["anonymous", "owner", "other", "librarian"])
@pytest.mark.parametrize(("method", "template", "body"), ROUTES, ids=[r[1] for r in ROUTES])
def test_authorization_matrix(client, world, caller, method, template, body):
    path = template.format(**world["ids"])
    response = getattr(client, method)(path, json=body, headers=world["headers"][caller])
    expected = EXPECTED[template][caller]
    if expected == "ok":
        expected = SUCCESS.get(f"{method} {template}", 200)
    assert response.status_code == expected, (caller, path, response.json)
    if caller == "other" and expected == 404:
        assert "Owned" not in response.get_data(as_text=True)
