"""The tutorial's three terminals, run as its readers run them, and the curl flow through them."""

import os
import re
import stat
import sys

import requests

from tests.servers import BIN, ManagedProcess, RedisServer, free_port, wait_for


def test_three_terminals_run_the_tutorial_flow(tmp_path):
    redis_server = RedisServer(tmp_path)  # terminal 1: redis-server (on a private port here)
    redis_server.start()
    port = free_port()
    # nothing but where things live: no JWT secret, default console mail, default settings
    env = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "REDIS_URL": redis_server.url,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/instance/library.db",
        "FLASK_RUN_PORT": str(port),
    }
    api = ManagedProcess([sys.executable, "app.py"], env, tmp_path / "api.log").start()
    worker = ManagedProcess(
        [
            os.path.join(BIN, "celery"),
            "-A",
            "celery_worker.celery_app",
            "worker",
            "--loglevel=info",
        ],
        env,
        tmp_path / "worker.log",
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"

        def api_up():
            try:
                return requests.get(f"{base}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(api_up, timeout=60, what=f"python app.py\n{api.log()}")
        wait_for(lambda: "ready." in worker.log(), timeout=60, what="celery worker")

        user = {"username": "tutorial", "email": "tutorial@example.org", "password": "password123"}
        assert requests.post(f"{base}/register", json=user).status_code == 201
        # the verification link shows in the worker terminal; following it verifies the address
        token_in_log = r"/verify-email\?token=(\S+)"
        link = wait_for(lambda: re.search(token_in_log, worker.log()), what="verification mail")
        verified = requests.get(f"{base}/verify-email", params={"token": link.group(1)})
        assert verified.status_code == 200, verified.text
        login = requests.post(
            f"{base}/login", json={"username": "tutorial", "password": "password123"}
        ).json()
        headers = {"Authorization": f"Bearer {login['access_token']}"}
        created = requests.post(
            f"{base}/request-book", json={"book_name": "Flask Web Development"}, headers=headers
        )
        assert created.status_code == 201
        export = requests.get(f"{base}/export-report", headers=headers)
        assert export.status_code == 202
        status_url = base + export.headers["Location"]
        wait_for(
            lambda: requests.get(status_url, headers=headers).json()["status"] == "done",
            timeout=60,
            what="report done",
        )
        # the worker terminal shows the task and the mail, as the tutorial promises
        wait_for(lambda: "Subject: Your library report" in worker.log(), what="mail in log")
        log = worker.log()
        assert f"tasks.generate_user_report[{export.json()['id']}]" in log
        assert "To: tutorial@example.org" in log
        assert "Traceback" not in api.log() + log
        # the development secret was generated once, readable by the owner only
        secret = tmp_path / "instance" / "jwt-secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert "Debugger is active" not in api.log()
    finally:
        api.kill()
        worker.kill()
        redis_server.stop()
