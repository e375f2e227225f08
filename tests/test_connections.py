"""Pooled connections: PostgreSQL's are tested before a request uses them, SQLite's are not
(a local file has no connection to lose, and the test would be a statement per request)."""

import psycopg
import pytest

from app import set_pre_ping
from models import db
from tests.conftest import postgres_dsn


def test_only_a_server_database_pings_its_connections(app):
    with app.app_context():
        assert db.engine.pool._pre_ping is (db.engine.dialect.name != "sqlite")


@pytest.mark.parametrize(
    ("url", "options", "pings"),
    [
        ("sqlite:////tmp/library.db", {}, False),
        ("postgresql+psycopg://db/library", {}, True),
        ("sqlite:////tmp/library.db", {"pool_pre_ping": True}, True),
        ("postgresql+psycopg://db/library", {"pool_pre_ping": False, "echo": True}, False),
    ],
)
def test_a_configured_pre_ping_is_kept(url, options, pings):
    config = {"SQLALCHEMY_DATABASE_URI": url, "SQLALCHEMY_ENGINE_OPTIONS": dict(options)}
    set_pre_ping(config)
    assert config["SQLALCHEMY_ENGINE_OPTIONS"] == {**options, "pool_pre_ping": pings}


def test_a_connection_the_server_ended_is_replaced_before_a_request_uses_it(app, client, auth):
    dsn = postgres_dsn(app, "a SQLite file has no server to end its connections")
    _, headers = auth.patron()
    assert client.get("/requests", headers=headers).status_code == 200
    # every pooled connection of the app's database ends, as in a server restart
    with psycopg.connect(dsn, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert ended >= 1
    response = client.get("/requests", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
