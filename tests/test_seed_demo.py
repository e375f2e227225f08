"""The `seed-demo` command: a lived-in demo database, made once however often it runs."""

import pytest
from sqlalchemy import func, select

from models import BookRequest, Report, ReportStatus, RequestStatus, User, db, utcnow
from report_formats import FORMATS
from seed import DEMO_REQUESTS

LOGINS = [
    ("librarian", "librarian-demo", "admin"),
    ("alice", "patron-demo", "user"),
    ("bob", "patron-demo", "user"),
    ("carol", "patron-demo", "user"),
]


@pytest.fixture
def seed(app, runner):
    """Run `flask seed-demo`, as app.py registers it, and return its output."""

    def run():
        result = runner.invoke(args=["seed-demo"])
        assert result.exit_code == 0, result.output
        return result.output

    return run


def counts(app):
    with app.app_context():
        return {
            model.__name__: db.session.scalar(select(func.count()).select_from(model))
            for model in (User, BookRequest, Report)
        }


def login(client, username, password):
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def test_seed_demo_runs_twice_without_duplicates(app, seed):
    seed()
    first = counts(app)
    # alice's report and the librarian's library-wide one
    assert first == {"User": 4, "BookRequest": 10, "Report": 2}
    seed()
    assert counts(app) == first


def test_seed_demo_prints_the_logins(seed):
    output = seed()
    lines = output.splitlines()
    header = next(line for line in lines if "username" in line)
    assert "password" in header and "role" in header
    for username, password, role in LOGINS:
        assert any(line.split() == [username, password, role] for line in lines), output


def test_seed_demo_returns_the_logins(app):
    from seed import seed_demo

    with app.app_context():
        assert seed_demo() == LOGINS
        assert seed_demo() == LOGINS


def test_every_demo_account_can_log_in(client, seed):
    seed()
    for username, password, role in LOGINS:
        me = client.get("/me", headers=login(client, username, password))
        assert me.status_code == 200
        assert me.json["role"] == role
        assert me.json["email"] == f"{username}@example.org"


def test_librarian_sees_requests_in_every_status(client, seed):
    seed()
    headers = login(client, "librarian", "librarian-demo")
    response = client.get("/requests?per_page=100", headers=headers)
    assert response.status_code == 200
    items = response.json["items"]
    assert response.json["total"] == len(items) == 10
    assert {item["status"] for item in items} == set(RequestStatus)
    assert len({item["user_id"] for item in items}) == 3

    now = utcnow().isoformat()
    approved = [item for item in items if item["status"] == "approved"]
    assert all(item["due_date"] and item["decided_by"] for item in approved)
    overdue = [item for item in approved if item["due_date"] < now]
    assert [item["book_name"] for item in overdue] == ["Dune"]
    rejected = [item for item in items if item["status"] == "rejected"]
    assert all(item["reason"] for item in rejected)
    returned = [item for item in items if item["status"] == "returned"]
    assert all(item["decided_at"] < item["returned_at"] < now for item in returned)
    # newest first, and the ids grow with the request dates
    dates = [item["request_date"] for item in items]
    assert dates == sorted(dates, reverse=True)


def test_each_status_filter_finds_demo_requests(client, seed):
    seed()
    headers = login(client, "librarian", "librarian-demo")
    for status in RequestStatus:
        response = client.get(f"/requests?status={status}", headers=headers)
        assert response.status_code == 200
        assert response.json["total"] >= 1, status


def test_patrons_see_only_their_own_requests(client, seed):
    seed()
    headers = login(client, "bob", "patron-demo")
    items = client.get("/requests", headers=headers).json["items"]
    assert {item["book_name"] for item in items} == {
        "Dune",
        "Neuromancer",
        "The Pragmatic Programmer",
    }


def test_alices_report_is_done_and_downloadable(client, seed):
    seed()
    headers = login(client, "alice", "patron-demo")
    reports = client.get("/reports", headers=headers).json
    assert reports["total"] == 1
    report = reports["items"][0]
    assert report["status"] == ReportStatus.DONE
    assert report["progress"] == 1.0
    assert report["row_count"] == 4
    assert report["month"] is None
    assert set(report["download_urls"]) == set(FORMATS) >= {"html", "csv"}

    html = client.get(report["download_urls"]["html"], headers=headers)
    assert html.status_code == 200
    assert html.headers["Content-Disposition"].startswith("attachment")
    assert html.mimetype == "text/html"
    page = html.get_data(as_text=True)
    assert "Middlemarch" in page and "The Left Hand of Darkness" in page

    csv = client.get(report["download_urls"]["csv"], headers=headers)
    assert csv.status_code == 200
    assert csv.mimetype == "text/csv"
    lines = csv.get_data(as_text=True).splitlines()
    assert lines[0].startswith("\ufeffid,book_name")
    assert len(lines) == 5


def test_the_librarian_has_a_library_report_with_the_whole_demo(client, seed):
    seed()
    seed()  # a second run builds nothing more
    headers = login(client, "librarian", "librarian-demo")
    reports = client.get("/reports", headers=headers).json["items"]
    library = [report for report in reports if report["scope"] == "library"]
    assert len(library) == 1 and library[0]["status"] == ReportStatus.DONE
    assert library[0]["row_count"] == len(DEMO_REQUESTS)
    page = client.get(library[0]["download_urls"]["html"], headers=headers).get_data(as_text=True)
    # bob's Dune is the demo's overdue loan; carol's Pride and Prejudice waits in the queue
    assert "Dune" in page.split("Overdue loans", 1)[1]
    assert "Pride and Prejudice" in page.split("Pending queue", 1)[1]


def test_other_patrons_have_no_report(client, seed):
    seed()
    headers = login(client, "bob", "patron-demo")
    assert client.get("/reports", headers=headers).json["total"] == 0


def test_first_run_says_it_created_the_accounts_and_later_runs_that_it_reused_them(seed):
    first = seed().splitlines()
    assert "Created: librarian, alice, bob, carol." in first
    assert not any(line.startswith("Reused") for line in first)
    second = seed().splitlines()
    assert "Reused from an earlier seed-demo, unchanged: librarian, alice, bob, carol." in second
    assert not any(line.startswith("Created") for line in second)


def test_an_account_it_did_not_create_is_left_alone_and_named(app, client, auth, seed):
    auth.register(username="alice", email="alice@example.org", password="alices own pass")
    output = seed()
    login(client, "alice", "alices own pass")
    bad = client.post("/login", json={"username": "alice", "password": "patron-demo"})
    assert bad.status_code == 401
    lines = output.splitlines()
    # the table offers no login that would not work
    assert not any(line.split()[:1] == ["alice"] for line in lines)
    assert any(line.startswith("Left alone") and "alice" in line for line in lines), output
    assert "Created: librarian, bob, carol." in lines
    headers = login(client, "alice", "alices own pass")
    assert client.get("/requests", headers=headers).json["items"] == []
    assert client.get("/reports", headers=headers).json["items"] == []


def test_a_patron_named_librarian_is_not_promoted(app, auth, runner, seed):
    auth.register(username="librarian", email="someone@example.org", password="squatter1")
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code != 0
    assert "seed-demo did not create" in result.output
    assert "nothing was changed" in result.output
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == "librarian"))
        assert user.role == "user"
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_a_librarian_it_did_not_create_keeps_its_password(app, client, runner, seed):
    created = runner.invoke(
        args=[
            "create-admin",
            "--username",
            "librarian",
            "--email",
            "librarian@example.org",
            "--password-stdin",
        ],
        input="their own secret\n",
    )
    assert created.exit_code == 0, created.output
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code != 0
    assert "seed-demo did not create" in result.output
    login(client, "librarian", "their own secret")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(BookRequest)) == 0
