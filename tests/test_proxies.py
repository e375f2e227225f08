"""TRUSTED_PROXIES: behind a proxy each client is counted on its own; without one, the
X-Forwarded-For header a client sends changes nothing."""

import json

import pytest

from tests.servers import run_python

# a process of its own: the limiter is one object per process, shared by every app
CODE = """
import json
from app import create_app
client = create_app({"TESTING": True}).test_client()
body = {"username": "nobody", "password": "whatever1"}
results = []
for forwarded in ["203.0.113.7", "203.0.113.7", "203.0.113.7", "198.51.100.9"]:
    response = client.post(
        "/login", json=body, headers={"X-Forwarded-For": forwarded, "X-Forwarded-Proto": "https"}
    )
    results.append(response.status_code)
print(json.dumps(results))
"""


def login_statuses(service_env, trusted_proxies):
    env = {
        **service_env,
        "LOGIN_RATE_LIMIT": "2 per minute",
        "TRUSTED_PROXIES": str(trusted_proxies),
    }
    result = run_python("-c", CODE, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def reset_limits(app):
    from extensions import limiter

    with app.app_context():
        limiter.reset()
    yield


def test_behind_one_proxy_each_forwarded_client_has_its_own_limit(service_env):
    assert login_statuses(service_env, 1) == [401, 401, 429, 401]


def test_without_trusted_proxies_a_forged_header_does_not_dodge_the_limit(service_env):
    assert login_statuses(service_env, 0) == [401, 401, 429, 429]


def test_proxy_fix_takes_the_address_and_scheme_from_the_proxy(app, monkeypatch):
    from app import trust_proxies

    monkeypatch.setitem(app.config, "TRUSTED_PROXIES", 1)
    original = app.wsgi_app
    trust_proxies(app)
    try:
        headers = {"X-Forwarded-For": "198.51.100.9", "X-Forwarded-Proto": "https"}
        environ = {}

        def capture(env, start_response):
            environ.update(env)
            return original(env, start_response)

        app.wsgi_app.app = capture
        app.test_client().get("/health", headers=headers)
        assert environ["REMOTE_ADDR"] == "198.51.100.9"
        assert environ["wsgi.url_scheme"] == "https"
    finally:
        app.wsgi_app = original
