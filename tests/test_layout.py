"""The project's shape: modules import alone, nothing shadows a dependency, docs are served."""

import os
import subprocess
import sys

import pytest

from tests.servers import ROOT

MODULES = [
    "app",
    "config",
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
    "mail",
    "errors",
    "extensions",
    "pagination",
]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone_in_a_fresh_interpreter(module):
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
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
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
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
    result = subprocess.run(
        [sys.executable, "-c", "from app import create_app; create_app()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
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
    first, second = (
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        for _ in range(2)
    )
    assert len(first) >= 32 and first == second
    assert oct((tmp_path / "jwt-secret").stat().st_mode & 0o777) == "0o600"


def test_migrations_match_the_models(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/check.db",
        "JWT_SECRET_KEY": "x" * 40,
        "INSTANCE_PATH": str(tmp_path),
    }
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    result = subprocess.run(
        [flask, "--app", "app", "db", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_app_module_also_offers_an_app_object_for_wsgi_servers(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "JWT_SECRET_KEY": "x" * 40,
        "INSTANCE_PATH": str(tmp_path),
    }
    code = "import app; from flask import Flask; assert isinstance(app.app, Flask); print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
