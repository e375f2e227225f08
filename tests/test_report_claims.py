"""Report claims and report starts under forced interleavings: racing deliveries of one
report, and an active report that finishes while a new export is being refused; and which
reports the workers' sweep takes up again."""

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, insert, select, update

from models import Report, db, utcnow
from tests.factories import add_user

# the claims race in process: a worker's sweep would publish and take the reports first
pytestmark = pytest.mark.usefixtures("no_worker")

DELIVERIES = 4


@contextmanager
def listening(target, name, listener):
    event.listen(target, name, listener)
    try:
        yield
    finally:
        event.remove(target, name, listener)


def add_report(app, user_id, **values):
    with app.app_context():
        report = Report(user_id=user_id, **values)
        db.session.add(report)
        db.session.commit()
        return report.id


def report_statuses(app, user_id):
    with app.app_context():
        return db.session.execute(
            select(Report.id, Report.status).where(Report.user_id == user_id)
        ).all()


def claim_all_at_once(app, report_id, redelivered=False):
    """Run DELIVERIES claims of one report, each held back until all are about to write.

    Every claim reaches its UPDATE before any UPDATE runs, the worst interleaving two
    deliveries can have; a claim that reads first and writes later lets all of them win.
    """
    about_to_write = threading.Barrier(DELIVERIES, timeout=30)
    claiming = threading.local()

    def hold_update(conn, cursor, statement, parameters, context, executemany):
        if getattr(claiming, "active", False) and statement.lstrip().startswith("UPDATE report"):
            claiming.active = False  # only the claim's first write waits
            about_to_write.wait()

    def claim(n):
        with app.app_context():
            claiming.active = True
            try:
                report = db.session.get(Report, report_id)
                return report.claim(f"delivery-{n}", redelivered)
            finally:
                claiming.active = False
                db.session.remove()

    with app.app_context():
        engine = db.engine
    with listening(engine, "before_cursor_execute", hold_update):
        with ThreadPoolExecutor(max_workers=DELIVERIES) as pool:
            return list(pool.map(claim, range(DELIVERIES)))


def test_racing_deliveries_of_a_queued_report_claim_it_once(app, auth):
    user = auth.register()
    report_id = add_report(app, user["id"], status="queued")
    won = claim_all_at_once(app, report_id)
    assert sorted(won) == [False] * (DELIVERIES - 1) + [True]
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report.status == "running" and report.attempts == 1
        assert report.task_id == f"delivery-{won.index(True)}"


def test_racing_redeliveries_take_a_stale_build_over_once(app, auth):
    user = auth.register()
    report_id = add_report(
        app, user["id"], status="running", attempts=1, task_id="dead", heartbeat_at=None
    )
    with app.app_context():
        # a heartbeat long past the stale limit: the build that wrote it is dead
        db.session.execute(
            update(Report).where(Report.id == report_id).values(heartbeat_at=utcnow().replace(2000))
        )
        db.session.commit()
    won = claim_all_at_once(app, report_id, redelivered=True)
    assert sorted(won) == [False] * (DELIVERIES - 1) + [True]
    with app.app_context():
        assert db.session.get(Report, report_id).attempts == 2


def test_live_build_is_not_claimed_by_another_delivery(app, auth):
    user = auth.register()
    report_id = add_report(
        app, user["id"], status="running", attempts=1, task_id="alive", heartbeat_at=utcnow()
    )
    won = claim_all_at_once(app, report_id, redelivered=True)
    assert won == [False] * DELIVERIES
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report.task_id == "alive" and report.attempts == 1


def is_report_insert(statement):
    return (statement or "").lstrip().startswith("INSERT INTO report ")


def finish_active_reports(engine, user_id):
    with engine.begin() as conn:
        conn.execute(
            update(Report)
            .where(Report.user_id == user_id, Report.status.in_(["queued", "running"]))
            .values(status="done", finished_at=utcnow())
        )


def test_export_refused_by_a_report_that_then_finished_is_retried(client, app, auth):
    """The active report finishes between the refused insert and the look-up of it."""
    user, headers = auth.patron()
    active_id = add_report(app, user["id"], status="running", heartbeat_at=utcnow())
    with app.app_context():
        engine = db.engine
    finished = []

    def finish_after_refusal(context):
        if not finished and is_report_insert(context.statement):
            finished.append(True)
            finish_active_reports(engine, user["id"])

    with listening(engine, "handle_error", finish_after_refusal):
        response = client.post("/export-report", headers=headers)
    assert finished, "the insert was never refused"
    assert response.status_code == 202, response.json
    assert dict(report_statuses(app, user["id"])) == {
        active_id: "done",
        response.json["id"]: "queued",
    }


def test_export_gives_up_when_reports_keep_finishing_under_it(client, app, auth):
    """Each try meets a new active report that is gone by the look-up: 503, nothing added."""
    user, headers = auth.patron()
    with app.app_context():
        engine = db.engine
    refusals = []

    starting = threading.local()

    def start_a_report(conn, cursor, statement, parameters, context, executemany):
        # the export's own insert, not this one's
        if is_report_insert(statement) and not getattr(starting, "active", False):
            starting.active = True
            try:
                with engine.begin() as other:
                    other.execute(
                        insert(Report).values(id=f"other-{len(refusals)}", user_id=user["id"])
                    )
            finally:
                starting.active = False

    def finish_after_refusal(context):
        if is_report_insert(context.statement):
            refusals.append(True)
            finish_active_reports(engine, user["id"])

    with (
        listening(engine, "before_cursor_execute", start_a_report),
        listening(engine, "handle_error", finish_after_refusal),
    ):
        response = client.post("/export-report", headers=headers)
    assert response.status_code == 503, response.json
    assert response.json["message"] == "Reports are changing too fast; try again."
    ids = {report_id for report_id, _ in report_statuses(app, user["id"])}
    assert ids == {f"other-{n}" for n in range(len(refusals))} and len(refusals) >= 3


def test_the_sweep_finds_reports_left_queued_or_stuck_running_and_no_others(app):
    """What the workers' sweep publishes again: the broker lost it, or its build died."""
    with app.app_context():
        now = utcnow()
        requeue = timedelta(seconds=app.config["REPORT_REQUEUE_SECONDS"])
        stale = timedelta(seconds=app.config["REPORT_STALE_SECONDS"])
        second = timedelta(seconds=1)
        states = {
            "never published": {"status": "queued", "enqueued_at": None},
            "published long ago": {"status": "queued", "enqueued_at": now - requeue - second},
            "just published": {"status": "queued", "enqueued_at": now - requeue / 2},
            "silent build": {"status": "running", "heartbeat_at": now - stale - second},
            "live build": {"status": "running", "heartbeat_at": now},
            "done": {"status": "done", "heartbeat_at": now - stale - second},
            "failed": {"status": "failed", "enqueued_at": None},
        }
        ids = {}
        for n, (name, values) in enumerate(states.items()):
            # one active report per user: each its own owner
            ids[name] = add_report(app, add_user(f"sweep{n}").id, **values)
        found = {name for name, id_ in ids.items() if id_ in Report.stale_ids(now)}
        assert found == {"never published", "published long ago", "silent build"}
        # a sweep that takes every queued report, however recently published
        found = {name for name, id_ in ids.items() if id_ in Report.stale_ids(now, any_age=True)}
        assert found == {"never published", "published long ago", "just published", "silent build"}
        # publishing a report again restarts its wait
        Report.mark_enqueued(ids["published long ago"], now)
        assert ids["published long ago"] not in Report.stale_ids(now)
        assert ids["published long ago"] in Report.stale_ids(now + requeue + second)
        assert ids["just published"] not in Report.stale_ids(now + requeue - second)


def test_an_export_records_what_was_asked_and_a_refusal_names_the_active_report(client, app, auth):
    _, other = auth.patron()
    assert (
        client.post("/export-report", json={"month": "2025-12"}, headers=other).status_code == 202
    )
    librarian, headers = auth.librarian()
    first = client.post("/reports/library", json={"month": "2025-11"}, headers=headers)
    assert first.status_code == 202
    with app.app_context():
        report = db.session.get(Report, first.json["id"])
        assert (report.user_id, report.month, report.scope) == (
            librarian["id"],
            "2025-11",
            "library",
        )
        assert report.enqueued_at is not None
    refused = client.post("/export-report", headers=headers)
    assert refused.status_code == 409
    assert refused.json["message"] == "A report of yours is still being prepared."
    assert refused.json["report_id"] == first.json["id"]


def test_an_export_finds_only_its_own_users_report_left_queued(app):
    """The report an export publishes again before it is refused by it."""
    with app.app_context():
        long_ago = utcnow() - timedelta(seconds=app.config["REPORT_REQUEUE_SECONDS"] + 5)
        owner, neighbour, busy = add_user("owner"), add_user("neighbour"), add_user("busy")
        left = add_report(app, owner.id, status="queued", enqueued_at=long_ago)
        add_report(app, neighbour.id, status="queued", enqueued_at=utcnow())
        add_report(app, busy.id, status="running", enqueued_at=long_ago, heartbeat_at=utcnow())
        assert Report.stranded_for(owner.id).id == left
        # just published, or building: nothing to publish again
        assert Report.stranded_for(neighbour.id) is None
        assert Report.stranded_for(busy.id) is None
