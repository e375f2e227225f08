"""The project's shape: modules import alone, nothing shadows a dependency, docs are served."""

import os

import pytest

from tests.servers import ROOT, fresh_instance_env, run_flask, run_python

MODULES = [
    "app",
    "config",
    "start_checks",
    "models",
    "schemas",
    "auth",
    "book_requests",
    "reports",
    "users",
    "health",
    "celery_worker",
    "worker_upkeep",
    "tasks",
    "report_builder",
    "monthly_reports",
    "schema_fields",
    "mail",
    "errors",
    "extensions",
    "pagination",
    "login_sessions",
    "admin",
]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(module):
    result = run_python("-c", f"import {module}")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import sys, tasks; assert 'app' not in sys.modules and 'celery_worker' not in sys.modules",
        # importing the worker module builds no Flask app; only asking for celery_app does
        "import celery_worker; assert 'celery_app' not in vars(celery_worker)",
    ],
    ids=["tasks", "celery_worker"],
)
def test_modules_do_not_import_the_app(code):
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr


def test_openapi_describes_every_route(client):
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    paths = set(spec["paths"])
    for path in [
        "/register",
        "/login",
        "/refresh",
        "/logout",
        "/me",
        "/requests",
        "/request-book",
        "/requests/{request_id}",
        "/requests/{request_id}/approve",
        "/export-report",
        "/reports",
        "/reports/{report_id}",
        "/reports/{report_id}/download",
        "/users",
        "/users/{user_id}",
        "/health",
    ]:
        assert path in paths, path
    assert "bearerAuth" in spec["components"]["securitySchemes"]


def test_swagger_ui_is_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert b"swagger" in response.data.lower()


def test_production_start_without_a_jwt_secret_stops_with_one_line(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "APP_ENV": "production",
        "AUTO_MIGRATE": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
    }
    result = run_python("-c", "from app import create_app; create_app()", env=env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("JWT_SECRET_KEY is not set")
    assert "Traceback" not in result.stderr


def test_development_secret_is_generated_once_and_reused(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "APP_ENV": "development",
        "AUTO_MIGRATE": "false",
        "INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
    }
    code = "from app import create_app; print(create_app().config['JWT_SECRET_KEY'])"
    first, second = (run_python("-c", code, env=env).stdout.strip() for _ in range(2))
    assert len(first) >= 32 and first == second
    assert oct((tmp_path / "jwt-secret").stat().st_mode & 0o777) == "0o600"


def test_migrations_match_the_models(tmp_path):
    result = run_flask("db", "check", env=fresh_instance_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_app_module_also_offers_an_app_object_for_wsgi_servers(tmp_path):
    code = "import app; from flask import Flask; assert isinstance(app.app, Flask); print('ok')"
    result = run_python("-c", code, env=fresh_instance_env(tmp_path))
    assert result.stdout.strip() == "ok", result.stderr


def start_up(tmp_path, *command, **settings):
    """Run `command` (python arguments) against a fresh instance; return the result."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AUTO_MIGRATE": "false",
        "INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "JWT_SECRET_KEY": "s" * 40,
        **settings,
    }
    command = command or ("-c", "from app import create_app; create_app(); print('started')")
    return run_python(*command, env=env)


def assert_stopped_with(result, message):
    assert result.returncode != 0
    assert "started" not in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if message in line]
    assert len(lines) == 1, result.stderr


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"JWT_SECRET_KEY": "s" * 31}, "shorter than 32 bytes"),
        ({"JWT_SECRET_KEY": "change-me-to-48-random-characters"}, "placeholder"),
        ({"JWT_ACCESS_TOKEN_EXPIRES": "0"}, "JWT_ACCESS_TOKEN_EXPIRES must be at least 60"),
        ({"JWT_ACCESS_TOKEN_EXPIRES": "59"}, "JWT_ACCESS_TOKEN_EXPIRES must be at least 60"),
        ({"JWT_REFRESH_TOKEN_EXPIRES": "-1"}, "JWT_REFRESH_TOKEN_EXPIRES must be at least 60"),
        ({"JWT_ACCESS_TOKEN_EXPIRES": "soon"}, "must be a whole number"),
        ({"APP_ENV": "development", "JWT_SECRET_KEY": "short"}, "shorter than 32 bytes"),
    ],
    ids=["short", "placeholder", "zero", "59", "negative", "not-a-number", "development"],
)
def test_weak_token_settings_stop_start_up_with_one_line(tmp_path, settings, message):
    assert_stopped_with(start_up(tmp_path, **settings), message)


def test_the_env_example_placeholder_is_the_one_refused():
    from start_checks import EXAMPLE_JWT_SECRET

    with open(os.path.join(ROOT, ".env.example"), encoding="utf-8") as example:
        assert f"JWT_SECRET_KEY={EXAMPLE_JWT_SECRET}" in example.read()


def test_sixty_second_tokens_are_accepted(tmp_path):
    result = start_up(tmp_path, JWT_ACCESS_TOKEN_EXPIRES="60", JWT_REFRESH_TOKEN_EXPIRES="60")
    assert result.stdout.strip() == "started", result.stderr


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"JWT_SECRET_KEY": "s" * 20}, "shorter than 32 bytes"),
        ({"JWT_SECRET_KEY": ""}, "JWT_SECRET_KEY is not set"),
    ],
    ids=["short-secret", "no-secret"],
)
def test_python_m_gunicorn_runs_the_secret_check(tmp_path, settings, message):
    """`python -m gunicorn` has no `gunicorn` in argv[0]; the check must run all the same."""
    from tests.servers import free_port

    bind = f"127.0.0.1:{free_port()}"
    args = ("-m", "gunicorn", "--bind", bind, "--workers", "1", "app:app")
    result = start_up(tmp_path, *args, **settings)
    # the master stops (a worker that cannot boot is not restarted forever)
    assert_stopped_with(result, message)


def test_instance_files_are_private(tmp_path):
    instance = tmp_path / "instance"
    code = (
        "from app import create_app; from mail import write_to_outbox, build_message\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    write_to_outbox(build_message('a@example.org', 'hello', 'text'))\n"
    )
    result = start_up(
        tmp_path,
        "-c",
        code,
        INSTANCE_PATH=str(instance),
        DATABASE_URL=f"sqlite:///{instance}/library.db",
        AUTO_MIGRATE="true",
        APP_ENV="development",
        JWT_SECRET_KEY="",
    )
    assert result.returncode == 0, result.stderr
    outbox = instance / "outbox"
    private = [instance, outbox]
    private += [path for path in instance.iterdir() if path.is_file()]
    private += list(outbox.iterdir())
    assert {p.name for p in private} >= {"library.db", "jwt-secret", "outbox"}
    assert any(p.suffix == ".eml" for p in private)
    for path in private:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"


def test_accounts_migration_keeps_data_and_stops_id_reuse_on_sqlite(tmp_path):
    """The user table is rebuilt for AUTOINCREMENT: nothing may cascade away with it."""
    import sqlite3

    path = tmp_path / "library.db"
    env = fresh_instance_env(tmp_path, AUTO_MIGRATE="false")

    def upgrade(*revision):
        result = run_flask("db", "upgrade", *revision, env=env)
        assert result.returncode == 0, result.stderr

    upgrade("c3e9f1a7b254")
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO user (id, username, email, password_hash, role, created_at) "
            "VALUES (?, ?, ?, 'x', 'user', '2026-01-01')",
            [(1, "Ann", "ann@example.org"), (2, "ann", "ann2@example.org")],
        )
        conn.execute(
            "INSERT INTO book_request (user_id, book_name, status, request_date) "
            "VALUES (2, 'Dune', 'pending', '2026-01-02')"
        )
    upgrade()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        assert conn.execute("SELECT user_id, book_name FROM book_request").fetchall() == [
            (2, "Dune")
        ]
        keys = conn.execute("SELECT id, username_key, active FROM user ORDER BY id").fetchall()
        assert keys == [(1, "ann", 1), (2, "ann#2", 1)]
        conn.execute("DELETE FROM user WHERE id = 2")
        conn.execute(
            "INSERT INTO user (username, username_key, email, password_hash, role, created_at) "
            "VALUES ('cat', 'cat', 'cat@example.org', 'x', 'user', '2026-01-03')"
        )
        assert conn.execute("SELECT id FROM user WHERE username = 'cat'").fetchone() == (3,)
