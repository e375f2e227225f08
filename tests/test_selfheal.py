"""The three-terminal run with no beat heals itself: faults of the broker and of the workers.

Each scenario runs on SQLite with Redis, on PostgreSQL when TEST_DATABASE_URL is set, and
on RabbitMQ when TEST_AMQP_URL is set. A report must be done within 60 s of the fault's end.
"""

import os
import re
import signal
import time
from datetime import timedelta

import pytest
import requests

from models import utcnow
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.servers import pool_processes, wait_for
from tests.stack import Stack

STACKS = ["sqlite-redis"]
if os.environ.get("TEST_DATABASE_URL"):
    STACKS.append("postgresql-redis")
if os.environ.get("TEST_AMQP_URL"):
    STACKS.append("sqlite-rabbitmq")

# the bound the issue sets: every report done this long after its fault ends
HEAL_SECONDS = 60
# a frame of a logged traceback: its file and function
FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)', re.MULTILINE)


def passes_through_the_build(trace):
    """Whether a logged traceback has a frame of the report build's own code."""
    return any(
        path.endswith(("/report_builder.py", "/report_formats.py"))
        or (path.endswith("/tasks.py") and function == "generate_user_report")
        for path, function in FRAME.findall(trace)
    )


@pytest.fixture(autouse=True)
def clean_state():
    """Each stack has a database of its own: the session's database is not involved here."""
    yield


@pytest.fixture(scope="module", params=STACKS)
def stack(request, tmp_path_factory):
    database, broker = request.param.split("-")
    workdir = tmp_path_factory.mktemp(request.param)
    pg_name = None
    if database == "postgresql":
        pg_name, url = create_postgres_database()
        database_url = url.render_as_string(hide_password=False)
    else:
        database_url = f"sqlite:///{workdir / 'library.db'}"
    amqp_url = os.environ["TEST_AMQP_URL"] if broker == "rabbitmq" else None
    stack = Stack(workdir, database_url, amqp_url)
    try:
        stack.start_api()
        yield stack
    finally:
        stack.close()
        if pg_name:
            drop_postgres_database(pg_name)


@pytest.fixture
def terminals(stack):
    """The stack with its API up and no worker running; every worker started is killed after."""
    yield stack
    for process in stack.processes:
        if process is not stack.api:
            process.kill()
    stack.processes = [stack.api]
    if stack.vhost is None and not stack.redis.ping():
        stack.start_broker()


def assert_built_and_mailed_once(stack, user, report_id, attempts=1):
    report = stack.wait_for_report(report_id, timeout=HEAL_SECONDS)
    wait_for(lambda: stack.mails_to(user), timeout=HEAL_SECONDS, what="report mail")
    assert report.attempts == attempts
    assert stack.builds_logged(report_id) == 1
    assert len(stack.mails_to(user)) == 1
    return report


def export_partly_built(stack, rows, below):
    """Start a worker and a patron's export of `rows` rows; return them once it is under way."""
    worker = stack.start_worker()
    user = stack.patron(rows=rows)
    report_id = stack.export(user).json()["id"]
    wait_for(
        lambda: 0 < stack.report(report_id).progress < below,
        timeout=60,
        interval=0.02,
        what="report half built",
    )
    return worker, user, report_id


def csv_lines(stack, user, report_id):
    url = f"{stack.api.url}/reports/{report_id}/download?format=csv"
    return requests.get(url, headers=user["headers"], timeout=60).text.count("\n")


def test_a_export_with_the_broker_down_is_built_after_it_and_the_worker_restart(terminals):
    stack = terminals
    worker = stack.start_worker()
    user = stack.patron(rows=20)
    stack.stop_broker()
    try:
        response = stack.export(user)
        assert response.status_code == 202
        report_id = response.json()["id"]
        # never published, so the first sweep takes it without waiting
        assert stack.report(report_id).enqueued_at is None
        assert stack.export(user).json()["report_id"] == report_id
        worker.kill()
    finally:
        stack.start_broker()
    stack.start_worker()
    report = assert_built_and_mailed_once(stack, user, report_id)
    assert report.row_count == 20


def test_a_broker_restart_under_a_running_worker_loses_nothing(terminals):
    stack = terminals
    stack.start_worker()
    user = stack.patron(rows=5)
    stack.stop_broker()
    try:
        report_id = stack.export(user).json()["id"]
    finally:
        stack.start_broker()
    # the worker reconnects by itself, and sweeps when it does
    assert_built_and_mailed_once(stack, user, report_id)


def test_b_worker_killed_mid_build_and_started_again(terminals):
    stack = terminals
    worker, user, report_id = export_partly_built(stack, rows=100_000, below=0.6)
    worker.kill()  # SIGKILL to the worker and its pool processes
    assert stack.report(report_id).status == "running"
    stack.start_worker()
    report = assert_built_and_mailed_once(stack, user, report_id, attempts=2)
    assert report.row_count == 100_000
    assert csv_lines(stack, user, report_id) == 100_001


def test_c_export_with_no_worker_then_an_empty_broker_then_a_worker(terminals):
    stack = terminals
    user = stack.patron(rows=3)
    # registration may have queued the address's verification mail: count the export's own
    before = stack.queued_messages()
    report_id = stack.export(user).json()["id"]
    assert stack.queued_messages() == before + 1
    stack.stop_broker()
    stack.start_broker()
    assert stack.queued_messages() == 0  # the message is gone with the broker's memory
    stack.start_worker()
    assert_built_and_mailed_once(stack, user, report_id)


def test_d_two_workers_start_together_on_a_backlog_and_build_each_report_once(terminals):
    stack = terminals
    patrons = [stack.patron(rows=300) for _ in range(6)]
    report_ids = [stack.export(user).json()["id"] for user in patrons]
    stack.stop_broker()
    stack.start_broker()
    workers = [stack.start_worker(wait=False) for _ in range(2)]
    for worker in workers:
        wait_for(lambda w=worker: "ready." in w.log(), timeout=60, what="worker ready")
    for user, report_id in zip(patrons, report_ids, strict=True):
        assert_built_and_mailed_once(stack, user, report_id)


def test_export_republishes_a_queued_report_whose_message_was_lost(terminals):
    stack = terminals
    user = stack.patron(rows=2)
    report_id = stack.export(user).json()["id"]
    stack.stop_broker()
    stack.start_broker()
    # published a moment ago: not stale yet, so a second export only answers 409
    stack.set_report(report_id, enqueued_at=utcnow() + timedelta(hours=1))
    conflict = stack.export(user)
    assert conflict.status_code == 409 and conflict.json()["report_id"] == report_id
    assert stack.queued_messages() == 0
    # waiting longer than REPORT_REQUEUE_SECONDS: the export publishes it again
    stack.set_report(report_id, enqueued_at=utcnow() - timedelta(hours=1))
    conflict = stack.export(user)
    assert conflict.status_code == 409 and conflict.json()["report_id"] == report_id
    assert stack.queued_messages() == 1
    assert stack.report(report_id).enqueued_at > utcnow() - timedelta(minutes=5)
    stack.start_worker()
    assert_built_and_mailed_once(stack, user, report_id)


@pytest.mark.parametrize(
    "app_name", ["celery_worker.celery_app", "celery_worker", "celery_worker.celery"]
)
def test_every_worker_spelling_builds_reports(terminals, app_name):
    stack = terminals
    stack.start_worker(app_name=app_name)
    user = stack.patron(rows=4)
    report_id = stack.export(user).json()["id"]
    assert_built_and_mailed_once(stack, user, report_id)


def test_health_counts_workers_from_their_heartbeats(terminals):
    stack = terminals
    wait_for(lambda: stack.health().json()["worker"] == "none", what="no worker in /health")
    health = stack.health()
    assert health.status_code == 200
    assert health.json()["status"] == "degraded" and health.json()["workers"] == 0
    assert "No worker is running" in health.json()["message"]

    first = stack.start_worker()
    second = stack.start_worker()
    wait_for(lambda: stack.health().json()["workers"] == 2, what="two workers in /health")
    assert stack.health().json()["status"] == "ok"
    assert stack.health().json()["worker"] == "up"

    second.kill(signal.SIGTERM)  # a clean stop takes its heartbeat away at once
    assert stack.health().json()["workers"] == 1
    first.kill()  # SIGKILL: the heartbeat expires after three missed beats
    wait_for(lambda: stack.health().json()["worker"] == "none", what="worker gone from /health")


def test_health_with_the_broker_down_is_503_and_says_so(terminals):
    stack = terminals
    stack.stop_broker()
    try:
        health = stack.health()
    finally:
        stack.start_broker()
    assert health.status_code == 503
    assert health.json()["broker"] == "down" and health.json()["database"] == "ok"
    if stack.vhost is None:
        # the heartbeats live in that same Redis
        assert health.json()["worker"] == "unknown" and health.json()["workers"] is None


def test_a_paused_build_taken_over_cannot_touch_the_finished_report(terminals):
    stack = terminals
    paused_worker, user, report_id = export_partly_built(stack, rows=150_000, below=0.5)
    (pool_process,) = pool_processes(paused_worker)
    # a GC, lock wait or VM pause of the build, longer than REPORT_STALE_SECONDS
    pause_between_writes(stack, pool_process)
    try:
        stack.start_worker()
        # the second worker's sweep takes the stalled build over and finishes it
        report = stack.wait_for_report(report_id, timeout=HEAL_SECONDS)
    finally:
        os.kill(pool_process, signal.SIGCONT)
    wait_for(
        lambda: f"report {report_id} was taken over" in paused_worker.log(),
        timeout=HEAL_SECONDS,
        what="the paused build to notice it lost the report",
    )
    after = stack.report(report_id)
    assert after.status == "done" and after.error is None
    assert (after.attempts, after.row_count, after.finished_at) == (
        2,
        150_000,
        report.finished_at,
    )
    assert stack.builds_logged(report_id) == 1
    # the build stopped quietly: no traceback passes through the build. The paused worker's
    # other work may log one of its own: its broker connection (a missed heartbeat on
    # RabbitMQ, an acknowledgement on a dropped connection), which Celery recovers, or a
    # periodic sweep that waited out SQLite's busy timeout, which its next run makes up for
    logged = paused_worker.log().split("Traceback")[1:]
    builds = [trace for trace in logged if passes_through_the_build(trace)]
    assert not builds, "the build failed:\n" + "\n".join(builds)
    assert csv_lines(stack, user, report_id) == 150_001
    wait_for(lambda: stack.mails_to(user), what="report mail")
    assert len(stack.mails_to(user)) == 1


def stopped(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def pause_between_writes(stack, pid):
    """SIGSTOP the build outside a write of its own, whose lock would hold the takeover up."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: stopped(pid), timeout=5, interval=0.001, what="process stopped")
        if not stack.build_is_writing():
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("the build was never caught between two writes")
