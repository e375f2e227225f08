"""The tutorial's three terminals, for fault tests: a broker, `python app.py`, and workers.

Each stack has a database, a Redis, a mail sink and (for RabbitMQ) a virtual host of its
own, so that no other test's worker ever sees its reports.
"""

import os
import secrets
import sqlite3
import subprocess
import uuid

import requests
from kombu import Connection
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url

from models import BookRequest, Report, User, utcnow
from tests.servers import (
    BIN,
    ManagedProcess,
    RedisServer,
    free_port,
    start_smtp,
    start_worker,
    wait_for,
    wait_until_ready,
)

# short intervals, so that a fault heals in seconds (the defaults are documented in README)
FAST_SETTINGS = {
    "REPORT_STALE_SECONDS": "4",
    "REPORT_REQUEUE_SECONDS": "3",
    "SWEEP_INTERVAL_SECONDS": "2",
    "WORKER_HEARTBEAT_SECONDS": "1",
}


# transactions of other connections that have written to the report table and not ended
ROW_WRITERS = """
SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid
WHERE c.relname IN ('report', 'report_chunk') AND l.mode = 'RowExclusiveLock'
  AND l.pid <> pg_backend_pid()
"""


class RabbitVhost:
    """A virtual host of its own on TEST_AMQP_URL's RabbitMQ; deleting it drops the queues."""

    def __init__(self, server_url):
        self.name = f"library-test-{uuid.uuid4().hex[:10]}"
        self.url = make_url(server_url).set(database=self.name).render_as_string(False)

    def ctl(self, *args):
        subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)

    def start(self):
        self.ctl("add_vhost", self.name)
        self.ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def stop(self):
        self.ctl("delete_vhost", self.name)


class Stack:
    """A broker (Redis or RabbitMQ), the API under `python app.py`, and any number of workers."""

    def __init__(self, workdir, database_url, amqp_url=None):
        self.workdir = workdir
        self.redis = RedisServer(workdir)
        self.redis.start()
        self.vhost = RabbitVhost(amqp_url) if amqp_url else None
        broker_url = f"{self.redis.url}/1"
        if self.vhost:
            self.vhost.start()
            broker_url = self.vhost.url
        self.smtp, self.sink = start_smtp()
        self.engine = create_engine(database_url)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": f"{self.redis.url}/2",
            "RATELIMIT_STORAGE_URI": f"{self.redis.url}/3",
            "JWT_SECRET_KEY": secrets.token_urlsafe(32),
            "MAIL_BACKEND": "smtp",
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(self.smtp.port),
            "RATELIMIT_ENABLED": "false",
            "INSTANCE_PATH": str(workdir / "instance"),
            "APP_ENV": "testing",
            **FAST_SETTINGS,
        }
        self.processes = []
        self.api = None

    @property
    def broker_url(self):
        return self.env["CELERY_BROKER_URL"]

    def close(self):
        for process in self.processes:
            process.kill()
        self.smtp.stop()
        self.redis.stop()
        if self.vhost:
            self.vhost.stop()
        self.engine.dispose()

    # terminal 1: the broker
    def stop_broker(self):
        if self.vhost:
            self.vhost.stop()
        else:
            self.redis.stop()

    def start_broker(self):
        """Start the broker again, empty: whatever it held before is gone."""
        if self.vhost:
            self.vhost.start()
        else:
            self.redis.start()

    def queued_messages(self):
        """How many messages wait in the broker's default queue."""
        with Connection(self.broker_url, connect_timeout=2) as conn:
            try:
                return conn.default_channel.queue_declare("celery", passive=True).message_count
            except conn.channel_errors:
                return 0  # RabbitMQ: the queue does not exist yet

    # terminal 2: python app.py
    def start_api(self):
        port = free_port()
        env = {**self.env, "FLASK_RUN_PORT": str(port)}
        self.api = self.launch([os.path.join(BIN, "python"), "app.py"], env, "api.log")
        self.api.url = f"http://127.0.0.1:{port}"

        def up():
            if self.api.process.poll() is not None:
                raise RuntimeError(f"the API died at start:\n{self.api.log()}")
            try:
                return requests.get(self.api.url + "/openapi.json", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, timeout=60, what="python app.py")
        return self.api

    # terminal 3: celery worker
    def start_worker(self, app_name="celery_worker.celery_app", wait=True):
        log_path = self.workdir / f"worker-{len(self.processes)}.log"
        worker = start_worker(self.env, log_path, app_name=app_name, wait=False)
        self.processes.append(worker)
        if wait:
            wait_until_ready(worker)
        return worker

    def launch(self, args, env, log_name):
        process = ManagedProcess(args, env, self.workdir / log_name).start()
        self.processes.append(process)
        return process

    # a patron's side, over HTTP
    def patron(self, rows=0):
        name = f"patron_{uuid.uuid4().hex[:8]}"
        user = {"username": name, "email": f"{name}@example.org", "password": "password123"}
        created = requests.post(f"{self.api.url}/register", json=user, timeout=10)
        assert created.status_code == 201, created.text
        login = {"username": name, "password": user["password"]}
        token = requests.post(f"{self.api.url}/login", json=login, timeout=10).json()
        user["id"] = created.json()["id"]
        user["headers"] = {"Authorization": f"Bearer {token['access_token']}"}
        # as if the verification link were followed: the library mails verified addresses only
        with self.engine.begin() as conn:
            conn.execute(
                update(User.__table__)
                .where(User.__table__.c.id == user["id"])
                .values(email_verified_at=utcnow())
            )
        self.add_requests(user["id"], rows)
        return user

    def export(self, user):
        return requests.post(f"{self.api.url}/export-report", headers=user["headers"], timeout=30)

    def health(self):
        return requests.get(f"{self.api.url}/health", timeout=10)

    def add_requests(self, user_id, count):
        rows = [
            {"user_id": user_id, "book_name": f"Book {n}", "status": "pending"}
            for n in range(count)
        ]
        with self.engine.begin() as conn:
            for start in range(0, count, 5000):
                batch = [{**row, "request_date": utcnow()} for row in rows[start : start + 5000]]
                conn.execute(insert(BookRequest.__table__), batch)

    # what the tests look at
    def report(self, report_id):
        with self.engine.connect() as conn:
            return conn.execute(select(Report.__table__).where(Report.id == report_id)).one()

    def set_report(self, report_id, **values):
        with self.engine.begin() as conn:
            conn.execute(update(Report.__table__).where(Report.id == report_id).values(**values))

    def wait_for_report(self, report_id, status="done", timeout=60):
        def reached():
            report = self.report(report_id)
            if report.status == "failed" and status != "failed":
                raise AssertionError(f"report failed: {report.error}")
            return report if report.status == status else None

        return wait_for(reached, timeout=timeout, interval=0.1, what=f"report {status}")

    def build_is_writing(self):
        """Tell whether some connection holds a write transaction on the reports right now."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                return conn.scalar(text(ROW_WRITERS)) > 0
        probe = sqlite3.connect(self.engine.url.database, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return False
        except sqlite3.OperationalError:  # "database is locked": a writer holds it
            return True
        finally:
            probe.close()

    def mails_to(self, user):
        """Mails to the user other than the verification mail registration sends."""
        return [
            m
            for m in self.sink.messages
            if m["To"] == user["email"] and not m["Subject"].startswith("Confirm")
        ]

    def builds_logged(self, report_id):
        """How many builds of the report the workers' logs say finished."""
        line = f"report {report_id} done"
        return sum(p.log().count(line) for p in self.processes if p is not self.api)
