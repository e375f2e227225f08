"""What a report says about what patrons typed: every user-supplied field is escaped in the
HTML (download and mail body) and defused as a formula in the CSV (download and attachment)."""

import csv
import io
import os
import re
import time
from datetime import datetime, timedelta
from html import escape

import pytest
from sqlalchemy import insert

from models import UTC, BookRequest, Report, ReportScope, User, db, utcnow
from report_builder import build_once, mail_once
from report_formats import CSV_COLUMNS
from tests.factories import start_report
from tests.servers import wait_for

# one hostile value per field the HTML shows; each breaks out of its cell if left raw
REQUEST_MARKUP = {
    "book_name": '<script>alert("book")</script>',
    "author": "<img src=x onerror=alert('author')>",
    "reason": '</td><svg onload=alert("reason")>',
    "note": "<b>note</b><iframe src=javascript:alert('note')>",
}
# the library report also shows who asked
MARKUP = {**REQUEST_MARKUP, "username": "<img src=x onerror=alert('patron')>&amp;"}
CSV_FIELDS = ("book_name", "author", "reason", "note")
# what spreadsheet programs take as the start of a formula (OWASP's CSV injection list)
FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]


def add_rows(app, user_id, rows):
    with app.app_context():
        now = utcnow()
        db.session.execute(
            insert(BookRequest),
            [{"user_id": user_id, "status": "rejected", "request_date": now, **r} for r in rows],
        )
        db.session.commit()


@pytest.fixture
def built(app, auth, client, smtp_server, workers):
    """Build and mail a report of `rows` in process; return its downloads and its mail."""
    # no worker may take the export first: this build is the one under test
    workers.kill()

    def build(rows, scope=ReportScope.PATRON, username=None, month=None):
        user, headers = auth.librarian() if scope == ReportScope.LIBRARY else auth.patron()
        if username:
            # one the API refuses, as if an older rule had let it in
            with app.app_context():
                db.session.get(User, user["id"]).username = username
                db.session.commit()
        add_rows(app, user["id"], rows)
        report_id = start_report(app, user["id"], scope=scope, month=month)
        with app.app_context():
            report = db.session.get(Report, report_id)
            assert build_once(report, "content-test")
            mail_once(report)
        download = f"/reports/{report_id}/download?format="
        _, sink = smtp_server
        mail = wait_for(
            lambda: [m for m in sink.messages if m["To"] == user["email"]], what="report mail"
        )[0]
        attachment = next(mail.iter_attachments()).get_content()
        return {
            "id": report_id,
            "user": user,
            "mail": mail,
            "html": client.get(download + "html", headers=headers).get_data(as_text=True),
            "mail_html": mail.get_body(preferencelist=("html",)).get_content(),
            "csv": client.get(download + "csv", headers=headers).get_data(as_text=True),
            "mail_csv": attachment if isinstance(attachment, str) else attachment.decode(),
        }

    return build


def test_every_field_the_html_shows_is_escaped(built):
    files = built([REQUEST_MARKUP])
    for where in ("html", "mail_html"):
        html = files[where]
        for field, value in REQUEST_MARKUP.items():
            assert value not in html, f"{field} is raw in the {where}"
            assert escape(value) in html, f"{field} is missing from the {where}"
        assert html.count("<iframe") == 0
        assert html.count("<script") == 0 and html.count("<img") == 0


def test_the_library_report_escapes_its_pending_queue_and_overdue_loans(built):
    late = {"status": "approved", "due_date": utcnow() - timedelta(days=3, hours=1)}
    rows = [{**REQUEST_MARKUP, "status": "pending"}, {**REQUEST_MARKUP, **late}]
    files = built(rows, ReportScope.LIBRARY, username=MARKUP["username"])
    for where in ("html", "mail_html"):
        queue, overdue = files[where].split("Pending queue", 1)[1].split("Overdue loans", 1)
        for part in (queue, overdue):
            for field in ("book_name", "author", "username"):
                assert MARKUP[field] not in part, f"{field} is raw in the {where}"
                assert escape(MARKUP[field]) in part, f"{field} is missing from the {where}"
        assert "3 days overdue" in overdue
        html = files[where]
        assert html.count("<iframe") == html.count("<script") == html.count("<img") == 0


def test_dates_badges_and_mail_of_a_patron_report(app, built):
    now, day, hour = utcnow(), timedelta(days=1), timedelta(hours=1)
    requested = now - 20 * day
    rows = [
        {"book_name": "Dune", "status": "approved", "decided_at": now - 9 * day,
         "due_date": now - 5 * day - hour},
        {"book_name": "Emma", "status": "approved", "due_date": now - day - hour},
        {"book_name": "Kindred", "status": "approved", "due_date": now + 12 * day},
        {"book_name": "Walden", "status": "returned", "due_date": now - 2 * day,
         "returned_at": now - 3 * day},
        {"book_name": "Beloved", "status": "pending", "author": "Toni Morrison"},
    ]  # fmt: skip
    files = built([{"request_date": requested, **row} for row in rows])

    def date(row, column):
        return row[column].strftime("%Y-%m-%d") if column in row else ""

    def badge(status, words):
        return f'<span class="badge s-{status}">{words}</span>'

    badges = [
        badge("overdue", "Overdue: 5 days"),
        badge("overdue", "Overdue: 1 day"),
        badge("approved", "Approved"),
        badge("returned", "Returned"),
        badge("pending", "Pending"),
    ]
    found = re.findall(r"<tr><td>\d+</td>.*?</tr>\n", files["html"])
    # one row a line: nothing between them
    assert "".join(found) in files["html"]
    html_rows = [re.findall(r"<td>(.*?)</td>", row) for row in found]
    assert [cells[1:] for cells in html_rows] == [
        [row["book_name"], row.get("author", ""), shown, requested.strftime("%Y-%m-%d"),
         date(row, "decided_at"), date(row, "due_date"), date(row, "returned_at"), "", ""]
        for row, shown in zip(rows, badges, strict=True)
    ]  # fmt: skip
    # the mail body is the download, in the mail's line endings
    assert files["mail_html"].replace("\r\n", "\n").strip() == files["html"].strip()

    def iso(row, column):
        value = row.get(column)
        return value.replace(tzinfo=None).isoformat() + "Z" if value else ""

    csv_rows = list(csv.DictReader(io.StringIO(files["csv"].lstrip("\ufeff"), newline="")))
    assert list(csv_rows[0]) == list(CSV_COLUMNS)
    # every cell, the empty ones (no author, reason or note) empty
    assert [list(r.values()) for r in csv_rows] == [
        [cells[0], row["book_name"], row.get("author", ""), row["status"],
         iso({"t": requested}, "t"), iso(row, "decided_at"), iso(row, "due_date"),
         iso(row, "returned_at"), "", ""]
        for row, cells in zip(rows, html_rows, strict=True)
    ]  # fmt: skip
    assert files["mail_csv"] == files["csv"]

    mail, user = files["mail"], files["user"]
    assert mail["Subject"] == "Your library report (all time)"
    [attachment] = mail.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content_type()) == (
        "report-all.csv",
        "text/csv",
    )
    text = mail.get_body(preferencelist=("plain",)).get_content()
    url = f"{app.config['PUBLIC_BASE_URL']}/reports/{files['id']}"
    assert f"Hello {user['username']}," in text
    assert "Your library report for all time is ready: 5 request(s)." in text
    assert f"The CSV is attached; you can also download it from {url}/download?format=csv" in text
    assert f"The full report is at {url}/download?format=html" in text
    assert f"Its status: {url}\r\n" in text


def test_a_monthly_report_holds_its_month_to_the_microsecond(built):
    def at(text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    inside = {"First": at("2025-12-01T00:00:00"), "Last": at("2025-12-31T23:59:59.999999")}
    outside = {"Before": at("2025-11-30T23:59:59.999999"), "After": at("2026-01-01T00:00:00")}
    rows = [
        {"book_name": book, "request_date": when} for book, when in {**inside, **outside}.items()
    ]
    files = built(rows, month="2025-12")
    parsed = list(csv.DictReader(io.StringIO(files["csv"].lstrip("\ufeff"), newline="")))
    assert [row["book_name"] for row in parsed] == list(inside)
    assert files["mail"]["Subject"] == "Your library report (2025-12)"
    assert [a.get_filename() for a in files["mail"].iter_attachments()] == ["report-2025-12.csv"]


@pytest.mark.parametrize(
    "first", FORMULA_STARTS, ids=["equals", "plus", "minus", "at", "tab", "cr"]
)
def test_every_csv_field_is_defused_as_a_formula(built, first):
    rows = [
        {field: f'{first}HYPERLINK("http://x","{field}")' for field in CSV_FIELDS},
        {field: f"plain {field}" for field in CSV_FIELDS},
    ]
    files = built(rows)
    for where in ("csv", "mail_csv"):
        parsed = list(csv.DictReader(io.StringIO(files[where], newline="")))
        assert len(parsed) == 2, files[where]
        for field in CSV_FIELDS:
            assert parsed[0][field] == "'" + rows[0][field], f"{field} in the {where}"
            assert parsed[1][field] == rows[1][field], f"{field} in the {where}"


@pytest.fixture
def tokyo_clock():
    """The process's local time zone is Tokyo's (UTC+9) for the test, then back."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_every_cell_of_the_library_reports_queue_and_overdue_loans(built, tokyo_clock):
    # ages and days overdue count in UTC whatever the server's own time zone: 9 hours more
    # would make each of these one day older
    now, day, hour = utcnow(), timedelta(days=1), timedelta(hours=1)
    pending = [
        {"book_name": "Emma", "request_date": now - 5 * day - hour},
        {"book_name": "Dune", "author": "Frank Herbert", "request_date": now - 2 * day + hour},
    ]
    overdue = [
        {"book_name": "Kindred", "author": "Octavia Butler", "due_date": now - 2 * day - 20 * hour},
        # overdue by an hour: one day, not none
        {"book_name": "Walden", "due_date": now - hour},
    ]
    rows = [{**row, "status": "pending"} for row in pending]
    rows += [{**row, "status": "approved", "request_date": now - 30 * day} for row in overdue]
    files = built(rows, ReportScope.LIBRARY, username="reader-one")
    every = list(csv.DictReader(io.StringIO(files["csv"].lstrip("\ufeff"), newline="")))
    # the CSV has every request of the library, each with its patron
    assert sorted((row["book_name"], row["patron"]) for row in every) == sorted(
        (row["book_name"], "reader-one") for row in rows
    )
    ids = {row["book_name"]: row["id"] for row in every}
    assert files["mail"]["Subject"] == "Library-wide report (all time)"
    # the page is all written at the end: nothing before it
    assert files["html"].startswith("<!doctype html>")
    queue, late = files["html"].split("Pending queue", 1)[1].split("Overdue loans", 1)

    def cells(part):
        rows = re.findall(r"<tr><td>\d+</td>.*?</tr>\n", part)
        # one row a line: nothing between them
        assert "".join(rows) in part
        return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]

    assert cells(queue) == [
        [ids["Emma"], "Emma", "", "reader-one", pending[0]["request_date"].strftime("%Y-%m-%d"),
         "5"],
        [ids["Dune"], "Dune", "Frank Herbert", "reader-one",
         pending[1]["request_date"].strftime("%Y-%m-%d"), "1"],
    ]  # fmt: skip
    assert cells(late.split("</table>", 1)[0]) == [
        [ids["Kindred"], "Kindred", "Octavia Butler", "reader-one",
         overdue[0]["due_date"].strftime("%Y-%m-%d"),
         '<span class="badge s-overdue">2 days overdue</span>'],
        [ids["Walden"], "Walden", "", "reader-one", overdue[1]["due_date"].strftime("%Y-%m-%d"),
         '<span class="badge s-overdue">1 day overdue</span>'],
    ]  # fmt: skip


def test_the_head_and_charts_of_a_patrons_report_count_only_their_requests(app, auth, built):
    december, november = datetime(2025, 12, 10, tzinfo=UTC), datetime(2025, 11, 3, tzinfo=UTC)
    other, _ = auth.patron()
    add_rows(app, other["id"], [{"book_name": "Theirs", "request_date": december}])
    rows = [
        {"book_name": "Emma", "request_date": november, "status": "approved"},
        {"book_name": "Dune", "request_date": december},
        {"book_name": "Walden", "request_date": december},
    ]
    files = built(rows)
    username, html = files["user"]["username"], files["html"]
    assert f"<title>Library report for {username} (all time)</title>" in html
    assert f"<h1>Library report: {username}</h1>" in html
    assert "Period: all time &middot; 3 requests &middot; generated " in html
    assert re.findall(r'<li class="s-(\w+)"><strong>(\d+)</strong>', html) == [
        ("pending", "0"), ("approved", "1"), ("rejected", "2"), ("cancelled", "0"),
        ("returned", "0"),
    ]  # fmt: skip
    bars = re.findall(r'data-month="([^"]+)" data-status="(\w+)" data-count="(\d+)"', html)
    assert sorted(bars) == [("2025-11", "approved", "1"), ("2025-12", "rejected", "2")]


def test_the_figures_of_a_months_library_report_count_only_that_month(built):
    december, june = datetime(2025, 12, 10, tzinfo=UTC), datetime(2025, 6, 10, tzinfo=UTC)
    rows = [
        {"book_name": "In", "request_date": december, "decided_at": december + timedelta(hours=2)},
        {"book_name": "Out", "request_date": june, "decided_at": june + timedelta(days=5)},
    ]
    files = built(rows, ReportScope.LIBRARY, month="2025-12")
    html = files["html"]
    assert "<title>Library-wide report (2025-12)</title>" in html
    assert f" for {files['user']['username']}</p>" in html
    assert "Period: 2025-12 &middot; 1 request &middot; generated " in html
    assert "<strong>2 h 0 min</strong>median time to a decision" in html
