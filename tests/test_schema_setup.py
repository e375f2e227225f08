"""A fresh database gets its schema quietly; a migrated one is left to the operator."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLASK = os.path.join(os.path.dirname(sys.executable), "flask")


def flask(tmp_path, *args):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/library.db",
        "INSTANCE_PATH": str(tmp_path),
        "JWT_SECRET_KEY": "x" * 40,
        "AUTO_MIGRATE": "true",
    }
    env.pop("FLASK_APP", None)
    result = subprocess.run(
        [FLASK, "--app", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def current_revision(tmp_path):
    return flask(tmp_path, "db", "current").stdout.split()[0]


def head_revision(tmp_path):
    return flask(tmp_path, "db", "heads").stdout.split()[0]


def test_first_command_creates_the_schema_in_one_line_then_commands_are_silent(tmp_path):
    first = flask(tmp_path, "routes")
    assert "alembic" not in first.stderr
    assert first.stderr.strip().endswith("Created the database schema.")
    assert len(first.stderr.strip().splitlines()) == 1
    second = flask(tmp_path, "routes")
    assert second.stderr == ""
    assert current_revision(tmp_path) == head_revision(tmp_path)


def test_a_downgrade_stays_down_until_the_operator_upgrades(tmp_path):
    flask(tmp_path, "routes")
    head = head_revision(tmp_path)
    flask(tmp_path, "db", "downgrade")
    down = current_revision(tmp_path)
    assert down != head
    later = flask(tmp_path, "routes")
    assert current_revision(tmp_path) == down
    # one line says what to do, and no migration ran
    assert later.stderr.count("\n") == 1
    assert f"schema is at revision {down}, this code expects {head}" in later.stderr
    assert "flask --app app db upgrade" in later.stderr
    flask(tmp_path, "db", "upgrade")
    assert current_revision(tmp_path) == head
    assert flask(tmp_path, "routes").stderr == ""


def test_auto_migrate_off_leaves_a_fresh_database_empty(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/library.db",
        "INSTANCE_PATH": str(tmp_path),
        "JWT_SECRET_KEY": "x" * 40,
        "AUTO_MIGRATE": "false",
    }
    subprocess.run(
        [FLASK, "--app", "app", "routes"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    current = subprocess.run(
        [FLASK, "--app", "app", "db", "current"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert current.stdout.strip() == ""
