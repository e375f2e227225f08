"""What a report shows: a patron's and the library's, read as their readers read them.

Reports are built by the real worker; the numbers in the HTML, its SVG charts, the CSV and
the mail are checked against the database.
"""

import csv
import io
import re
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import timedelta

from sqlalchemy import insert

from models import BookRequest, Report, ReportScope, RequestStatus, db, utcnow
from tests.servers import wait_for

SVG = "{http://www.w3.org/2000/svg}"


def add_request(app, user_id, book, status, days_ago, **values):
    """Insert one request `days_ago` days old with `status` and any other columns."""
    with app.app_context():
        db.session.execute(
            insert(BookRequest),
            [
                {
                    "user_id": user_id,
                    "book_name": book,
                    "status": status,
                    "request_date": utcnow() - timedelta(days=days_ago),
                    **values,
                }
            ],
        )
        db.session.commit()


def finished(app, client, headers, response):
    """Wait for the report the 202 `response` started; return its JSON once done."""
    assert response.status_code == 202, response.json
    location = response.headers["Location"]

    def done():
        report = client.get(location, headers=headers).json
        assert report["status"] != "failed", report["error"]
        return report if report["status"] == "done" else None

    return wait_for(done, timeout=60, interval=0.2, what="report done")


def download(client, headers, report, format):
    response = client.get(report["download_urls"][format], headers=headers)
    assert response.status_code == 200
    return response


def charts(html):
    """The report's inline SVG charts, parsed: a parse error fails the test."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S)]


def drawn_counts(chart):
    return [
        (rect.get("data-month"), rect.get("data-status"), int(rect.get("data-count")))
        for rect in chart.iter(f"{SVG}rect")
        if "data-count" in rect.attrib
    ]


def database_counts(app, *conditions):
    with app.app_context():
        rows = db.session.execute(
            db.select(BookRequest.status, BookRequest.request_date).where(*conditions)
        ).all()
    by_status = Counter(status for status, _ in rows)
    by_month = Counter((date.strftime("%Y-%m"), status) for status, date in rows)
    return by_status, by_month


def mail_to(smtp_server, address, subject_word):
    _, sink = smtp_server
    return wait_for(
        lambda: [m for m in sink.messages if m["To"] == address and subject_word in m["Subject"]],
        timeout=30,
        what=f"mail to {address}",
    )[0]


def test_patron_report_flags_overdue_loans_labels_statuses_and_draws_its_counts(
    app, client, auth, worker, smtp_server
):
    patron, headers = auth.patron()
    pid = patron["id"]
    now = utcnow()
    add_request(
        app, pid, "Dune", RequestStatus.APPROVED, 20, due_date=now - timedelta(days=5, hours=1)
    )
    add_request(app, pid, "Emma", RequestStatus.APPROVED, 2, due_date=now + timedelta(days=12))
    add_request(app, pid, "Ulysses", RequestStatus.PENDING, 1, note="<b>any</b> =1+1 edition")
    add_request(app, pid, "Beloved", RequestStatus.REJECTED, 40, reason="<i>lost</i>")
    add_request(app, pid, "Kindred", RequestStatus.CANCELLED, 70)
    add_request(app, pid, "Walden", RequestStatus.RETURNED, 70)

    report = finished(app, client, headers, client.post("/export-report", headers=headers))
    html = download(client, headers, report, "html").get_data(as_text=True)

    # the overdue loan says so, with its days; the one not yet due reads "Approved"
    assert re.search(r'<td>Dune</td>.*?class="badge s-overdue">Overdue: 5 days<', html, re.S)
    assert re.search(r'<td>Emma</td>.*?class="badge s-approved">Approved<', html, re.S)
    assert 'class="badge s-rejected">Rejected<' in html
    # the note is shown, escaped like every other user-supplied field
    assert "&lt;b&gt;any&lt;/b&gt; =1+1 edition" in html and "<b>any</b>" not in html
    assert "&lt;i&gt;lost&lt;/i&gt;" in html
    assert '<th scope="col">Request</th>' in html and "<th>#</th>" not in html
    assert "@media print" in html

    status_chart, month_chart = charts(html)
    by_status, by_month = database_counts(app, BookRequest.user_id == pid)
    assert {status: count for _, status, count in drawn_counts(status_chart)} == by_status
    assert {(month, status): count for month, status, count in drawn_counts(month_chart)} == (
        by_month
    )

    # Excel needs the byte order mark to read UTF-8; formulas stay defused
    data = download(client, headers, report, "csv").data
    assert data.startswith(b"\xef\xbb\xbfid,book_name,")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert {row["note"] for row in rows} >= {"<b>any</b> =1+1 edition"}

    mail = mail_to(smtp_server, patron["email"], "report")
    text = mail.get_body(preferencelist=("plain",)).get_content()
    base = app.config["PUBLIC_BASE_URL"]
    assert f"{base}/reports/{report['id']}/download?format=html" in text
    assert not re.search(r"(?<![\w/])/reports/", text), "every link in the mail is absolute"
    assert "Overdue: 5 days" in mail.get_body(preferencelist=("html",)).get_content()


def test_library_report_is_for_librarians_and_its_numbers_match_the_database(
    app, client, auth, worker, smtp_server
):
    librarian, admin_headers = auth.librarian()
    ada, ada_headers = auth.patron()
    bob, _ = auth.patron()
    now = utcnow()
    # decisions taken 1 h, 2 h, 4 h, 9 h and 30 h after the request: the median is 4 h
    for book, hours in (("Dune", 2), ("Dune", 4), ("Emma", 9)):
        add_request(
            app,
            ada["id"],
            book,
            RequestStatus.APPROVED,
            3,
            author="Frank Herbert" if book == "Dune" else "Jane Austen",
            decided_at=now - timedelta(days=3) + timedelta(hours=hours),
            due_date=now + timedelta(days=10),
        )
    add_request(
        app,
        bob["id"],
        "Dune",
        RequestStatus.REJECTED,
        3,
        author="Frank Herbert",
        decided_at=now - timedelta(days=3) + timedelta(hours=30),
    )
    add_request(
        app,
        bob["id"],
        "Neuromancer",
        RequestStatus.APPROVED,
        30,
        decided_at=now - timedelta(days=30) + timedelta(hours=1),
        due_date=now - timedelta(days=8),
    )
    add_request(app, bob["id"], "Old pending", RequestStatus.PENDING, 9)
    add_request(app, ada["id"], "New pending", RequestStatus.PENDING, 1)

    refused = client.post("/reports/library", headers=ada_headers)
    assert refused.status_code == 403 and refused.json["code"] == 403

    response = client.post("/reports/library", headers=admin_headers)
    report = finished(app, client, admin_headers, response)
    assert report["scope"] == "library"
    html = download(client, admin_headers, report, "html").get_data(as_text=True)

    # approved or returned, of decided: 4 of 5 decided requests are loans
    decided = re.search(r"<strong>(\d+)%</strong>approval rate", html)
    assert decided and decided.group(1) == "80"
    assert "<strong>4 h 0 min</strong>median time to a decision" in html
    # most requested titles and authors, busiest first
    titles = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td></tr>", html)
    assert titles[:2] == [("Dune", "3"), ("Emma", "1")]
    assert ("Frank Herbert", "3") in titles and ("Jane Austen", "1") in titles
    # the pending queue, oldest first, with each request's age and patron
    queue = html.split("Pending queue", 1)[1].split("Overdue loans", 1)[0]
    assert queue.index("Old pending") < queue.index("New pending")
    assert re.search(
        rf"Old pending</td><td></td><td>{bob['username']}</td><td>[\d-]+</td>"
        r"<td class=\"num\">9</td>",
        queue,
    )
    overdue = html.split("Overdue loans", 1)[1]
    assert "Neuromancer" in overdue and bob["username"] in overdue and "8 days overdue" in overdue

    by_status, by_month = database_counts(app)
    status_chart, month_chart = charts(html)
    assert {status: count for _, status, count in drawn_counts(status_chart)} == by_status
    assert {(m, s): c for m, s, c in drawn_counts(month_chart)} == by_month

    rows = list(csv.DictReader(io.StringIO(download(client, admin_headers, report, "csv").text)))
    assert len(rows) == sum(by_status.values()) == report["row_count"]
    assert Counter(row["patron"] for row in rows) == {ada["username"]: 4, bob["username"]: 3}

    mail = mail_to(smtp_server, librarian["email"], "Library-wide report")
    assert "Neuromancer" in mail.get_body(preferencelist=("html",)).get_content()


def test_library_report_of_one_month_counts_only_that_month(app, client, auth, worker):
    _, admin_headers = auth.librarian()
    patron, _ = auth.patron()
    add_request(app, patron["id"], "Now", RequestStatus.PENDING, 0)
    add_request(app, patron["id"], "Long ago", RequestStatus.PENDING, 400)
    month = utcnow().strftime("%Y-%m")
    response = client.post("/reports/library", headers=admin_headers, json={"month": month})
    report = finished(app, client, admin_headers, response)
    assert report["month"] == month and report["row_count"] == 1
    html = download(client, admin_headers, report, "html").get_data(as_text=True)
    assert f"Period: {month}" in html
    # the queue is the library's now, whatever the period
    assert "Long ago" in html.split("Pending queue", 1)[1]


def test_a_librarian_has_one_library_report_in_progress_at_a_time(app, client, auth):
    librarian, admin_headers = auth.librarian()
    with app.app_context():
        running = Report(
            user_id=librarian["id"],
            scope=ReportScope.LIBRARY,
            status="running",
            task_id="elsewhere",
            heartbeat_at=utcnow(),
        )
        db.session.add(running)
        db.session.commit()
        running_id = running.id
    response = client.post("/reports/library", headers=admin_headers)
    assert response.status_code == 409
    assert response.json["report_id"] == running_id


def test_bad_library_report_input_is_refused_and_changes_nothing(app, client, auth):
    _, admin_headers = auth.librarian()
    for body in ({"month": "2026-13"}, {"month": "soon"}, {"scope": "patron"}):
        response = client.post("/reports/library", headers=admin_headers, json=body)
        assert response.status_code == 422, body
    assert client.post("/reports/library").status_code == 401
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Report)) == 0


def test_monthly_job_starts_the_library_report_for_each_librarian(app, auth):
    import monthly_reports

    librarian, _ = auth.librarian()
    patron, _ = auth.patron()
    now = utcnow()
    last_month = monthly_reports.previous_month(now)
    add_request(app, patron["id"], "Dune", RequestStatus.PENDING, now.day + 3)
    with app.app_context():
        started = monthly_reports.start_monthly_reports(last_month)
        made = {(report.user_id, report.scope, report.month) for report in started}
        again = monthly_reports.start_monthly_reports(last_month)
    assert made == {
        (librarian["id"], ReportScope.LIBRARY, last_month),
        (patron["id"], ReportScope.PATRON, last_month),
    }
    assert again == [], "a month's reports are made once"


def test_median_time_to_decision_of_an_even_count_is_the_mean_of_the_middle_two(app, auth):
    from library_report import median_decision_seconds

    patron, _ = auth.patron()
    now = utcnow()
    for hours in (1, 2, 4, 10):
        add_request(
            app,
            patron["id"],
            "Dune",
            RequestStatus.REJECTED,
            2,
            decided_at=now - timedelta(days=2) + timedelta(hours=hours),
        )
    add_request(app, patron["id"], "Undecided", RequestStatus.PENDING, 2)
    with app.app_context():
        median = median_decision_seconds(BookRequest.user_id == patron["id"])
    assert abs(median - 3 * 3600) < 1


def test_production_start_warns_when_mail_links_would_point_at_localhost(app, monkeypatch, caplog):
    from config import DEV_PUBLIC_BASE_URL
    from start_checks import warn_dev_public_url

    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", DEV_PUBLIC_BASE_URL)
    warn_dev_public_url(app)
    assert "PUBLIC_BASE_URL is not set" in caplog.text
    caplog.clear()
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", "https://library.example.org")
    warn_dev_public_url(app)
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", DEV_PUBLIC_BASE_URL)
    warn_dev_public_url(app)
    assert "PUBLIC_BASE_URL" not in caplog.text
