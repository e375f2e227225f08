"""Renewals: a patron or a librarian moves an approved loan's due date on, within the limits."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import requests
from sqlalchemy import update

from models import BookRequest, Conflict, db, utcnow


def approved_loan(client, auth, patron_headers):
    _, librarian = auth.librarian()
    request_id = client.post("/requests", json={"book_name": "Dune"}, headers=patron_headers).json[
        "id"
    ]
    loan = client.post(f"/requests/{request_id}/approve", headers=librarian).json
    return loan, librarian


def due(loan):
    return datetime.fromisoformat(loan["due_date"])


def set_due_date(app, request_id, due_date):
    with app.app_context():
        db.session.execute(
            update(BookRequest).where(BookRequest.id == request_id).values(due_date=due_date)
        )
        db.session.commit()


def test_patron_renews_an_approved_loan_by_loan_days_from_its_due_date(client, app, auth):
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    assert loan["renewals"] == 0

    response = client.post(f"/requests/{loan['id']}/renew", headers=headers)

    assert response.status_code == 200
    renewed = response.json
    assert renewed["status"] == "approved" and renewed["renewals"] == 1
    assert due(renewed) - due(loan) == timedelta(days=app.config["LOAN_DAYS"])
    assert client.get(f"/requests/{loan['id']}", headers=headers).json == renewed


def test_librarian_renews_a_patrons_loan(client, auth):
    _, headers = auth.patron()
    loan, librarian = approved_loan(client, auth, headers)
    response = client.post(f"/requests/{loan['id']}/renew", headers=librarian)
    assert response.status_code == 200 and response.json["renewals"] == 1


def test_patron_cannot_renew_another_patrons_loan(client, auth):
    _, owner = auth.patron()
    _, stranger = auth.patron()
    loan, _ = approved_loan(client, auth, owner)
    response = client.post(f"/requests/{loan['id']}/renew", headers=stranger)
    assert response.status_code == 404
    assert client.get(f"/requests/{loan['id']}", headers=owner).json["renewals"] == 0


def test_renewals_stop_at_max_renewals_with_a_409_saying_so(client, app, auth):
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    for count in range(1, app.config["MAX_RENEWALS"] + 1):
        response = client.post(f"/requests/{loan['id']}/renew", headers=headers)
        assert response.json["renewals"] == count

    refused = client.post(f"/requests/{loan['id']}/renew", headers=headers)

    assert refused.status_code == 409
    assert refused.json["status"] == "Conflict"
    assert "the most allowed" in refused.json["message"]
    after = client.get(f"/requests/{loan['id']}", headers=headers).json
    assert after["renewals"] == app.config["MAX_RENEWALS"]
    assert due(after) - due(loan) == timedelta(days=app.config["LOAN_DAYS"] * 2)


@pytest.mark.parametrize(
    "steps, status",
    [([], "pending"), (["reject"], "rejected"), (["approve", "return"], "returned")],
)
def test_only_approved_loans_renew(client, auth, steps, status):
    _, headers = auth.patron()
    _, librarian = auth.librarian()
    request_id = client.post("/requests", json={"book_name": "Emma"}, headers=headers).json["id"]
    for step in steps:
        body = {"reason": "No copy."} if step == "reject" else None
        client.post(f"/requests/{request_id}/{step}", json=body, headers=librarian)

    refused = client.post(f"/requests/{request_id}/renew", headers=headers)

    assert refused.status_code == 409
    assert f"this request is {status}" in refused.json["message"]
    assert client.get(f"/requests/{request_id}", headers=headers).json["renewals"] == 0


def test_overdue_loan_cannot_be_renewed_past_the_grace_days(client, app, auth):
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    set_due_date(app, loan["id"], utcnow() - timedelta(hours=1))

    refused = client.post(f"/requests/{loan['id']}/renew", headers=headers)

    assert refused.status_code == 409
    assert "overdue cannot be renewed" in refused.json["message"]
    assert client.get(f"/requests/{loan['id']}", headers=headers).json["renewals"] == 0


def test_grace_days_let_a_slightly_overdue_loan_renew(client, app, auth, monkeypatch):
    monkeypatch.setitem(app.config, "RENEW_GRACE_DAYS", 2)
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    one_day_late = utcnow() - timedelta(days=1)
    set_due_date(app, loan["id"], one_day_late)

    renewed = client.post(f"/requests/{loan['id']}/renew", headers=headers)

    assert renewed.status_code == 200
    assert due(renewed.json) == one_day_late + timedelta(days=app.config["LOAN_DAYS"])
    set_due_date(app, loan["id"], utcnow() - timedelta(days=3))
    assert client.post(f"/requests/{loan['id']}/renew", headers=headers).status_code == 409


def test_renewing_one_loan_leaves_every_other_loan_alone(client, auth):
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    other, _ = approved_loan(client, auth, headers)
    assert client.post(f"/requests/{loan['id']}/renew", headers=headers).status_code == 200
    assert client.get(f"/requests/{other['id']}", headers=headers).json == other


def renew_after_a_write_from_elsewhere(app, request_id, **values):
    """Renew a loan read before another connection wrote `values`, as a racing request does."""
    with app.app_context():
        loan = db.session.get(BookRequest, request_id)
        assert loan.status == "approved"  # what this request saw
        with db.engine.begin() as elsewhere:
            elsewhere.execute(
                update(BookRequest).where(BookRequest.id == request_id).values(**values)
            )
        return loan.renew()


def test_a_renewal_that_lost_a_race_to_another_renews_after_it(client, app, auth):
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    days = timedelta(days=app.config["LOAN_DAYS"])
    renewed_meanwhile = {"renewals": 1, "due_date": due(loan) + days}
    renew_after_a_write_from_elsewhere(app, loan["id"], **renewed_meanwhile)
    after = client.get(f"/requests/{loan['id']}", headers=headers).json
    # both renewals count, and neither's days are lost
    assert after["renewals"] == 2
    assert due(after) == due(loan) + 2 * days


def test_a_loan_returned_while_its_renewal_was_on_the_way_is_not_renewed(client, app, auth):
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    with pytest.raises(Conflict, match="this request is returned"):
        renew_after_a_write_from_elsewhere(app, loan["id"], status="returned")
    after = client.get(f"/requests/{loan['id']}", headers=headers).json
    assert (after["renewals"], after["due_date"]) == (0, loan["due_date"])


def test_renew_of_a_missing_request_is_404(client, auth):
    _, headers = auth.patron()
    assert client.post("/requests/999999/renew", headers=headers).status_code == 404


def test_twenty_concurrent_renewals_give_exactly_the_allowed_number(live_server, client, auth):
    _, headers = auth.patron()
    loan, _ = approved_loan(client, auth, headers)
    url = f"{live_server.url}/requests/{loan['id']}/renew"
    start = threading.Barrier(20)

    def renew(_):
        start.wait()
        return requests.post(url, headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(renew, range(20)))

    codes = sorted(response.status_code for response in responses)
    allowed = 2  # MAX_RENEWALS' default, which the live server runs with
    assert codes == [200] * allowed + [409] * (20 - allowed), codes
    assert sorted(r.json()["renewals"] for r in responses if r.ok) == list(range(1, allowed + 1))
    final = client.get(f"/requests/{loan['id']}", headers=headers).json
    assert final["renewals"] == allowed
    assert due(final) - due(loan) == timedelta(days=14 * allowed)
