"""A fresh database gets its schema quietly; a migrated one is left to the operator."""

from tests.servers import fresh_instance_env, run_flask


def flask(tmp_path, *args, auto_migrate="true"):
    env = fresh_instance_env(tmp_path, AUTO_MIGRATE=auto_migrate)
    env.pop("FLASK_APP", None)
    result = run_flask(*args, env=env)
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
    flask(tmp_path, "routes", auto_migrate="false")
    current = flask(tmp_path, "db", "current", auto_migrate="false")
    assert current.stdout.strip() == ""
