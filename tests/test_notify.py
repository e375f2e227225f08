"""Patrons hear of their requests: decision mails through the outbox, the notify setting, and
the due-soon nudge, with a real worker, a real Redis and a real SMTP server."""

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

import outbox
from models import BookRequest, OutboxMail, db, utcnow
from tests.servers import wait_for

BASE_URL = "http://library.test:8080"  # PUBLIC_BASE_URL in tests/conftest.py


def mails_to(smtp_server, address):
    """Mails to `address` other than the verification mail every registration sends."""
    _, sink = smtp_server
    return [
        m for m in sink.messages if m["To"] == address and not m["Subject"].startswith("Confirm")
    ]


def outbox_rows(app, user_id):
    with app.app_context():
        rows = db.session.scalars(
            select(OutboxMail)
            .where(OutboxMail.user_id == user_id, OutboxMail.key.not_like("verify:%"))
            .order_by(OutboxMail.id)
        ).all()
        db.session.expunge_all()
        return rows


def wait_until_sent(app, user_id, count=1, timeout=90):
    def sent():
        rows = outbox_rows(app, user_id)
        return rows if sum(row.status == "sent" for row in rows) == count else None

    return wait_for(sent, timeout=timeout, interval=0.2, what=f"{count} mail(s) sent")


def new_request(client, headers, **body):
    return client.post("/requests", json={"book_name": "Dune", **body}, headers=headers).json


def test_each_decision_mails_the_patron_once_with_what_was_decided(
    client, app, auth, worker, smtp_server
):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    kept = new_request(client, headers, author="Frank Herbert")
    refused = new_request(client, headers, book_name="Emma")

    approved = client.post(f"/requests/{kept['id']}/approve", headers=librarian).json
    client.post(
        f"/requests/{refused['id']}/reject", json={"reason": "Our copy is lost."}, headers=librarian
    )
    returned = client.post(f"/requests/{kept['id']}/return", headers=librarian).json

    rows = wait_until_sent(app, patron["id"], count=3)
    assert [row.key for row in rows] == [
        f"approve:{kept['id']}",
        f"reject:{refused['id']}",
        f"return:{kept['id']}",
    ]
    # a sweep after they were sent finds nothing left to send
    with app.app_context():
        assert outbox.sweep() == 0
    mails = {m["Subject"]: m for m in mails_to(smtp_server, patron["email"])}
    assert len(mails_to(smtp_server, patron["email"])) == 3
    approval = mails["Approved: Dune"].get_content()
    assert "by Frank Herbert has been approved" in approval
    assert f"due on {approved['due_date'][:10]}" in approval
    assert f"{BASE_URL}/requests/{kept['id']}" in approval
    assert "Reason: Our copy is lost." in mails["Not approved: Emma"].get_content()
    assert f"returned on {returned['returned_at'][:10]}" in mails["Returned: Dune"].get_content()


def test_cancel_and_renew_send_no_mail(client, app, auth):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    client.post(f"/requests/{new_request(client, headers)['id']}/cancel", headers=headers)
    loan = new_request(client, headers, book_name="Emma")
    client.post(f"/requests/{loan['id']}/approve", headers=librarian)
    assert client.post(f"/requests/{loan['id']}/renew", headers=headers).status_code == 200
    assert [row.key for row in outbox_rows(app, patron["id"])] == [f"approve:{loan['id']}"]


def test_a_refused_decision_queues_no_mail(client, app, auth):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    request_id = new_request(client, headers)["id"]
    client.post(f"/requests/{request_id}/cancel", headers=headers)
    assert client.post(f"/requests/{request_id}/approve", headers=librarian).status_code == 409
    assert outbox_rows(app, patron["id"]) == []


def test_redis_down_during_an_approve_and_the_mail_arrives_once_it_is_back(
    client, app, auth, worker, smtp_server, redis_server
):
    # no beat runs in the test suite: the worker's own timer sweeps the outbox
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    request_id = new_request(client, headers, book_name="Middlemarch")["id"]
    redis_server.stop()
    try:
        response = client.post(f"/requests/{request_id}/approve", headers=librarian)
        assert response.status_code == 200 and response.json["status"] == "approved"
        [row] = outbox_rows(app, patron["id"])
        assert row.status == "pending" and row.attempts == 0
    finally:
        redis_server.start()  # empty: the publish of the mail was never made

    [row] = wait_until_sent(app, patron["id"])
    assert row.attempts == 1
    [mail] = mails_to(smtp_server, patron["email"])
    assert mail["Subject"] == "Approved: Middlemarch"


def test_a_mail_held_up_by_a_locked_database_is_retried_and_arrives(
    client, app, auth, workers, smtp_server
):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if not url.startswith("sqlite"):
        pytest.skip("SQLite's write lock: one writer at a time, the others wait busy_timeout")
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    request_id = new_request(client, headers, book_name="Persuasion")["id"]
    workers.kill()  # the mail waits in the broker until a worker is back
    client.post(f"/requests/{request_id}/approve", headers=librarian)
    [row] = outbox_rows(app, patron["id"])
    # another writer holds the write lock past the worker's busy timeout (10 s)
    locker = sqlite3.connect(make_url(url).database, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        worker = workers.ensure()
        wait_for(
            lambda: (
                f"mail {row.id} not sent, retrying: (sqlite3.OperationalError) database is "
                "locked" in worker.log()
            ),
            timeout=60,
            what="the delivery to give way to the lock",
        )
    finally:
        locker.rollback()
        locker.close()
    [row] = wait_until_sent(app, patron["id"])
    assert row.attempts == 1  # the claim that met the lock changed nothing
    [mail] = mails_to(smtp_server, patron["email"])
    assert mail["Subject"] == "Approved: Persuasion"
    # a warning and a retry, not a task crash
    assert "in send_outbox_mail" not in worker.log()


def test_duplicate_deliveries_send_one_mail(client, app, auth, worker, smtp_server):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    request_id = new_request(client, headers)["id"]
    client.post(f"/requests/{request_id}/reject", json={"reason": "No."}, headers=librarian)
    [row] = outbox_rows(app, patron["id"])
    start = threading.Barrier(8)

    def deliver(_):
        start.wait()
        with app.app_context():
            return outbox.deliver(row.id)

    # eight deliveries race the worker's own for the same mail
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(deliver, range(8)))

    wait_until_sent(app, patron["id"])
    assert results.count(True) <= 1
    assert len(mails_to(smtp_server, patron["email"])) == 1
    with app.app_context():
        assert outbox.deliver(row.id) is False


def test_patron_turns_decision_mails_off_but_still_gets_the_overdue_reminder(
    client, app, auth, worker, smtp_server
):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    response = client.patch("/me", json={"notify": False}, headers=headers)
    assert response.status_code == 200
    assert response.json == {**client.get("/me", headers=headers).json, "notify": False}
    request_id = new_request(client, headers)["id"]
    client.post(f"/requests/{request_id}/approve", headers=librarian)
    assert outbox_rows(app, patron["id"]) == []

    with app.app_context():
        db.session.execute(
            update(BookRequest)
            .where(BookRequest.id == request_id)
            .values(due_date=utcnow() - timedelta(days=2))
        )
        db.session.commit()
    from tasks import send_overdue_reminders

    send_overdue_reminders.delay()
    [reminder] = wait_for(
        lambda: mails_to(smtp_server, patron["email"]), timeout=60, what="overdue reminder"
    )
    assert "overdue" in reminder["Subject"]
    assert outbox_rows(app, patron["id"]) == []


def test_notify_is_on_for_new_accounts_and_can_be_turned_back_on(client, auth):
    patron, headers = auth.patron()
    assert patron["notify"] is True
    client.patch("/me", json={"notify": False}, headers=headers)
    response = client.patch("/me", json={"notify": True}, headers=headers)
    assert response.status_code == 200 and response.json["notify"] is True


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "notify"),
        ({"notify": "false"}, "notify"),
        ({"notify": 0}, "notify"),
        ({"notify": None}, "notify"),
        ({"notify": True, "role": "admin"}, "role"),
        ({"notify": True, "email": "new@example.org"}, "email"),
    ],
)
def test_bad_me_updates_are_422_and_change_nothing(client, auth, body, field):
    _, headers = auth.patron()
    before = client.get("/me", headers=headers).json
    response = client.patch("/me", json=body, headers=headers)
    assert response.status_code == 422
    assert field in response.json["errors"]["json"]
    assert client.get("/me", headers=headers).json == before


def test_me_update_needs_a_token(client):
    response = client.patch("/me", json={"notify": False})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def approved_loan_due_in(client, app, auth, headers, librarian, delta, book_name="Dune"):
    request_id = new_request(client, headers, book_name=book_name)["id"]
    client.post(f"/requests/{request_id}/approve", headers=librarian)
    with app.app_context():
        db.session.execute(
            update(BookRequest)
            .where(BookRequest.id == request_id)
            .values(due_date=utcnow() + delta)
        )
        db.session.commit()
    return request_id


def nudges(app, user_id):
    return [row for row in outbox_rows(app, user_id) if row.key.startswith("due-soon:")]


def test_due_soon_job_run_twice_mails_once_with_a_renew_link(
    client, app, auth, worker, smtp_server
):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    soon = approved_loan_due_in(client, app, auth, headers, librarian, timedelta(days=1))
    later = approved_loan_due_in(
        client, app, auth, headers, librarian, timedelta(days=10), book_name="Emma"
    )
    from tasks import send_due_soon_nudges

    send_due_soon_nudges.delay()
    wait_for(lambda: nudges(app, patron["id"]), timeout=60, what="nudge queued")
    send_due_soon_nudges.delay()
    with app.app_context():
        assert outbox.queue_due_soon_nudges() == 0

    [nudge] = nudges(app, patron["id"])
    assert nudge.key.startswith(f"due-soon:{soon}:")
    wait_until_sent(app, patron["id"], count=3)  # two approvals and the nudge
    [mail] = [m for m in mails_to(smtp_server, patron["email"]) if m["Subject"].startswith("Due")]
    body = mail.get_content()
    assert f"POST {BASE_URL}/requests/{soon}/renew" in body
    assert "renewed 0 of 2 times" in body
    with app.app_context():
        loan = db.session.get(BookRequest, soon)
        assert loan.nudged_due_date == loan.due_date
        assert db.session.get(BookRequest, later).nudged_due_date is None


def test_a_renewed_loan_is_nudged_again_for_its_new_due_date(client, app, auth):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    loan = approved_loan_due_in(client, app, auth, headers, librarian, timedelta(days=1))
    with app.app_context():
        assert outbox.queue_due_soon_nudges() == 1
    client.post(f"/requests/{loan}/renew", headers=headers)
    with app.app_context():
        assert outbox.queue_due_soon_nudges() == 0  # now due in 15 days
        db.session.execute(
            update(BookRequest)
            .where(BookRequest.id == loan)
            .values(due_date=utcnow() + timedelta(hours=5))
        )
        db.session.commit()
        assert outbox.queue_due_soon_nudges() == 1
    assert len(nudges(app, patron["id"])) == 2


def test_due_soon_skips_patrons_with_mail_off_and_overdue_or_returned_loans(client, app, auth):
    quiet, quiet_headers = auth.patron()
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    client.patch("/me", json={"notify": False}, headers=quiet_headers)
    approved_loan_due_in(client, app, auth, quiet_headers, librarian, timedelta(days=1))
    approved_loan_due_in(client, app, auth, headers, librarian, -timedelta(hours=1))
    returned = approved_loan_due_in(client, app, auth, headers, librarian, timedelta(days=1))
    client.post(f"/requests/{returned}/return", headers=librarian)
    with app.app_context():
        assert outbox.queue_due_soon_nudges() == 0
    assert nudges(app, quiet["id"]) == [] and nudges(app, patron["id"]) == []


def test_concurrent_due_soon_runs_queue_one_nudge_per_loan(client, app, auth):
    patron, headers = auth.patron()
    _, librarian = auth.librarian()
    for book in ("Dune", "Emma", "Beloved"):
        approved_loan_due_in(client, app, auth, headers, librarian, timedelta(days=1), book)
    start = threading.Barrier(5)

    def run(_):
        start.wait()
        with app.app_context():
            return outbox.queue_due_soon_nudges()

    with ThreadPoolExecutor(max_workers=5) as pool:
        queued = list(pool.map(run, range(5)))

    assert sum(queued) == 3
    with app.app_context():
        keys = db.session.scalars(
            select(func.count(OutboxMail.id)).where(OutboxMail.key.like("due-soon:%"))
        ).one()
    assert keys == 3 and len(nudges(app, patron["id"])) == 3
