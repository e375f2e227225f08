"""Report exports end to end: a real worker, a real Redis, a real SMTP server, real HTTP."""

import csv
import io
import os
import re
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import requests
from sqlalchemy import func, insert, select, text

from login_sessions import LoginSession
from models import (
    BookRequest,
    Report,
    ReportChunk,
    ReportStatus,
    RequestStatus,
    User,
    db,
    utcnow,
)
from report_builder import BUILD_FAILED
from tests.servers import free_port, pool_processes, start_smtp, start_worker, wait_for


def add_requests(app, user_id, count, book_name="Book", **values):
    now = utcnow()
    rows = [
        {
            "user_id": user_id,
            "book_name": f"{book_name} {n}",
            "author": "Author",
            "status": RequestStatus.PENDING,
            "request_date": now,
            **values,
        }
        for n in range(count)
    ]
    with app.app_context():
        for start in range(0, count, 5000):
            db.session.execute(insert(BookRequest), rows[start : start + 5000])
        db.session.commit()


def report_row(app, report_id):
    with app.app_context():
        report = db.session.get(Report, report_id)
        db.session.expunge(report)
        return report


def wait_for_report(app, report_id, status=ReportStatus.DONE, timeout=60):
    def reached():
        report = report_row(app, report_id)
        if report.status == ReportStatus.FAILED and status != ReportStatus.FAILED:
            raise AssertionError(f"report failed: {report.error}")
        return report if report.status == status else None

    return wait_for(reached, timeout=timeout, interval=0.2, what=f"report {status}")


def wait_for_task(worker, task_id, timeout=60):
    """Wait until the worker logs the task as finished; return the worker's log."""

    def finished():
        log = worker.log()
        return log if f"[{task_id}] succeeded" in log else None

    return wait_for(finished, timeout=timeout, interval=0.1, what=f"task {task_id}")


def mails_to(smtp_server, address):
    _, sink = smtp_server
    return [m for m in sink.messages if m["To"] == address]


def run_sweeper_until(app, report_id, status=ReportStatus.DONE, timeout=90):
    """Fire the sweeper through the worker, as beat would, until the report reaches `status`."""
    from tasks import requeue_stale_reports

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if report_row(app, report_id).status == status:
            return report_row(app, report_id)
        try:
            requeue_stale_reports.delay()
        except Exception:
            pass  # the broker may still be coming back
        time.sleep(1.5)
    raise AssertionError(f"report {report_id} is {report_row(app, report_id).status}")


def test_export_over_http_builds_downloads_and_mails(live_server, workers, smtp_server, app):
    workers.ensure()
    http = requests.Session()
    base = live_server.url
    # an address of its own: the SMTP server outlives the database run, mail and all
    name = f"reader.{uuid.uuid4().hex[:8]}"
    user = {"username": name, "email": f"{name}@example.org", "password": "password123"}
    assert http.post(f"{base}/register", json=user).status_code == 201
    # the worker mails the verification link; opening it verifies the address
    verification = wait_for(
        lambda: [m for m in mails_to(smtp_server, user["email"]) if "Confirm" in m["Subject"]],
        what="verification mail",
    )[0]
    link = re.search(r"(http\S+/verify-email\?token=\S+)", verification.get_content()).group(1)
    path = link.split("/verify-email", 1)[1]
    assert http.get(f"{base}/verify-email{path}").status_code == 200
    login = {"username": user["username"], "password": user["password"]}
    token = http.post(f"{base}/login", json=login).json()["access_token"]
    http.headers["Authorization"] = f"Bearer {token}"
    for book in ["Dune", "<script>alert(1)</script>", '=HYPERLINK("http://x")']:
        assert http.post(f"{base}/request-book", json={"book_name": book}).status_code == 201

    response = http.post(f"{base}/export-report")
    assert response.status_code == 202
    report = response.json()
    assert response.headers["Location"] == f"/reports/{report['id']}"
    assert report["status"] == "queued"
    assert len(report["id"]) == 36 and report["download_urls"] == {}

    status_url = base + report["status_url"]
    done = wait_for(
        lambda: (body := http.get(status_url).json())["status"] == "done" and body,
        timeout=60,
        interval=0.2,
        what="report done",
    )
    assert done["row_count"] == 3 and done["progress"] == 1.0
    assert done["started_at"] and done["finished_at"]

    html = http.get(base + done["download_urls"]["html"])
    assert html.status_code == 200
    assert html.headers["Content-Type"].startswith("text/html")
    assert html.headers["Content-Disposition"].startswith("attachment")
    assert "Dune" in html.text and name in html.text
    assert "<script>alert(1)</script>" not in html.text
    assert "&lt;script&gt;" in html.text

    csv_response = http.get(base + done["download_urls"]["csv"])
    assert csv_response.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(csv_response.text)))
    assert [row["book_name"] for row in rows] == [
        "Dune",
        "<script>alert(1)</script>",
        '\'=HYPERLINK("http://x")',
    ]

    mail = wait_for(
        lambda: [m for m in mails_to(smtp_server, user["email"]) if "report" in m["Subject"]],
        what="report mail",
    )[0]
    assert "report" in mail["Subject"].lower()
    html_part = mail.get_body(preferencelist=("html",))
    assert "Dune" in html_part.get_content()
    attachments = list(mail.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["report-all.csv"]
    # the byte order mark tells Excel the CSV is UTF-8
    assert attachments[0].get_content().replace("\r\n", "\n").startswith("\ufeffid,book_name")
    assert report_row(app, report["id"]).emailed_at is not None


def test_twenty_concurrent_exports_give_exactly_one_202(live_server, app, workers):
    workers.kill()  # so the first report stays queued while the others race it
    base = live_server.url
    user = {"username": "racer", "email": "racer@example.org", "password": "password123"}
    requests.post(f"{base}/register", json=user)
    login = {"username": user["username"], "password": user["password"]}
    token = requests.post(f"{base}/login", json=login).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def export(_):
        return requests.post(f"{base}/export-report", headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(export, range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] + [409] * 19
    winner = next(r for r in responses if r.status_code == 202).json()["id"]
    assert {r.json()["report_id"] for r in responses if r.status_code == 409} == {winner}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Report)) == 1


def test_export_month_filters_and_validates(client, app, auth, workers):
    workers.ensure()
    user, headers = auth.patron()
    add_requests(app, user["id"], 2, book_name="October", request_date=datetime(2026, 10, 5, 12, 0))
    add_requests(
        app, user["id"], 1, book_name="November", request_date=datetime(2026, 11, 5, 12, 0)
    )
    for bad in ["2026-13", "26-10", "October", "2026-1"]:
        response = client.get(f"/export-report?month={bad}", headers=headers)
        assert response.status_code == 422, bad
    assert client.post("/export-report", json={"month": "x"}, headers=headers).status_code == 422
    assert client.post("/export-report", json={"extra": 1}, headers=headers).status_code == 422
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Report)) == 0

    response = client.post("/export-report", json={"month": "2026-10"}, headers=headers)
    assert response.status_code == 202
    report = wait_for_report(app, response.json["id"])
    assert (report.month, report.row_count) == ("2026-10", 2)
    csv_text = client.get(f"/reports/{report.id}/download?format=csv", headers=headers).get_data(
        as_text=True
    )
    assert "October 0" in csv_text and "November" not in csv_text


def test_second_export_while_one_is_active_is_409_naming_it(client, app, auth):
    user, headers = auth.patron()
    with app.app_context():
        active = Report(user_id=user["id"], status=ReportStatus.RUNNING)
        db.session.add(active)
        db.session.commit()
        active_id = active.id
    response = client.get("/export-report", headers=headers)
    assert response.status_code == 409
    assert response.json["report_id"] == active_id
    download = client.get(f"/reports/{active_id}/download?format=html", headers=headers)
    assert download.status_code == 409
    assert (
        client.get(f"/reports/{active_id}/download?format=pdf", headers=headers).status_code == 422
    )


def test_reports_list_is_own_newest_first_and_librarian_sees_all(client, app, auth):
    alice, alice_headers = auth.patron()
    bob, _ = auth.patron()
    with app.app_context():
        for user_id, age in [(alice["id"], 2), (alice["id"], 1), (bob["id"], 0)]:
            db.session.add(
                Report(
                    user_id=user_id,
                    status=ReportStatus.DONE,
                    created_at=utcnow() - timedelta(minutes=age),
                )
            )
        db.session.commit()
    page = client.get("/reports", headers=alice_headers).json
    assert page["total"] == 2
    created = [item["created_at"] for item in page["items"]]
    assert created == sorted(created, reverse=True)
    _, librarian = auth.librarian()
    assert client.get("/reports", headers=librarian).json["total"] == 3
    assert client.get("/reports/not-a-report", headers=alice_headers).status_code == 404


def test_duplicate_delivery_builds_one_report(client, app, auth, workers, smtp_server):
    workers.ensure()
    user, headers = auth.patron()
    add_requests(app, user["id"], 3000)
    report_id = client.post("/export-report", headers=headers).json["id"]
    from tasks import generate_user_report

    # the same message delivered twice more, as a broker redelivery would
    duplicates = [generate_user_report.apply_async(args=[report_id]) for _ in range(2)]
    wait_for_report(app, report_id)
    # the worker has run both duplicates to the end, so whatever they did is done
    for duplicate in duplicates:
        wait_for_task(workers.current, duplicate.id)
    report = report_row(app, report_id)
    assert report.attempts == 1 and report.row_count == 3000
    with app.app_context():
        formats = db.session.execute(
            select(ReportChunk.format, func.count())
            .where(ReportChunk.report_id == report_id)
            .group_by(ReportChunk.format)
        ).all()
    csv_rows = client.get(f"/reports/{report_id}/download?format=csv", headers=headers)
    assert csv_rows.get_data(as_text=True).count("\n") == 3001
    assert dict(formats)["csv"] >= 1
    report_mails = [m for m in mails_to(smtp_server, user["email"]) if "report" in m["Subject"]]
    assert len(report_mails) == 1


def export_half_built_report(client, app, auth, rows=150_000):
    """Export a large report and return once the worker is partway through building it."""
    user, headers = auth.patron()
    add_requests(app, user["id"], rows)
    report_id = client.post("/export-report", headers=headers).json["id"]

    def building():
        report = report_row(app, report_id)
        return report.status == ReportStatus.RUNNING and 0 < report.progress < 0.7

    wait_for(building, timeout=60, interval=0.02, what="report half built")
    return user, headers, report_id


def test_worker_killed_mid_report_and_the_report_still_completes(client, app, auth, workers):
    workers.ensure()
    user, headers, report_id = export_half_built_report(client, app, auth)
    workers.kill()  # SIGKILL to the worker and its pool processes
    assert report_row(app, report_id).status == ReportStatus.RUNNING

    workers.ensure()
    report = run_sweeper_until(app, report_id)
    assert report.row_count == 150_000 and report.attempts == 2
    body = client.get(f"/reports/{report_id}/download?format=csv", headers=headers)
    assert body.get_data(as_text=True).count("\n") == 150_001


def test_redis_down_at_export_time_and_the_report_completes_later(
    client, app, auth, workers, redis_server, caplog
):
    workers.ensure()
    user, headers = auth.patron()
    add_requests(app, user["id"], 10)
    redis_server.stop()
    try:
        # how long the export takes with the broker down is measured by bench/run.py
        response = client.post("/export-report", headers=headers)
        assert response.status_code == 202
        # logins still work (rate limits fall back to memory), and nothing logs a traceback
        assert auth.login(user)["access_token"]
        assert not [r for r in caplog.records if r.exc_info], caplog.text
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json["broker"] == "down" and health.json["database"] == "ok"
        assert "broker" in health.json["message"]
    finally:
        redis_server.start()  # empty: whatever was queued before is gone
    report_id = response.json["id"]
    assert report_row(app, report_id).status == ReportStatus.QUEUED
    report = run_sweeper_until(app, report_id)
    assert report.row_count == 10
    assert client.get("/health").status_code == 200


def test_failed_report_shows_a_plain_error_and_user_can_export_again(client, app, auth, workers):
    worker = workers.ensure()
    user, headers = auth.patron()
    with app.app_context():
        # a month no calendar has: the build raises and must not be retried forever
        broken = Report(user_id=user["id"], month="2026-13")
        db.session.add(broken)
        db.session.commit()
        broken_id = broken.id
    from tasks import generate_user_report

    generate_user_report.delay(broken_id)
    report = wait_for_report(app, broken_id, status=ReportStatus.FAILED)
    # the patron reads a plain sentence; the exception is in the worker's log only
    assert report.error == BUILD_FAILED
    assert client.get(f"/reports/{broken_id}", headers=headers).json["error"] == BUILD_FAILED
    wait_for(lambda: "ValueError" in worker.log(), what="the exception in the worker's log")
    assert client.post("/export-report", headers=headers).status_code == 202


def test_mail_server_down_is_retried_until_it_answers(
    app, auth, client, service_env, workers, tmp_path
):
    workers.kill()
    controller_port = free_port()
    # a worker whose SMTP server is not there yet
    env = {**service_env, "MAIL_PORT": str(controller_port)}
    lonely = start_worker(env, tmp_path / "worker.log")
    try:
        user, headers = auth.patron()
        report_id = client.post("/export-report", headers=headers).json["id"]
        wait_for_report(app, report_id)  # built and downloadable while the mail waits
        wait_for(lambda: "mail not sent, retrying" in lonely.log(), what="mail retry")
        assert report_row(app, report_id).status == ReportStatus.DONE
        controller, sink = start_smtp(port=controller_port)
        try:
            wait_for(lambda: sink.messages, timeout=30, what="retried mail")
            assert sink.messages[0]["To"] == user["email"]
            wait_for(lambda: report_row(app, report_id).emailed_at, what="emailed_at")
        finally:
            controller.stop()
    finally:
        lonely.kill()


def test_beat_jobs_run_through_the_worker(app, auth, client, workers, smtp_server):
    workers.ensure()
    from tasks import purge_expired_sessions, send_monthly_reports, send_overdue_reminders

    active, _ = auth.patron()
    idle, _ = auth.patron()
    add_requests(app, active["id"], 2, request_date=datetime(2026, 9, 10))
    overdue_due = utcnow() - timedelta(days=3)
    add_requests(
        app,
        active["id"],
        1,
        book_name="Overdue",
        status=RequestStatus.APPROVED,
        due_date=overdue_due,
        decided_at=overdue_due - timedelta(days=14),
    )
    with app.app_context():
        db.session.add_all(
            [
                LoginSession(
                    id=sid,
                    user_id=active["id"],
                    refresh_jti=sid,
                    expires_at=utcnow() + timedelta(hours=hours),
                )
                for sid, hours in (("old", -1), ("live", 1))
            ]
        )
        db.session.commit()

    send_monthly_reports.delay("2026-09")
    report = wait_for(
        lambda: report_row_for(app, active["id"], "2026-09"), timeout=30, what="monthly report"
    )
    report = wait_for_report(app, report.id)
    assert report.row_count == 2
    with app.app_context():
        assert db.session.scalar(select(Report).where(Report.user_id == idle["id"])) is None

    send_overdue_reminders.delay()
    reminder = wait_for(
        lambda: [m for m in mails_to(smtp_server, active["email"]) if "overdue" in m["Subject"]],
        timeout=30,
        what="overdue reminder",
    )[0]
    assert "Overdue 0" in reminder.get_content()

    def reminded_at():
        # the task commits reminded_at after sending: the mail arriving does not mean it is set
        with app.app_context():
            return db.session.scalar(
                select(BookRequest.reminded_at).where(BookRequest.book_name == "Overdue 0")
            )

    wait_for(reminded_at, timeout=30, what="reminded_at set")

    purge_expired_sessions.delay()
    with app.app_context():
        wait_for(
            lambda: (
                "old" not in db.session.scalars(select(LoginSession.id)).all()
                or db.session.rollback()
            ),
            timeout=30,
            what="purge",
        )
        assert db.session.get(User, active["id"]) is not None
        # only the expired one: a session whose refresh token still runs stays signed in
        assert db.session.get(LoginSession, "live") is not None


def report_row_for(app, user_id, month):
    with app.app_context():
        report = db.session.scalar(
            select(Report).where(Report.user_id == user_id, Report.month == month)
        )
        if report is not None:
            db.session.expunge(report)
        return report


def test_exports_are_rate_limited_per_user(client, app, auth, workers, monkeypatch):
    workers.kill()  # the first export stays queued, so the second meets the 409
    _, headers = auth.patron()
    _, other_headers = auth.patron()
    monkeypatch.setitem(app.config, "EXPORT_RATE_LIMIT", "2 per minute")
    statuses = [client.post("/export-report", headers=headers).status_code for _ in range(3)]
    other = client.post("/export-report", headers=other_headers).status_code
    assert statuses == [202, 409, 429]
    assert other == 202  # the limit is per user, not global


def test_database_connection_lost_mid_build_is_retried(client, app, auth, workers):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("cutting the worker's database connection needs PostgreSQL")
    workers.ensure()
    user, headers = auth.patron()
    add_requests(app, user["id"], 150_000)
    report_id = client.post("/export-report", headers=headers).json["id"]
    wait_for(
        lambda: report_row(app, report_id).progress > 0,
        timeout=60,
        interval=0.02,
        what="report building",
    )
    with app.app_context():
        # what a database restart or a network blip does to the worker's connection
        db.session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        db.session.commit()
        db.engine.dispose()
    report = wait_for_report(app, report_id, timeout=90)
    assert report.row_count == 150_000
    assert report.attempts >= 2


def test_report_out_of_attempts_fails_but_a_live_build_is_left_alone(client, app, auth, workers):
    workers.ensure()
    tired, tired_headers = auth.patron()
    busy, _ = auth.patron()
    with app.app_context():
        exhausted = Report(user_id=tired["id"], status=ReportStatus.QUEUED, attempts=5)
        running = Report(
            user_id=busy["id"], status=ReportStatus.RUNNING, attempts=5, heartbeat_at=utcnow()
        )
        db.session.add_all([exhausted, running])
        db.session.commit()
        exhausted_id, running_id = exhausted.id, running.id
    from tasks import generate_user_report

    generate_user_report.delay(exhausted_id)
    delivery = generate_user_report.delay(running_id)
    report = wait_for_report(app, exhausted_id, status=ReportStatus.FAILED)
    assert report.error == "gave up after 5 attempts"
    # the delivery of the live build has run to the end, and said why it did nothing
    log = wait_for_task(workers.current, delivery.id)
    assert f"report {running_id} is running elsewhere, skipping" in log
    assert report_row(app, running_id).status == ReportStatus.RUNNING
    assert client.get("/export-report", headers=tired_headers).status_code == 202


def test_pool_process_killed_mid_report_is_redelivered_at_once(client, app, auth, workers):
    worker = workers.ensure()
    user, headers, report_id = export_half_built_report(client, app, auth)
    # only the pool process dies; the worker's main process hands the message out again
    for pid in pool_processes(worker):
        os.kill(pid, signal.SIGKILL)
    # no sweeper here: the redelivered message itself takes the dead build over
    report = wait_for_report(app, report_id, timeout=60)
    assert report.row_count == 150_000 and report.attempts == 2


def test_an_unverified_address_gets_no_report_mail_and_me_says_why(
    client, app, auth, workers, smtp_server
):
    """Anyone may type someone else's address: until verified it gets verification mail only."""
    workers.ensure()
    # an address of its own: the SMTP server outlives the database run, mail and all
    user = auth.register(email=f"ceo.{uuid.uuid4().hex[:8]}@victim-corp.example", verified=False)
    headers = auth.headers(user)
    client.post("/requests", json={"book_name": "Click http://phish.example"}, headers=headers)
    report = wait_for_report(app, client.post("/export-report", headers=headers).json["id"])
    # the report builds and downloads as usual
    assert report.row_count == 1
    download = client.get(f"/reports/{report.id}/download?format=csv", headers=headers)
    assert download.status_code == 200 and "phish" in download.get_data(as_text=True)
    me = client.get("/me", headers=headers).json
    assert me["email_verified"] is False
    assert "not mailed until you verify" in me["mail_paused"]
    # the worker decided not to mail the report, and sent the verification mail only
    wait_for(
        lambda: f"report {report.id} not mailed" in workers.current.log(), what="mail decision"
    )
    wait_for(lambda: mails_to(smtp_server, user["email"]), what="verification mail")
    assert report_row(app, report.id).emailed_at is None
    subjects = [m["Subject"] for m in mails_to(smtp_server, user["email"])]
    assert subjects == ["Confirm your email address for the library"]
