"""A report's own row through a build and its mail: what finishing records, that a build
touches no other report, that a report is mailed once, that many small chunks come back
whole and in order, and that the monthly job makes a month's reports once."""

import csv
import io
import re
from datetime import datetime

import pytest
from sqlalchemy import func, insert, select, text, update

from models import UTC, BookRequest, Report, ReportChunk, ReportScope, ReportStatus, db, utcnow
from monthly_reports import previous_month, start_monthly_reports
from report_builder import BUILD_FAILED, ROWS_PER_PAGE, Retry, build_once, mail_once
from tests.factories import start_report
from tests.servers import free_port

# these builds run in process: a worker's sweep would publish and take them first
pytestmark = pytest.mark.usefixtures("no_worker")


def export_with_rows(app, auth, client, rows):
    user, headers = auth.patron()
    with app.app_context():
        now = utcnow()
        db.session.execute(
            insert(BookRequest),
            [
                {"user_id": user["id"], "book_name": f"Book {n:03d}", "request_date": now}
                for n in range(rows)
            ],
        )
        db.session.commit()
    report_id = start_report(app, user["id"])
    return user, headers, report_id


def logged(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "report_builder"]


def row_of(app, report_id):
    with app.app_context():
        report = db.session.get(Report, report_id)
        db.session.expunge(report)
        return report


def test_a_finished_build_records_its_figures_and_touches_no_other_report(
    app, auth, client, caplog
):
    bystander, _ = auth.patron()
    with app.app_context():
        other = Report(user_id=bystander["id"], status=ReportStatus.QUEUED)
        db.session.add(other)
        db.session.commit()
        other_id = other.id
    before = row_of(app, other_id)
    _, _, report_id = export_with_rows(app, auth, client, 3)
    with app.app_context():
        report = db.session.get(Report, report_id)
        with caplog.at_level("INFO", logger="report_builder"):
            assert build_once(report, "state-test")
        mail_once(report)
    assert f"report {report_id} done: 3 rows" in logged(caplog)
    report = row_of(app, report_id)
    assert report.status == ReportStatus.DONE and report.row_count == 3
    assert report.progress == 1.0 and report.error is None
    assert report.finished_at is not None and report.emailed_at is not None
    assert report.finished_at >= report.started_at
    after = row_of(app, other_id)
    assert (after.status, after.task_id, after.attempts, after.progress, after.emailed_at) == (
        before.status, before.task_id, before.attempts, before.progress, before.emailed_at,
    )  # fmt: skip


def test_a_report_is_mailed_once_however_often_its_mail_is_sent(app, auth, client, smtp_server):
    user, _, report_id = export_with_rows(app, auth, client, 1)
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert build_once(report, "state-test")
        for _ in range(3):
            mail_once(report)
        emailed_at = db.session.scalar(select(Report.emailed_at).where(Report.id == report_id))
    _, sink = smtp_server
    assert len([m for m in sink.messages if m["To"] == user["email"]]) == 1
    assert emailed_at is not None


def test_many_small_chunks_come_back_whole_and_in_order(app, auth, client, monkeypatch):
    # a few hundred bytes a chunk: every write becomes a chunk of its own
    monkeypatch.setitem(app.config, "REPORT_CHUNK_BYTES", 300)
    _, headers, report_id = export_with_rows(app, auth, client, 120)
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert build_once(report, "state-test")
        chunks = db.session.scalar(
            select(func.count()).select_from(ReportChunk).where(ReportChunk.report_id == report_id)
        )
    assert chunks >= 4  # the head, the rows and the tail of each file are separate chunks
    download = client.get(f"/reports/{report_id}/download?format=csv", headers=headers)
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True), newline="")))
    assert [row["book_name"] for row in rows] == [f"Book {n:03d}" for n in range(120)]
    html = client.get(f"/reports/{report_id}/download?format=html", headers=headers)
    text = html.get_data(as_text=True)
    assert text.rstrip().endswith("</html>") and text.count("<tr><td>") == 120


def test_a_report_longer_than_a_page_has_every_row(app, auth, client, monkeypatch):
    # each page is read after the last id of the one before
    count = ROWS_PER_PAGE + 1
    _, headers, report_id = export_with_rows(app, auth, client, count)
    progress = []
    record_progress = Report.record_progress

    def recorded(report, value, *args):
        progress.append(value)
        return record_progress(report, value, *args)

    monkeypatch.setattr(Report, "record_progress", recorded)
    with app.app_context():
        assert build_once(db.session.get(Report, report_id), "state-test")
    # the share of rows written, page after page, as a patron polling the report sees it
    assert progress[:2] == [ROWS_PER_PAGE / count, 1.0]
    download = client.get(f"/reports/{report_id}/download?format=csv", headers=headers)
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True), newline="")))
    assert [row["book_name"] for row in rows] == [f"Book {n:03d}" for n in range(count)]
    html = client.get(f"/reports/{report_id}/download?format=html", headers=headers)
    assert html.get_data(as_text=True).count("<tr><td>") == count


def test_a_redelivered_message_takes_back_its_own_build_and_a_done_report_is_not_built_again(
    app, auth, client
):
    _, _, report_id = export_with_rows(app, auth, client, 2)
    with app.app_context():
        report = db.session.get(Report, report_id)
        # the worker running the message died mid-build: the report still runs under it,
        # its heartbeat fresh, and the broker hands the message out again
        assert report.claim("task-a")
        assert build_once(report, "task-a", redelivered=True)
    done = row_of(app, report_id)
    assert (done.status, done.task_id, done.attempts, done.row_count) == (
        ReportStatus.DONE, "task-a", 2, 2,
    )  # fmt: skip
    with app.app_context():
        # once more after it finished: nothing to build, and the mail may go
        assert build_once(db.session.get(Report, report_id), "task-a", redelivered=True)
    assert row_of(app, report_id).attempts == 2


def test_a_delivery_that_cannot_claim_its_report_builds_nothing_and_says_why(
    app, auth, client, caplog
):
    _, _, running_id = export_with_rows(app, auth, client, 1)
    user, _ = auth.patron()
    limit = app.config["REPORT_MAX_ATTEMPTS"]
    spent_id = start_report(app, user["id"], attempts=limit)
    with app.app_context(), caplog.at_level("INFO", logger="report_builder"):
        running = db.session.get(Report, running_id)
        assert running.claim("task-a")
        # another message of a live build: it leaves the report to it
        assert build_once(running, "task-b") is False
        # out of attempts: the report fails for good
        assert build_once(db.session.get(Report, spent_id), "task-c") is False
    assert logged(caplog) == [
        f"report {running_id} is running elsewhere, skipping",
        f"report {spent_id} failed: gave up after {limit} attempts",
    ]
    running = row_of(app, running_id)
    assert (running.status, running.task_id, running.attempts) == (
        ReportStatus.RUNNING,
        "task-a",
        1,
    )
    spent = row_of(app, spent_id)
    assert (spent.status, spent.error) == (ReportStatus.FAILED, f"gave up after {limit} attempts")


# another delivery takes the report over right after the build's first progress write, as
# a sweep does when the build stalls: the database plays that delivery's claim
TAKE_OVER = {
    "sqlite": [
        """CREATE TRIGGER take_over AFTER UPDATE OF heartbeat_at ON report
        WHEN OLD.status = 'running' AND NEW.task_id = 'slow-build'
        BEGIN
            UPDATE report SET task_id = 'other-delivery', attempts = attempts + 1
            WHERE id = NEW.id;
        END""",
    ],
    "postgresql": [
        """CREATE FUNCTION take_over() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE report SET task_id = 'other-delivery', attempts = attempts + 1
            WHERE id = NEW.id;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER take_over AFTER UPDATE OF heartbeat_at ON report FOR EACH ROW
        WHEN (OLD.status = 'running' AND NEW.task_id = 'slow-build')
        EXECUTE FUNCTION take_over()""",
    ],
}
FORGET_TAKE_OVER = {
    "sqlite": ["DROP TRIGGER take_over"],
    "postgresql": ["DROP TRIGGER take_over ON report", "DROP FUNCTION take_over()"],
}


def run_sql(statements):
    for statement in statements[db.engine.dialect.name]:
        db.session.execute(text(statement))
    db.session.commit()


def test_a_build_taken_over_stops_quietly_and_is_not_mailed(app, auth, client, caplog):
    _, _, report_id = export_with_rows(app, auth, client, 2)
    with app.app_context():
        run_sql(TAKE_OVER)
        try:
            with caplog.at_level("INFO", logger="report_builder"):
                # False: the task must not mail a report that another build is making
                assert build_once(db.session.get(Report, report_id), "slow-build") is False
        finally:
            run_sql(FORGET_TAKE_OVER)
    assert logged(caplog) == [f"report {report_id} was taken over by another build; this one stops"]
    row = row_of(app, report_id)
    assert (row.status, row.task_id, row.attempts) == (ReportStatus.RUNNING, "other-delivery", 2)
    assert row.error is None and row.emailed_at is None


def test_a_build_that_fails_shows_a_plain_message_and_logs_the_error(app, auth, caplog):
    user, _ = auth.patron()
    # a month that does not exist: the build raises before it reads a row
    report_id = start_report(app, user["id"], month="2025-13")
    with app.app_context(), caplog.at_level("INFO", logger="report_builder"):
        assert build_once(db.session.get(Report, report_id), "state-test") is False
    [record] = [r for r in caplog.records if r.name == "report_builder"]
    assert record.getMessage() == f"report {report_id} failed"
    assert record.levelname == "ERROR" and isinstance(record.exc_info[1], ValueError)
    failed = row_of(app, report_id)
    assert (failed.status, failed.error) == (ReportStatus.FAILED, BUILD_FAILED)


def test_a_library_reports_long_pending_queue_is_stored_as_it_fills(app, auth, client, monkeypatch):
    # a few hundred bytes a chunk: the pending queue, written at the end, fills many
    monkeypatch.setitem(app.config, "REPORT_CHUNK_BYTES", 300)
    patron, _ = auth.patron()
    librarian, headers = auth.librarian()
    with app.app_context():
        db.session.execute(
            insert(BookRequest),
            [
                {"user_id": patron["id"], "book_name": f"Book {n:03d}", "status": "pending"}
                for n in range(40)
            ],
        )
        db.session.commit()
    report_id = start_report(app, librarian["id"], scope=ReportScope.LIBRARY)
    with app.app_context():
        assert build_once(db.session.get(Report, report_id), "state-test")
    html = client.get(f"/reports/{report_id}/download?format=html", headers=headers)
    text = html.get_data(as_text=True)
    queued = re.findall(r"<tr><td>\d+</td><td>(Book \d+)</td>", text)
    assert queued == [f"Book {n:03d}" for n in range(40)] and text.rstrip().endswith("</html>")


def test_a_months_reports_are_made_once_even_after_they_finish(app, auth):
    librarian, _ = auth.librarian()
    patron, _ = auth.patron()
    idle, _ = auth.patron()
    with app.app_context():
        december = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
        db.session.execute(
            insert(BookRequest),
            [
                {"user_id": patron["id"], "book_name": "Dune", "request_date": december},
                # the next month's request makes no report for December
                {
                    "user_id": idle["id"],
                    "book_name": "Emma",
                    "request_date": datetime(2026, 1, 1, tzinfo=UTC),
                },
            ],
        )
        db.session.commit()
        assert previous_month(datetime(2026, 1, 15, tzinfo=UTC)) == "2025-12"
        started = start_monthly_reports("2025-12")
        assert {(r.user_id, r.scope, r.month) for r in started} == {
            (librarian["id"], ReportScope.LIBRARY, "2025-12"),
            (patron["id"], ReportScope.PATRON, "2025-12"),
        }
        # finished, they no longer hold the one active report per user
        db.session.execute(update(Report).values(status=ReportStatus.DONE))
        db.session.commit()
        assert start_monthly_reports("2025-12") == []
        # another month is another report
        assert {r.user_id for r in start_monthly_reports("2026-01")} == {
            librarian["id"],
            idle["id"],
        }


def test_a_months_report_is_made_for_each_user_whatever_their_other_reports(app, auth, caplog):
    librarian, _ = auth.librarian()
    patron, _ = auth.patron()
    # exported December while it ran: that partial report is not the month's
    early, _ = auth.patron()
    # an export in progress holds the one active report this user may have
    busy, _ = auth.patron()
    december = datetime(2025, 12, 10, tzinfo=UTC)
    users = (librarian, patron, early, busy)
    with app.app_context():
        db.session.execute(
            insert(BookRequest),
            [{"user_id": u["id"], "book_name": "Dune", "request_date": december} for u in users],
        )
        db.session.add_all(
            [
                Report(
                    user_id=early["id"],
                    month="2025-12",
                    status=ReportStatus.DONE,
                    created_at=datetime(2025, 12, 20, tzinfo=UTC),
                ),
                Report(user_id=busy["id"], status=ReportStatus.QUEUED, enqueued_at=utcnow()),
            ]
        )
        db.session.commit()
        with caplog.at_level("INFO", logger="monthly_reports"):
            started = start_monthly_reports("2025-12")
        assert {(r.user_id, r.scope) for r in started} == {
            (librarian["id"], ReportScope.LIBRARY),
            (patron["id"], ReportScope.PATRON),
            (early["id"], ReportScope.PATRON),
        }
        # the librarian's own report waits for the library's, as the busy patron's does
        assert [r.getMessage() for r in caplog.records if r.name == "monthly_reports"] == [
            f"user {who['id']} has a report in progress; monthly patron report skipped"
            for who in (librarian, busy)
        ]
        # published as they are made: the sweep does not take them for stranded ones
        assert all(r.enqueued_at is not None for r in started)
        assert set(Report.stale_ids(utcnow())).isdisjoint(r.id for r in started)
        db.session.execute(update(Report).values(status=ReportStatus.DONE))
        db.session.commit()
        assert {(r.user_id, r.scope) for r in start_monthly_reports("2025-12")} == {
            (librarian["id"], ReportScope.PATRON),
            (busy["id"], ReportScope.PATRON),
        }


def test_a_report_too_large_for_the_mail_is_linked_instead(app, auth, client, smtp_server):
    _, sink = smtp_server
    user, headers, report_id = export_with_rows(app, auth, client, 40)
    saved = app.config["REPORT_CHUNK_BYTES"], app.config["MAIL_MAX_ATTACHMENT_BYTES"]
    # many chunks: the mail joins them as the download does
    app.config["REPORT_CHUNK_BYTES"] = 64
    try:
        with app.app_context():
            report = db.session.get(Report, report_id)
            assert build_once(report, "state-test")
            sizes = dict(report.sizes)
            # the CSV just fits; the HTML page is larger and is only linked
            assert sizes["html"] > sizes["csv"]
            app.config["MAIL_MAX_ATTACHMENT_BYTES"] = sizes["csv"]
            mail_once(report)
    finally:
        app.config["REPORT_CHUNK_BYTES"], app.config["MAIL_MAX_ATTACHMENT_BYTES"] = saved
    [mail] = [m for m in sink.messages if m["To"] == user["email"]]
    assert mail.get_body(preferencelist=("html",)) is None
    [attachment] = mail.iter_attachments()
    assert str(attachment["Content-Type"]) == 'text/csv; charset="utf-8"'
    download = client.get(f"/reports/{report_id}/download?format=csv", headers=headers)
    assert attachment.get_content() == download.get_data(as_text=True)
    # the size the limit is held against is the file's own
    assert sizes["csv"] == len(download.get_data())
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert f"/reports/{report_id}/download?format=html" in text


def test_a_report_one_byte_over_the_mail_limit_is_not_attached(app, auth, client, smtp_server):
    _, sink = smtp_server
    user, _, report_id = export_with_rows(app, auth, client, 3)
    saved = app.config["MAIL_MAX_ATTACHMENT_BYTES"]
    try:
        with app.app_context():
            report = db.session.get(Report, report_id)
            assert build_once(report, "state-test")
            app.config["MAIL_MAX_ATTACHMENT_BYTES"] = report.sizes["csv"] - 1
            mail_once(report)
    finally:
        app.config["MAIL_MAX_ATTACHMENT_BYTES"] = saved
    [mail] = [m for m in sink.messages if m["To"] == user["email"]]
    assert list(mail.iter_attachments()) == []
    assert mail.get_body(preferencelist=("html",)) is None


def test_a_report_is_not_mailed_to_an_unverified_address(app, auth, client, smtp_server, caplog):
    _, sink = smtp_server
    user = auth.register(verified=False)
    report_id = start_report(app, user["id"])
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert build_once(report, "state-test")
        with caplog.at_level("INFO", logger="report_builder"):
            mail_once(report)
    assert [m for m in sink.messages if m["To"] == user["email"]] == []
    assert row_of(app, report_id).emailed_at is None
    assert f"report {report_id} not mailed: the owner's address is not verified" in [
        r.getMessage() for r in caplog.records if r.name == "report_builder"
    ]


def test_a_mail_server_away_hands_the_mail_back_for_the_retry(app, auth, client, caplog):
    user, _, report_id = export_with_rows(app, auth, client, 1)
    saved = app.config["MAIL_PORT"]
    # nothing listens there: the connection is refused
    app.config["MAIL_PORT"] = free_port()
    try:
        with app.app_context():
            report = db.session.get(Report, report_id)
            assert build_once(report, "state-test")
            with caplog.at_level("WARNING", logger="report_builder"), pytest.raises(Retry):
                mail_once(report)
    finally:
        app.config["MAIL_PORT"] = saved
    assert row_of(app, report_id).emailed_at is None
    [logged] = [r.getMessage() for r in caplog.records if r.name == "report_builder"]
    assert re.fullmatch(
        rf"report {report_id}: mail not sent, retrying: \[Errno 111\] Connection refused", logged
    )


def test_a_patrons_report_holds_only_their_own_requests(app, auth, client):
    # another patron's requests, in the month and out of it, are never in this one's report
    other, _ = auth.patron()
    user, headers = auth.patron()
    december, june = datetime(2025, 12, 10, tzinfo=UTC), datetime(2025, 6, 10, tzinfo=UTC)
    with app.app_context():
        db.session.execute(
            insert(BookRequest),
            [
                {"user_id": who["id"], "book_name": f"{name} {when:%m}", "request_date": when}
                for who, name in ((user, "Mine"), (other, "Theirs"))
                for when in (december, june)
            ],
        )
        db.session.commit()
    for month, books in ((None, ["Mine 12", "Mine 06"]), ("2025-12", ["Mine 12"])):
        report_id = start_report(app, user["id"], month=month)
        with app.app_context():
            assert build_once(db.session.get(Report, report_id), "state-test")
        download = client.get(f"/reports/{report_id}/download?format=csv", headers=headers)
        rows = csv.DictReader(io.StringIO(download.get_data(as_text=True), newline=""))
        assert [row["book_name"] for row in rows] == books
        assert row_of(app, report_id).row_count == len(books)
        with app.app_context():
            db.session.execute(update(Report).values(status=ReportStatus.DONE))
            db.session.commit()
