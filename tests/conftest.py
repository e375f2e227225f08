"""Fixtures: a private Redis, a throwaway database (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set), the app, a client, an `auth` helper, and real workers on demand."""

import os
import secrets
import sqlite3
import uuid

import psycopg
import pytest
from sqlalchemy import delete
from sqlalchemy.engine import make_url

from tests.factories import bearer
from tests.servers import RedisServer, start_gunicorn, start_smtp, start_worker

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])
# a migrated, empty SQLite database to start from instead of migrating one (set by
# scripts/mutation.sh, whose every mutant starts a test session of its own)
SQLITE_TEMPLATE = os.environ.get("TEST_SQLITE_TEMPLATE")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_server():
    controller, sink = start_smtp()
    yield controller, sink
    controller.stop()


def create_postgres_database():
    """Create a database of its own on TEST_DATABASE_URL's server; return its URL."""
    server_url = make_url(os.environ["TEST_DATABASE_URL"])
    name = f"library_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, server_url.set(drivername="postgresql+psycopg", database=name)


def drop_postgres_database(name):
    server_url = make_url(os.environ["TEST_DATABASE_URL"])
    with psycopg.connect(admin_dsn(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_sqlite(source, target):
    """Copy a SQLite database consistently, even while another connection has it open."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def admin_dsn(url):
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_dsn(app, why):
    """The app's database as a psycopg connection string; on SQLite the test is skipped, for
    the reason `why`."""
    from models import db

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip(why)
        return admin_dsn(db.engine.url)


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "library.db"
        if SQLITE_TEMPLATE and os.path.exists(SQLITE_TEMPLATE):
            copy_sqlite(SQLITE_TEMPLATE, path)
        yield f"sqlite:///{path}"
        return
    name, url = create_postgres_database()
    yield url.render_as_string(hide_password=False)
    drop_postgres_database(name)


@pytest.fixture(scope="session")
def service_env(database_url, redis_server, smtp_server, tmp_path_factory):
    """Environment shared by the in-process app and every server the tests start."""
    controller, _ = smtp_server
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "JWT_SECRET_KEY": secrets.token_urlsafe(32),
        "MAIL_BACKEND": "smtp",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(controller.port),
        "LOGIN_RATE_LIMIT": "10000 per minute",
        "REGISTER_RATE_LIMIT": "10000 per minute",
        "EXPORT_RATE_LIMIT": "10000 per minute",
        "REQUEST_RATE_LIMIT": "10000 per minute",
        "CANCEL_RATE_LIMIT": "10000 per minute",
        "REFRESH_RATE_LIMIT": "10000 per minute",
        "LOGOUT_RATE_LIMIT": "10000 per minute",
        "REPORT_STALE_SECONDS": "4",
        "REPORT_REQUEUE_SECONDS": "1",
        "OUTBOX_RETRY_SECONDS": "1",
        "PUBLIC_BASE_URL": "http://library.test:8080",
        "APP_ENV": "testing",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield dict(os.environ)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def app(service_env):
    from app import create_app

    app = create_app({"TESTING": True})
    database = make_url(service_env["DATABASE_URL"])
    if SQLITE_TEMPLATE and database.drivername == "sqlite" and not os.path.exists(SQLITE_TEMPLATE):
        # the freshly migrated schema, before any test writes to it
        partial = f"{SQLITE_TEMPLATE}.{os.getpid()}"
        copy_sqlite(database.database, partial)
        os.replace(partial, SQLITE_TEMPLATE)
    yield app
    from models import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(autouse=True)
def clean_state(request, app):
    """Empty every table and the rate-limit counters, so each test starts from nothing."""
    from extensions import limiter
    from models import db

    yield
    with app.app_context():
        db.session.rollback()
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(delete(table))
        db.session.commit()
        limiter.reset()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def app_context(app):
    with app.app_context():
        yield


class AuthActions:
    """Register, log in and build Authorization headers the way a client would."""

    def __init__(self, client, app):
        self.client = client
        self.app = app
        self.counter = 0

    def register(
        self, username=None, password="correct horse", email=None, role="user", verified=True
    ):
        """Register through the API; `verified` then marks the address verified, as the
        link in the verification mail would, so that the library mails this user."""
        self.counter += 1
        username = username or f"patron{self.counter}_{uuid.uuid4().hex[:6]}"
        email = email or f"{username}@example.org"
        response = self.client.post(
            "/register", json={"username": username, "email": email, "password": password}
        )
        assert response.status_code == 201, response.json
        user = response.json
        if role == "admin" or verified:
            from models import User, db, utcnow

            with self.app.app_context():
                account = db.session.get(User, user["id"])
                account.role = role
                account.email_verified_at = utcnow() if verified else None
                db.session.commit()
                user.update(role=role, email_verified=account.email_verified)
                user["mail_paused"] = account.mail_paused
        user["password"] = password
        return user

    def login(self, user):
        response = self.client.post(
            "/login", json={"username": user["username"], "password": user["password"]}
        )
        assert response.status_code == 200, response.json
        return response.json

    def headers(self, user=None, role="user"):
        user = user or self.register(role=role)
        return bearer(self.login(user)["access_token"])

    def patron(self):
        user = self.register()
        return user, self.headers(user)

    def librarian(self):
        user = self.register(role="admin")
        return user, self.headers(user)


@pytest.fixture
def auth(client, app):
    return AuthActions(client, app)


@pytest.fixture(scope="session")
def worker_factory(service_env, tmp_path_factory):
    """Start Celery workers on demand; every one still running is killed at the end."""
    started = []
    logs = tmp_path_factory.mktemp("workers")

    def start(**kwargs):
        worker = start_worker(service_env, logs / f"worker-{len(started)}.log", **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture(scope="session")
def workers(worker_factory):
    """The one worker consuming the queue, which a test may kill and replace."""

    class Workers:
        current = None

        def ensure(self, **kwargs):
            if self.current is None or self.current.process.poll() is not None:
                self.current = worker_factory(**kwargs)
            return self.current

        def kill(self):
            if self.current is not None:
                self.current.kill()
                self.current = None

    return Workers()


@pytest.fixture
def no_worker(workers):
    """No worker runs: for a test that claims or builds reports in process."""
    workers.kill()


@pytest.fixture
def worker(workers):
    """A running worker: the shared one, so a test that kills it stops every consumer."""
    return workers.ensure()


@pytest.fixture(scope="session")
def live_server(service_env, tmp_path_factory):
    """The real app under gunicorn with several workers, for real HTTP and races."""
    server = start_gunicorn(service_env, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log")
    yield server
    server.kill()
    assert "Traceback" not in server.log(), server.log()
