"""A setting that stops the app stops gunicorn once, in the master, before any worker."""

import os

from tests.servers import BIN, run_in_root

GUNICORN = os.path.join(BIN, "gunicorn")


def test_gunicorn_without_a_jwt_secret_stops_once_with_the_message(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "INSTANCE_PATH": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/library.db",
        "BIND": "127.0.0.1:0",
        "WEB_CONCURRENCY": "3",
    }
    result = run_in_root([GUNICORN, "--config", "gunicorn.conf.py", "app:create_app()"], env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("JWT_SECRET_KEY is not set") == 1, output
    # no worker was started, so none died and was started again
    assert "Booting worker" not in output
    assert "Traceback" not in output
    assert not (tmp_path / "jwt-secret").exists()
