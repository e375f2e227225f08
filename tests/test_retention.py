"""Report retention: old reports and those beyond each patron's cap lose their files in small
batches, and leave a tombstone whose downloads are 410; a download under way still ends whole."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

import report_builder
import retention
from config import default_config
from models import Report, ReportChunk, ReportStatus, db, utcnow
from report_builder import build_report
from tests.servers import wait_for
from tests.test_reports import add_requests, report_row, wait_for_report


def built_report(app, user_id, age_days=0):
    """Build a report of the user's requests in-process, finished `age_days` ago; its id."""
    with app.app_context():
        report = Report(user_id=user_id, enqueued_at=utcnow())
        db.session.add(report)
        db.session.commit()
        # a build writes only while it holds the claim, as a worker's does
        assert report.claim("retention-test")
        build_report(report)
        report.finished_at = utcnow() - timedelta(days=age_days)
        db.session.commit()
        return report.id


def chunk_count(app, report_id):
    with app.app_context():
        query = select(func.count()).select_from(ReportChunk)
        return db.session.scalar(query.where(ReportChunk.report_id == report_id))


def purge(app):
    with app.app_context():
        return retention.purge_reports()


def test_an_old_report_expires_into_a_tombstone_whose_downloads_are_410(client, app, auth):
    user, headers = auth.patron()
    add_requests(app, user["id"], 5)
    old = built_report(app, user["id"], age_days=31)
    recent = built_report(app, user["id"], age_days=29)
    assert chunk_count(app, old) > 0

    counts = purge(app)

    assert counts["expired"] == 1 and counts["chunks_deleted"] > 0
    assert chunk_count(app, old) == 0 and chunk_count(app, recent) > 0
    shown = client.get(f"/reports/{old}", headers=headers).json
    assert shown["status"] == "expired" and shown["expired_at"] is not None
    assert shown["download_urls"] == {} and shown["row_count"] == 5
    for format in ("html", "csv"):
        response = client.get(f"/reports/{old}/download?format={format}", headers=headers)
        assert response.status_code == 410
        body = response.json
        assert body["code"] == 410 and body["status"] == "Gone"
        assert f"Report {old} expired on " in body["message"]
    assert client.get(f"/reports/{recent}/download?format=csv", headers=headers).status_code == 200
    # a second purge finds nothing left to do
    assert purge(app) == {"expired": 0, "chunks_deleted": 0}


def test_the_cap_keeps_each_patrons_newest_reports(app, auth, monkeypatch):
    monkeypatch.setitem(app.config, "REPORT_MAX_PER_USER", 2)
    hoarder, _ = auth.patron()
    modest, _ = auth.patron()
    oldest, middle, newest = (built_report(app, hoarder["id"], age_days=d) for d in (3, 2, 1))
    others = [built_report(app, modest["id"], age_days=d) for d in (5, 4)]

    assert purge(app)["expired"] == 1

    statuses = {i: report_row(app, i).status for i in (oldest, middle, newest, *others)}
    assert statuses.pop(oldest) == ReportStatus.EXPIRED
    assert set(statuses.values()) == {ReportStatus.DONE}


def test_files_are_deleted_a_small_batch_per_transaction(app, auth, monkeypatch):
    monkeypatch.setitem(app.config, "REPORT_CHUNK_BYTES", 64)
    monkeypatch.setattr(report_builder, "ROWS_PER_PAGE", 10)
    monkeypatch.setattr(retention, "CHUNKS_PER_BATCH", 2)
    monkeypatch.setattr(retention, "REPORTS_PER_BATCH", 1)
    user, _ = auth.patron()
    add_requests(app, user["id"], 60)
    reports = [built_report(app, user["id"], age_days=40 + n) for n in range(3)]
    before = sum(chunk_count(app, report_id) for report_id in reports)
    assert before > 3 * 2 * retention.CHUNKS_PER_BATCH  # several batches per report

    assert purge(app) == {"expired": 3, "chunks_deleted": before}
    assert all(chunk_count(app, report_id) == 0 for report_id in reports)


def test_a_download_under_way_ends_whole_while_the_purge_deletes_its_chunks(
    client, app, auth, monkeypatch
):
    # a chunk for every page of 10 rows: the download takes many queries
    monkeypatch.setitem(app.config, "REPORT_CHUNK_BYTES", 64)
    monkeypatch.setattr(report_builder, "ROWS_PER_PAGE", 10)
    user, headers = auth.patron()
    add_requests(app, user["id"], 200)
    report_id = built_report(app, user["id"])
    whole = client.get(f"/reports/{report_id}/download?format=csv", headers=headers).data
    assert chunk_count(app, report_id) > 20

    response = client.get(
        f"/reports/{report_id}/download?format=csv", headers=headers, buffered=False
    )
    pieces = iter(response.response)
    received = next(pieces)
    assert len(received) < len(whole) / 10
    # the purge runs elsewhere, as the worker would, and commits while the download waits
    monkeypatch.setitem(app.config, "REPORT_RETENTION_DAYS", 0)
    purger = threading.Thread(target=lambda: purge(app))
    purger.start()
    purger.join(timeout=60)
    assert chunk_count(app, report_id) == 0
    received += b"".join(pieces)
    response.close()

    assert received == whole
    assert int(response.headers["Content-Length"]) == len(whole)
    after = client.get(f"/reports/{report_id}/download?format=csv", headers=headers)
    assert after.status_code == 410


def test_the_worker_purges_on_its_task_and_caps_after_each_export(client, app, auth, worker):
    from tasks import purge_expired_reports

    user, headers = auth.patron()
    add_requests(app, user["id"], 3)
    old = built_report(app, user["id"], age_days=app.config["REPORT_RETENTION_DAYS"] + 1)
    purge_expired_reports.delay()
    wait_for(lambda: chunk_count(app, old) == 0, timeout=30, what="the purge task")
    assert report_row(app, old).is_expired

    cap = app.config["REPORT_MAX_PER_USER"]
    kept = [built_report(app, user["id"], age_days=1 + n / 100) for n in range(cap)]
    exported = client.post("/export-report", headers=headers).json["id"]
    wait_for_report(app, exported)
    # the oldest of the cap's worth goes as soon as the new one is done
    wait_for(lambda: report_row(app, kept[-1]).is_expired, timeout=30, what="the cap")
    assert all(report_row(app, i).status == ReportStatus.DONE for i in kept[:-1] + [exported])


def test_retention_settings_and_schedules(monkeypatch):
    for key in ("REPORT_RETENTION_DAYS", "REPORT_MAX_PER_USER", "REPORT_PURGE_INTERVAL_SECONDS"):
        monkeypatch.delenv(key, raising=False)
    config = default_config("/tmp")
    assert config["REPORT_RETENTION_DAYS"] == 30 and config["REPORT_MAX_PER_USER"] == 20
    schedule = config["CELERY"]["beat_schedule"]["purge-expired-reports"]
    assert schedule["task"] == "tasks.purge_expired_reports"
    assert schedule["schedule"] == timedelta(hours=1)

    from worker_upkeep import MAINTENANCE_TASKS

    assert ("tasks.purge_expired_reports", "REPORT_PURGE_INTERVAL_SECONDS") in MAINTENANCE_TASKS


@pytest.mark.parametrize("status", [ReportStatus.QUEUED, ReportStatus.FAILED])
def test_only_finished_reports_expire(app, auth, status):
    user, _ = auth.patron()
    with app.app_context():
        report = Report(user_id=user["id"], status=status, created_at=utcnow() - timedelta(days=90))
        db.session.add(report)
        db.session.commit()
        report_id = report.id
    assert purge(app)["expired"] == 0
    assert report_row(app, report_id).status == status
