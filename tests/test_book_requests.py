"""Book requests: a patron's requests and the librarian's workflow through the status machine."""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import event, select, update

from models import BookRequest, OutboxMail, RequestStatus, User, db
from schemas import BookRequestSchema
from tests.conftest import postgres_dsn


def make_request(client, headers, **body):
    body = {"book_name": "Dune", **body}
    response = client.post("/requests", json=body, headers=headers)
    assert response.status_code == 201, response.json
    return response.json


@pytest.mark.parametrize("path", ["/requests", "/request-book"])
def test_patron_requests_a_book_on_either_path(client, auth, path):
    user, headers = auth.patron()
    response = client.post(
        path,
        json={"book_name": "  The Hobbit  ", "author": "Tolkien", "note": "first edition"},
        headers=headers,
    )
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/requests/{body['id']}"
    assert body["book_name"] == "The Hobbit"
    assert body["status"] == "pending"
    assert body["user_id"] == user["id"]
    assert client.get(response.headers["Location"], headers=headers).json == body


@pytest.mark.parametrize("filled", [False, True])
def test_a_new_request_answers_as_the_schema_dumps_it(client, app, auth, filled):
    _, headers = auth.patron()
    body = {"book_name": "Dune"}
    if filled:
        body |= {"author": "Frank Herbert", "note": "any edition"}
    response = client.post("/requests", json=body, headers=headers)
    assert response.status_code == 201
    with app.app_context():
        stored = db.session.get(BookRequest, response.json["id"])
        assert response.json == BookRequestSchema().dump(stored)
    assert (response.json["author"] is None) is not filled
    assert (response.json["note"] is None) is not filled
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "book_name"),
        ({"book_name": ""}, "book_name"),
        ({"book_name": "   "}, "book_name"),
        ({"book_name": "x" * 201}, "book_name"),
        ({"book_name": 42}, "book_name"),
        ({"book_name": None}, "book_name"),
        ({"book_name": "ok\x00"}, "book_name"),
        ({"book_name": "two\nlines"}, "book_name"),
        ({"book_name": "ok", "author": "a" * 201}, "author"),
        ({"book_name": "ok", "note": "n" * 501}, "note"),
        ({"book_name": "ok", "status": "approved"}, "status"),
        ({"book_name": "ok", "user_id": 1}, "user_id"),
    ],
)
def test_bad_request_bodies_are_422_and_change_nothing(client, app, auth, body, field):
    _, headers = auth.patron()
    response = client.post("/requests", json=body, headers=headers)
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]
    with app.app_context():
        assert db.session.query(BookRequest).count() == 0


def test_list_shows_own_requests_newest_first_with_page_envelope(client, auth):
    _, headers = auth.patron()
    _, other_headers = auth.patron()
    ids = [make_request(client, headers, book_name=f"Book {n}")["id"] for n in range(3)]
    make_request(client, other_headers, book_name="Not mine")
    page = client.get("/requests", headers=headers).json
    assert [item["id"] for item in page["items"]] == list(reversed(ids))
    assert (page["page"], page["per_page"], page["total"], page["pages"]) == (1, 20, 3, 1)


def test_list_paginates_and_filters_by_status(client, auth):
    _, headers = auth.patron()
    ids = [make_request(client, headers, book_name=f"Book {n}")["id"] for n in range(5)]
    client.post(f"/requests/{ids[0]}/cancel", headers=headers)
    page = client.get("/requests?per_page=2&page=2", headers=headers).json
    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    assert (page["total"], page["pages"]) == (5, 3)
    cancelled = client.get("/requests?status=cancelled", headers=headers).json
    assert [item["id"] for item in cancelled["items"]] == [ids[0]]
    beyond = client.get("/requests?page=99", headers=headers).json
    assert beyond["items"] == [] and beyond["total"] == 5


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "per_page=0",
        "per_page=101",
        "page=abc",
        "status=lost",
        "page=99999999999999999999",
        "user_id=0",
    ],
)
def test_bad_list_queries_are_422(client, auth, query):
    _, headers = auth.patron()
    response = client.get(f"/requests?{query}", headers=headers)
    assert response.status_code == 422
    assert response.json["errors"]["query"]


def test_patron_cannot_widen_the_list_with_user_id(client, auth):
    victim, victim_headers = auth.patron()
    make_request(client, victim_headers)
    _, headers = auth.patron()
    page = client.get(f"/requests?user_id={victim['id']}", headers=headers).json
    assert page["items"] == [] and page["total"] == 0


def test_librarian_sees_everyones_requests_and_filters_by_user(client, auth):
    alice, alice_headers = auth.patron()
    _, bob_headers = auth.patron()
    make_request(client, alice_headers)
    make_request(client, bob_headers)
    _, librarian = auth.librarian()
    assert client.get("/requests", headers=librarian).json["total"] == 2
    only_alice = client.get(f"/requests?user_id={alice['id']}", headers=librarian).json
    assert [item["user_id"] for item in only_alice["items"]] == [alice["id"]]


def test_patron_cannot_see_another_patrons_request(client, auth):
    _, owner = auth.patron()
    request_id = make_request(client, owner)["id"]
    _, stranger = auth.patron()
    for method, path in [
        ("get", f"/requests/{request_id}"),
        ("post", f"/requests/{request_id}/cancel"),
    ]:
        response = getattr(client, method)(path, headers=stranger)
        assert response.status_code == 404, path
        assert "Dune" not in response.get_data(as_text=True)


def test_missing_request_is_404(client, auth):
    _, headers = auth.patron()
    assert client.get("/requests/999999", headers=headers).status_code == 404


def test_pending_limit_is_enforced(client, app, auth, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_PENDING_REQUESTS", 3)
    _, headers = auth.patron()
    for n in range(3):
        make_request(client, headers, book_name=f"Book {n}")
    response = client.post("/requests", json={"book_name": "One too many"}, headers=headers)
    assert response.status_code == 409
    assert "3 pending" in response.json["message"]


def test_on_sqlite_a_new_request_commits_as_its_statement_runs(client, app, auth):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite's own commit of a statement run outside a transaction")
    _, headers = auth.patron()
    statements = []
    with app.app_context():
        engine = db.engine

    def trace(dbapi_connection, record, proxy):
        dbapi_connection.set_trace_callback(statements.append)

    def untrace(dbapi_connection, record):
        dbapi_connection.set_trace_callback(None)

    event.listen(engine, "checkout", trace)
    event.listen(engine, "checkin", untrace)
    try:
        body = make_request(client, headers, book_name="Middlemarch")
    finally:
        event.remove(engine, "checkout", trace)
        event.remove(engine, "checkin", untrace)
    # no BEGIN before the INSERT, so no COMMIT after it: the write lock is the statement's
    assert any(statement.startswith("INSERT INTO book_request") for statement in statements)
    assert not [s for s in statements if s.split()[0] in ("BEGIN", "COMMIT")], statements
    with app.app_context():
        assert BookRequestSchema().dump(db.session.get(BookRequest, body["id"])) == body


def test_on_postgresql_a_new_request_waits_for_its_patrons_row_lock(client, app, auth):
    # two requests of one patron count the pending ones in turn, each under the patron's row
    # lock; a request that skipped it would count a snapshot (the race test sees that only
    # when its requests happen to overlap)
    dsn = postgres_dsn(app, "SQLite's write lock is taken inside the INSERT itself")
    user, headers = auth.patron()
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as watcher:
        # the lock an UPDATE takes, as lock_users' does; the INSERT's foreign-key check takes
        # a KEY SHARE lock, which this one lets through
        holder.execute('SELECT id FROM "user" WHERE id = %s FOR NO KEY UPDATE', (user["id"],))
        holder_pid = holder.info.backend_pid
        with ThreadPoolExecutor(1) as pool:
            made = pool.submit(
                client.post, "/requests", json={"book_name": "Dune"}, headers=headers
            )
            waiting = 0
            # the positive signal: another backend waits for this transaction's lock
            while not waiting and not made.done():
                time.sleep(0.02)
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (holder_pid,),
                ).fetchone()[0]
            assert waiting == 1, made.result().json
            holder.rollback()
            assert made.result(timeout=30).status_code == 201


def test_a_request_created_inside_a_transaction_commits_with_it(client, app, auth):
    user, _ = auth.patron()
    with app.app_context():
        patron = db.session.get(User, user["id"])
        db.session.execute(update(User).where(User.id == patron.id).values(notify=False))
        row = BookRequest.create(patron, "Kindred", note="any edition")
        db.session.close()
        stored = db.session.get(BookRequest, row.id)
        assert BookRequestSchema().dump(stored) == BookRequestSchema().dump(row)
        assert db.session.get(User, user["id"]).notify is False


def test_librarian_approves_and_marks_returned(client, auth):
    _, patron = auth.patron()
    request_id = make_request(client, patron)["id"]
    librarian_user, librarian = auth.librarian()
    approved = client.post(f"/requests/{request_id}/approve", headers=librarian)
    assert approved.status_code == 200
    body = approved.json
    assert body["status"] == "approved"
    assert body["decided_by"] == librarian_user["id"]
    from datetime import datetime

    decided = datetime.fromisoformat(body["decided_at"])
    due = datetime.fromisoformat(body["due_date"])
    assert (due - decided).days == 14
    returned = client.post(f"/requests/{request_id}/return", headers=librarian)
    assert returned.status_code == 200
    assert returned.json["status"] == "returned"
    assert returned.json["returned_at"]


def test_each_decision_queues_the_patrons_mail_with_the_change(client, app, auth):
    patron_user, patron = auth.patron()
    librarian_user, librarian = auth.librarian()
    kept = make_request(client, patron, book_name="Dune")["id"]
    refused = make_request(client, patron, book_name="Emma")["id"]
    withdrawn = make_request(client, patron, book_name="Kindred")["id"]
    client.post(f"/requests/{kept}/approve", headers=librarian)
    rejected = client.post(
        f"/requests/{refused}/reject", json={"reason": "Lost"}, headers=librarian
    )
    client.post(f"/requests/{kept}/return", headers=librarian)
    client.post(f"/requests/{withdrawn}/cancel", headers=patron)
    assert rejected.json["decided_by"] == librarian_user["id"] and rejected.json["decided_at"]
    with app.app_context():
        mails = db.session.execute(
            select(OutboxMail.key, OutboxMail.subject)
            .where(OutboxMail.user_id == patron_user["id"], OutboxMail.key.not_like("verify:%"))
            .order_by(OutboxMail.id)
        ).all()
    # a cancel is the patron's own doing: no mail
    assert [tuple(mail) for mail in mails] == [
        (f"approve:{kept}", "Approved: Dune"),
        (f"reject:{refused}", "Not approved: Emma"),
        (f"return:{kept}", "Returned: Dune"),
    ]


def test_reject_needs_a_reason(client, app, auth):
    _, patron = auth.patron()
    request_id = make_request(client, patron)["id"]
    _, librarian = auth.librarian()
    for body in [{}, {"reason": ""}, {"reason": "   "}, {"reason": "r" * 501}]:
        response = client.post(f"/requests/{request_id}/reject", json=body, headers=librarian)
        assert response.status_code == 422, body
    with app.app_context():
        assert db.session.get(BookRequest, request_id).status == RequestStatus.PENDING
    response = client.post(
        f"/requests/{request_id}/reject", json={"reason": "Out of print"}, headers=librarian
    )
    assert response.status_code == 200
    assert (response.json["status"], response.json["reason"]) == ("rejected", "Out of print")


@pytest.mark.parametrize(
    ("steps", "action", "current"),
    [
        (["approve"], "approve", "approved"),
        (["approve"], "reject", "approved"),
        (["approve"], "cancel", "approved"),
        ([], "return", "pending"),
        (["reject"], "approve", "rejected"),
        (["cancel"], "approve", "cancelled"),
        (["cancel"], "cancel", "cancelled"),
        (["approve", "return"], "return", "returned"),
        (["approve", "return"], "approve", "returned"),
    ],
)
def test_status_machine_refuses_invalid_transitions(client, auth, steps, action, current):
    _, patron = auth.patron()
    request_id = make_request(client, patron)["id"]
    _, librarian = auth.librarian()

    def do(step):
        headers = patron if step == "cancel" else librarian
        body = {"reason": "no"} if step == "reject" else None
        return client.post(f"/requests/{request_id}/{step}", json=body, headers=headers)

    for step in steps:
        assert do(step).status_code == 200
    response = do(action)
    assert response.status_code == 409
    assert current in response.json["message"]


def test_owner_cancels_a_pending_request(client, auth):
    _, patron = auth.patron()
    request_id = make_request(client, patron)["id"]
    response = client.post(f"/requests/{request_id}/cancel", headers=patron)
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"


def test_librarian_cannot_cancel_a_patrons_request(client, auth):
    _, patron = auth.patron()
    request_id = make_request(client, patron)["id"]
    _, librarian = auth.librarian()
    assert client.post(f"/requests/{request_id}/cancel", headers=librarian).status_code == 403
