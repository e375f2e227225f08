"""The production start, nginx (nginx.conf) in front of gunicorn (gunicorn.conf.py), under abuse:
slow clients do not hold the API, and limits count per client address behind the proxy."""

import http.client
import json
import os
import shutil
import sys
import threading

import pytest
import requests

from tests.servers import (
    BIN,
    ManagedProcess,
    SlowClients,
    free_port,
    killed_on_failure,
    wait_for,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
from nginx_conf import render  # noqa: E402

SLOW_CLIENTS = 50
# longer than gunicorn's worker timeout here (5 s) and nginx's header timeout (10 s)
ATTACK_SECONDS = 15
NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


@pytest.fixture(scope="module")
def production(service_env, tmp_path_factory):
    """nginx on a free port in front of gunicorn started from gunicorn.conf.py."""
    assert NGINX, "nginx is not installed: ./test.sh installs it with apt-get"
    logs = tmp_path_factory.mktemp("production")
    gunicorn_port, port = free_port(), free_port()
    env = {
        **service_env,
        "APP_ENV": "production",
        "BIND": f"127.0.0.1:{gunicorn_port}",
        "TRUSTED_PROXIES": "1",
        "LOGIN_RATE_LIMIT": "3 per minute",
        # a worker stuck on one client would be killed within the attack
        "GUNICORN_CMD_ARGS": "--timeout 5",
    }
    api = ManagedProcess(
        [os.path.join(BIN, "gunicorn"), "--config", "gunicorn.conf.py", "app:create_app()"],
        env,
        logs / "gunicorn.log",
    ).start()
    conf = render(f"127.0.0.1:{port}", f"127.0.0.1:{gunicorn_port}", logs / "nginx")
    proxy = ManagedProcess([NGINX, "-p", f"{logs}/nginx/", "-c", conf], env, logs / "nginx.log")
    proxy.start()
    url = f"http://127.0.0.1:{port}"

    def up():
        for server in (api, proxy):
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.args[0]} died at start:\n{server.log()}")
        try:
            return requests.get(f"{url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    with killed_on_failure(api), killed_on_failure(proxy):
        wait_for(up, timeout=60, what="nginx and gunicorn")
    yield url, port, api, proxy
    proxy.kill()
    api.kill()


def login(url, name):
    body = {"username": name, "email": f"{name}@example.org", "password": "slow clients"}
    assert requests.post(f"{url}/register", json=body, timeout=10).status_code == 201
    body.pop("email")
    return requests.post(f"{url}/login", json=body, timeout=10).json()["access_token"]


def test_slow_clients_do_not_hold_the_api_nor_get_a_worker_killed(production):
    url, port, api, proxy = production
    headers = {"Authorization": f"Bearer {login(url, 'steady')}"}
    answers = []
    with SlowClients(port, SLOW_CLIENTS) as slow:
        wait_for(lambda: slow.opened >= SLOW_CLIENTS, timeout=10, what="slow connections")
        stop = threading.Event()
        threading.Timer(ATTACK_SECONDS, stop.set).start()
        while not stop.is_set():
            # a request stuck behind the slow clients fails here (the bound, not a measurement)
            answers.append(requests.get(f"{url}/me", headers=headers, timeout=5).status_code)
            stop.wait(0.2)

    assert answers and set(answers) == {200}
    assert slow.opened >= SLOW_CLIENTS
    log = api.log()
    assert "WORKER TIMEOUT" not in log and "SIGKILL" not in log, log[-3000:]
    assert api.process.poll() is None and proxy.process.poll() is None


def post_login(port, source, forwarded_for=None):
    """POST /login from the loopback address `source`, as a client there would."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    body = json.dumps({"username": "nobody", "password": "wrong password"})
    conn.request("POST", "/login", body=body, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def test_behind_nginx_login_limits_count_per_client_address(production):
    _, port, _, _ = production
    assert [post_login(port, "127.0.0.2") for _ in range(4)] == [401, 401, 401, 429]
    # a made-up X-Forwarded-For does not buy a fresh count: nginx replaces it
    assert post_login(port, "127.0.0.2", forwarded_for="203.0.113.9") == 429
    # another client's address has its own count
    assert post_login(port, "127.0.0.3") == 401


def test_errors_nginx_answers_itself_keep_the_json_shape(production):
    url, _, _, _ = production
    response = requests.post(
        f"{url}/requests",
        data=b"x" * (3 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == 413 and body["status"] == "Request Entity Too Large"
