"""Pages: the envelope, `next` links and cursors, walks under concurrent writes, bounded totals."""

import threading
from datetime import timedelta

import pytest
import requests
from itsdangerous import URLSafeSerializer
from marshmallow import Schema, fields
from sqlalchemy import insert, select

from book_requests import requests_query
from models import BookRequest, Report, RequestStatus, db, utcnow
from schemas import BookRequestSchema, PlainDump, dump_book_request, page_schema
from tests.dbstate import snapshot

ENVELOPE = {"items", "page", "per_page", "total", "pages", "total_exceeds", "next"}


def add_requests(app, user_id, count, status="pending"):
    """Insert `count` requests straight into the table; return their ids, oldest first."""
    with app.app_context():
        rows = [
            {"user_id": user_id, "book_name": f"Book {n}", "status": status} for n in range(count)
        ]
        db.session.execute(insert(BookRequest), rows)
        db.session.commit()
        return list(
            db.session.scalars(
                select(BookRequest.id)
                .where(BookRequest.user_id == user_id)
                .order_by(BookRequest.id)
            )
        )


def walk(client, url, headers):
    """Follow `next` from `url` to the last page; return the item ids and the pages seen."""
    ids, pages = [], []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.json
        page = response.json
        assert set(page) == ENVELOPE
        if page["next"]:
            assert response.headers["Link"] == f'<{page["next"]}>; rel="next"'
        else:
            assert "Link" not in response.headers
        ids += [item["id"] for item in page["items"]]
        pages.append(page)
        url = page["next"]
    return ids, pages


def test_next_walks_every_row_once_and_ends_with_null(client, app, auth):
    patron, headers = auth.patron()
    ids = add_requests(app, patron["id"], 23)
    seen, pages = walk(client, "/requests?per_page=5", headers)
    assert seen == list(reversed(ids))
    assert [page["page"] for page in pages] == [1, 2, 3, 4, 5]
    assert all((p["total"], p["pages"], p["total_exceeds"]) == (23, 5, False) for p in pages)
    assert pages[-1]["next"] is None and len(pages[-1]["items"]) == 3


def test_next_keeps_the_filters_and_page_size(client, app, auth):
    alice, _ = auth.patron()
    bob, _ = auth.patron()
    add_requests(app, alice["id"], 4, status="approved")
    wanted = add_requests(app, alice["id"], 7, status="pending")[-7:]
    add_requests(app, bob["id"], 5, status="pending")
    _, librarian = auth.librarian()
    url = f"/requests?status=pending&user_id={alice['id']}&per_page=3"
    seen, pages = walk(client, url, librarian)
    assert seen == list(reversed(wanted))
    assert all(len(page["items"]) <= 3 and page["total"] == 7 for page in pages)
    assert "status=pending" in pages[0]["next"] and f"user_id={alice['id']}" in pages[0]["next"]


@pytest.mark.parametrize(
    "base_url",
    [
        "http://localhost",
        "https://Library.Example:8443",
        "http://[::1]:5000",
        "http://library.test/under/a root",
    ],
)
@pytest.mark.parametrize(
    "query", ["", "?per_page=3", "?status=pending&per_page=2", "?user_id={id}&status=pending"]
)
def test_next_is_the_url_url_for_builds(client, app, auth, base_url, query):
    """The next link is built from a kept base and the query, not by url_for every page:
    it must be url_for's URL to the byte, whatever the host, scheme and script root."""
    from flask import url_for

    from pagination import serializer

    librarian, headers = auth.librarian()
    ids = add_requests(app, librarian["id"], 21)
    query = query.format(id=librarian["id"])
    for _ in range(2):  # the second time from the kept base
        response = client.get(f"/requests{query}", headers=headers, base_url=base_url)
        page = response.json
        with app.test_request_context(f"/requests{query}", base_url=base_url):
            args = {"per_page": page["per_page"]}
            for name in ("status", "user_id"):
                if f"{name}=" in query:
                    args[name] = query.split(f"{name}=")[1].split("&")[0]
            cursor = serializer().dumps(
                {"l": "requests", "o": page["per_page"], "k": [page["items"][-1]["id"]]}
            )
            expected = url_for("book_requests.BookRequests", _external=True, cursor=cursor, **args)
        assert page["next"] == expected
        assert response.headers["Link"] == f'<{expected}>; rel="next"'
    assert page["items"][-1]["id"] in ids


def test_cursors_are_signed_as_itsdangerous_signs_them(app):
    """The cursor serializer derives its key once; its cursors are URLSafeSerializer's."""
    from pagination import serializer

    plain = URLSafeSerializer(app.config["JWT_SECRET_KEY"], salt="page-cursor")
    payload = {"l": "requests", "o": 20, "k": [7]}
    with app.app_context():
        assert serializer().dumps(payload) == plain.dumps(payload)
        assert serializer().loads(plain.dumps(payload)) == payload


def test_users_walk_oldest_first(client, auth):
    _, librarian = auth.librarian()
    made = [auth.register()["id"] for _ in range(4)]
    seen, _ = walk(client, "/users?per_page=2", librarian)
    assert seen[-4:] == made and seen == sorted(seen)


def test_reports_walk_newest_first_and_ties_break_on_id(client, app, auth):
    patron, headers = auth.patron()
    same_time = utcnow() - timedelta(days=1)
    with app.app_context():
        for n in range(7):
            # three reports share one created_at: the id keeps their order stable across pages
            created = same_time if n < 3 else same_time + timedelta(minutes=n)
            db.session.add(Report(user_id=patron["id"], status="done", created_at=created))
        db.session.commit()
        expected = list(
            db.session.scalars(
                select(Report.id).order_by(Report.created_at.desc(), Report.id.desc())
            )
        )
    seen, _ = walk(client, "/reports?per_page=2", headers)
    assert seen == expected


def test_a_walk_under_writes_visits_each_row_exactly_once(client, app, auth):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    ids = add_requests(app, patron["id"], 40)
    seen, url, turn = [], "/requests?per_page=6", 0
    while url:
        page = client.get(url, headers=librarian).json
        seen += [item["id"] for item in page["items"]]
        url = page["next"]
        # between pages: new requests arrive and old ones, seen and unseen, change status
        client.post("/requests", json={"book_name": f"New {turn}"}, headers=headers)
        for request_id in (ids[turn], ids[-1 - turn]):
            client.post(f"/requests/{request_id}/approve", headers=librarian)
        turn += 1
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)


def test_a_walk_against_the_server_while_others_write(live_server, app, auth):
    """Real concurrency: gunicorn serves the walk while another client writes nonstop."""
    base = live_server.url
    patron, patron_headers = auth.patron()
    _, librarian = auth.librarian()
    ids = add_requests(app, patron["id"], 60)
    stop = threading.Event()

    def write():
        turn = 0
        while not stop.is_set():
            body = {"book_name": f"Concurrent {turn}"}
            requests.post(f"{base}/requests", json=body, headers=patron_headers, timeout=30)
            action = "approve" if turn % 2 else "reject"
            body = {"reason": "busy"} if action == "reject" else None
            target = ids[(turn * 7) % len(ids)]
            requests.post(
                f"{base}/requests/{target}/{action}", json=body, headers=librarian, timeout=30
            )
            turn += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        seen, url = [], f"{base}/requests?per_page=4"
        while url:
            response = requests.get(url, headers=librarian, timeout=30)
            assert response.status_code == 200, response.text
            seen += [item["id"] for item in response.json()["items"]]
            assert response.links.get("next", {}).get("url") == response.json()["next"]
            url = response.json()["next"]
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)


def test_past_ten_thousand_rows_totals_give_way_and_deep_pages_need_a_cursor(client, app, auth):
    patron, headers = auth.patron()
    ids = add_requests(app, patron["id"], 10_001)
    first = client.get("/requests?per_page=100", headers=headers).json
    assert (first["total"], first["pages"], first["total_exceeds"]) == (None, None, True)
    last_numbered = client.get("/requests?page=100&per_page=100", headers=headers)
    assert last_numbered.status_code == 200
    assert last_numbered.json["items"][-1]["id"] == ids[1]
    too_deep = client.get("/requests?page=101&per_page=100", headers=headers)
    assert too_deep.status_code == 400
    assert "next" in too_deep.json["message"] and too_deep.json["code"] == 400
    # the 10,001st row is reached by cursor
    beyond = client.get(last_numbered.json["next"], headers=headers).json
    assert [item["id"] for item in beyond["items"]] == [ids[0]]
    assert (beyond["page"], beyond["next"]) == (101, None)


def test_exactly_ten_thousand_rows_are_counted_exactly(client, app, auth):
    patron, headers = auth.patron()
    add_requests(app, patron["id"], 10_000)
    page = client.get("/requests?per_page=100", headers=headers).json
    assert (page["total"], page["pages"], page["total_exceeds"]) == (10_000, 100, False)


def forge(app, payload):
    """A cursor signed with the service's own key, for payloads the service never makes."""
    return URLSafeSerializer(app.config["JWT_SECRET_KEY"], salt="page-cursor").dumps(payload)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "e30",
        "x" * 1001,
        lambda app, real: real[:-2] + ("AA" if not real.endswith("AA") else "BB"),
        lambda app, real: real.replace(".", "x.", 1),
        lambda app, real: URLSafeSerializer("another secret", salt="page-cursor").dumps(
            {"l": "requests", "o": 0, "k": [1]}
        ),
        lambda app, real: forge(app, {"l": "reports", "o": 0, "k": [1]}),
        lambda app, real: forge(app, {"l": "requests", "o": -1, "k": [1]}),
        lambda app, real: forge(app, {"l": "requests", "o": True, "k": [1]}),
        lambda app, real: forge(app, {"l": "requests", "o": 0, "k": [True]}),
        lambda app, real: forge(app, {"l": "requests", "o": 0, "k": ["1"]}),
        lambda app, real: forge(app, {"l": "requests", "o": 0, "k": [2**70]}),
        lambda app, real: forge(app, {"l": "requests", "o": 0, "k": [1, 2]}),
        lambda app, real: forge(app, {"l": "requests", "o": 0, "k": 1}),
        lambda app, real: forge(app, {"l": "requests", "o": 0}),
        lambda app, real: forge(app, ["requests", 0, [1]]),
    ],
)
def test_a_tampered_cursor_is_400_and_changes_nothing(client, app, auth, cursor):
    patron, headers = auth.patron()
    add_requests(app, patron["id"], 3)
    real = client.get("/requests?per_page=1", headers=headers).json["next"].split("cursor=")[1]
    if callable(cursor):
        cursor = cursor(app, real)
    before = snapshot(app)
    response = client.get("/requests", query_string={"cursor": cursor}, headers=headers)
    assert response.status_code in (400, 422), response.json
    assert response.json["code"] == response.status_code and response.json["message"]
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "key",
    [["not a date", "x"], [1, "x"], ["2026-01-01T00:00:00", 5], ["2026-01-01T00:00:00", "x" * 65]],
)
def test_a_report_cursor_with_a_bad_key_is_400(client, app, auth, key):
    _, headers = auth.patron()
    cursor = forge(app, {"l": "reports", "o": 0, "k": key})
    response = client.get("/reports", query_string={"cursor": cursor}, headers=headers)
    assert response.status_code == 400
    assert response.json["code"] == 400


def test_a_cursor_takes_the_place_of_page(client, app, auth):
    patron, headers = auth.patron()
    ids = add_requests(app, patron["id"], 5)
    second = client.get("/requests?per_page=2", headers=headers).json["next"]
    page = client.get(second + "&page=1", headers=headers).json
    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    assert page["page"] == 2


def every_kind_of_request(user_id, decider_id):
    """Rows in every status, each nullable column both null and set, and datetimes with and
    without microseconds (isoformat leaves a zero microsecond out)."""
    whole = utcnow().replace(microsecond=0)
    rows = []
    for n, status in enumerate(RequestStatus):
        for filled in (False, True):
            moment = whole + timedelta(days=n, microseconds=123456 if filled else 0)
            rows.append(
                {
                    "user_id": user_id,
                    "book_name": f"Book {status} {filled}",
                    "author": "Ann Author" if filled else None,
                    "note": "a note\nover two lines" if filled else None,
                    "status": status,
                    "request_date": moment,
                    "decided_at": moment if filled else None,
                    "decided_by": decider_id if filled else None,
                    "reason": "no copies" if filled else None,
                    "due_date": moment + timedelta(days=14) if filled else None,
                    "returned_at": moment if filled else None,
                    "renewals": n if filled else 0,
                }
            )
    return rows


def test_the_list_dumps_its_rows_exactly_as_the_schema_does(client, app, auth):
    patron, headers = auth.patron()
    librarian, _ = auth.librarian()
    with app.app_context():
        db.session.execute(
            insert(BookRequest), every_kind_of_request(patron["id"], librarian["id"])
        )
        db.session.commit()
        rows = db.session.execute(requests_query("user_id"), {"user_id": patron["id"]}).all()
        entities = db.session.scalars(
            select(BookRequest)
            .where(BookRequest.user_id == patron["id"])
            .order_by(BookRequest.id.desc())
        ).all()
        schema = BookRequestSchema()
        assert len(rows) == 2 * len(RequestStatus)
        for row in rows:
            assert dump_book_request.row(row) == schema.dump(row._mapping)
            assert dump_book_request(row) == schema.dump(row._mapping)
        for entity in entities:
            assert dump_book_request(entity) == schema.dump(entity)
        expected = schema.dump(entities, many=True)
    response = client.get("/requests?per_page=100", headers=headers)
    assert response.status_code == 200
    page = response.json
    assert page["items"] == expected
    assert page == page_schema(BookRequestSchema)().dump({**page, "items": entities})
    # what the schema leaves out stays out, and each null and datetime as the schema has it
    assert {None, "Ann Author"} == {item["author"] for item in page["items"]}
    assert any("." not in item["request_date"] for item in page["items"])
    assert any(item["request_date"].endswith(".123456+00:00") for item in page["items"])


def test_a_schema_the_plain_dump_cannot_follow_is_refused():
    class Odd(Schema):
        done = fields.Bool()

    class Renamed(Schema):
        name = fields.Str(data_key="title")

    with pytest.raises(TypeError, match="Boolean is not handled"):
        PlainDump(Odd)
    with pytest.raises(TypeError, match="not a plain field"):
        PlainDump(Renamed)
