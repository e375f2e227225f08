"""Races over real HTTP against gunicorn with several workers: many clients doing the same
thing at the same instant still get exactly one winner, and never a 5xx."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from sqlalchemy import delete, func, select

from config import redis_db_url
from models import BookRequest, Report, RequestStatus, User, db
from tests.factories import PASSWORD, add_user, bearer_for
from tests.servers import start_gunicorn
from tests.sessions import session_tokens
from throttle import LoginThrottle

# Redis databases of the private test Redis that only the quiet server below uses
QUIET_BROKER_DB, QUIET_LIMITS_DB = 5, 6


def concurrently(count, action):
    """Run `action(i)` for i in range(count), all released at the same instant."""
    start = threading.Barrier(count)

    def run(i):
        start.wait()
        return action(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def statuses(responses):
    return sorted(response.status_code for response in responses)


def add_account(app, username, role="user"):
    """Make an account directly (no argon2 per user) and return (id, bearer headers)."""
    with app.app_context():
        user = add_user(username, role)
        return user.id, bearer_for(user.id)


def count(app, model, *conditions):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*conditions))


@pytest.fixture(scope="module")
def quiet_server(service_env, redis_server, tmp_path_factory):
    """A second gunicorn, three workers, login limit of 5 a minute, and a broker no worker
    consumes: an export it queues stays queued, whatever workers other tests started."""
    env = {
        **service_env,
        "LOGIN_RATE_LIMIT": "5 per minute",
        "CELERY_BROKER_URL": redis_db_url(redis_server.url, QUIET_BROKER_DB),
        "RATELIMIT_STORAGE_URI": redis_db_url(redis_server.url, QUIET_LIMITS_DB),
        # the worker's pid on every access line shows which worker served what
        "GUNICORN_CMD_ARGS": "--access-logformat 'served-by %(p)s %(s)s'",
    }
    server = start_gunicorn(env, tmp_path_factory.mktemp("quiet") / "gunicorn.log", workers=3)
    server.redis = redis.Redis.from_url(redis_db_url(redis_server.url, QUIET_LIMITS_DB))
    yield server
    server.kill()
    assert "Traceback" not in server.log(), server.log()[-5000:]


@pytest.mark.parametrize("taken", ["username", "email"])
def test_fifty_concurrent_registrations_of_one_name_give_exactly_one_201(live_server, app, taken):
    def register(i):
        body = {
            "username": "racer" if taken == "username" else f"racer{i}",
            # the same address in any letter case is the same address
            "email": f"racer{i}@example.org" if taken == "username" else "Racer@Example.ORG",
            "password": "password123",
        }
        return requests.post(f"{live_server.url}/register", json=body, timeout=60)

    responses = concurrently(50, register)
    assert statuses(responses) == [201] + [409] * 49, [r.text for r in responses if r.ok]
    assert all(r.json()["code"] == 409 for r in responses if r.status_code == 409)
    assert count(app, User) == 1


def test_twenty_concurrent_exports_of_one_user_give_exactly_one_202(quiet_server, app):
    _, headers = add_account(app, "exporter")

    responses = concurrently(
        20,
        lambda i: requests.post(f"{quiet_server.url}/export-report", headers=headers, timeout=60),
    )

    assert statuses(responses) == [202] + [409] * 19
    winner = next(r for r in responses if r.status_code == 202).json()["id"]
    assert {r.json()["report_id"] for r in responses if r.status_code == 409} == {winner}
    assert count(app, Report) == 1


@pytest.mark.parametrize(("first", "second"), [("approve", "cancel"), ("reject", "cancel")])
def test_a_librarian_and_the_patron_acting_at_once_have_one_winner(live_server, app, first, second):
    _, patron = add_account(app, "patron")
    _, librarian = add_account(app, "librarian", role="admin")
    outcome = {"approve": "approved", "reject": "rejected", "cancel": "cancelled"}
    for round_number in range(10):
        created = requests.post(
            f"{live_server.url}/requests", json={"book_name": f"Race {round_number}"},
            headers=patron, timeout=30,
        )  # fmt: skip
        request_id = created.json()["id"]
        actions = [(first, librarian), (second, patron)]

        def act(i, request_id=request_id, actions=actions):
            action, headers = actions[i]
            return requests.post(
                f"{live_server.url}/requests/{request_id}/{action}",
                json={"reason": "lost in the flood"} if action == "reject" else None,
                headers=headers,
                timeout=30,
            )

        responses = concurrently(2, act)
        assert statuses(responses) == [200, 409], [r.text for r in responses]
        won = actions[[r.status_code for r in responses].index(200)][0]
        with app.app_context():
            final = db.session.get(BookRequest, request_id)
            assert final.status == outcome[won]
            assert (final.decided_by is not None) == (won != "cancel")
        loser = next(r for r in responses if r.status_code == 409).json()
        assert loser["code"] == 409 and outcome[won] in loser["message"]


def test_pending_limit_holds_when_requests_race(live_server, app):
    user_id, headers = add_account(app, "hoarder")
    limit = app.config["MAX_PENDING_REQUESTS"]
    with app.app_context():
        db.session.add_all(
            BookRequest(user_id=user_id, book_name=f"Book {n}") for n in range(limit - 1)
        )
        db.session.commit()

    responses = concurrently(
        10,
        lambda i: requests.post(
            f"{live_server.url}/requests", json={"book_name": f"Last {i}"}, headers=headers,
            timeout=60,
        ),
    )  # fmt: skip

    assert statuses(responses) == [201] + [409] * 9
    assert count(app, BookRequest, BookRequest.status == RequestStatus.PENDING) == limit


def test_two_librarians_demoting_each_other_at_once_leave_one(live_server, app):
    for round_number in range(5):
        first_id, first = add_account(app, f"first{round_number}", role="admin")
        second_id, second = add_account(app, f"second{round_number}", role="admin")
        with app.app_context():
            # only these two are librarians
            for user in db.session.scalars(select(User).where(User.role == "admin")):
                if user.id not in (first_id, second_id):
                    user.role = "user"
            db.session.commit()
        moves = [(first, second_id), (second, first_id)]
        responses = concurrently(
            2,
            lambda i, moves=moves: requests.patch(
                f"{live_server.url}/users/{moves[i][1]}", json={"role": "user"},
                headers=moves[i][0], timeout=30,
            ),
        )  # fmt: skip
        # the loser is refused as the last librarian (409), or, when the winner was quicker
        # still, as no longer a librarian at all (403)
        assert statuses(responses) in ([200, 403], [200, 409]), [r.text for r in responses]
        assert count(app, User, User.role == "admin") == 1


def test_logout_racing_uses_of_the_same_token(live_server, app):
    add_account(app, "leaver")
    login = requests.post(
        f"{live_server.url}/login", json={"username": "leaver", "password": PASSWORD}, timeout=30
    ).json()
    for token in (login["access_token"], create_token_for(app, "leaver")):
        bearer = {"Authorization": f"Bearer {token}"}
        logged_out = threading.Event()

        def use_or_logout(i, bearer=bearer, logged_out=logged_out):
            if i in (0, 1):  # two logouts of the same token at once
                response = requests.post(f"{live_server.url}/logout", headers=bearer, timeout=30)
                if response.status_code == 200:
                    logged_out.set()
                return "logout", False, response
            started_after_logout = logged_out.is_set()
            response = requests.get(f"{live_server.url}/me", headers=bearer, timeout=30)
            return "me", started_after_logout, response

        results = concurrently(20, use_or_logout)

        for _kind, after_logout, response in results:
            assert response.status_code in (200, 401), response.text
            if after_logout:
                assert response.status_code == 401, "a revoked token was served"
        logouts = [r.status_code for kind, _, r in results if kind == "logout"]
        assert 200 in logouts
        after = requests.get(f"{live_server.url}/me", headers=bearer, timeout=30)
        assert after.status_code == 401
        assert after.headers["WWW-Authenticate"] == "Bearer"


def create_token_for(app, username):
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.username == username))
        return session_tokens(user_id)[0]


def test_login_rate_limit_holds_across_gunicorn_workers(quiet_server, app):
    add_account(app, "guesser")
    quiet_server.redis.flushdb()
    wrong = {"username": "guesser", "password": "not the password"}

    def attempt(_=None):
        # a new connection each time, so any of the workers may take it
        return requests.post(f"{quiet_server.url}/login", json=wrong, timeout=60)

    sequential = [attempt() for _ in range(8)]
    assert [r.status_code for r in sequential] == [401] * 5 + [429] * 3
    for response in sequential[5:]:
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["code"] == 429

    # a fresh minute for the limit, and no failures on record: the account's own delay
    # (throttle.py) would otherwise refuse the burst's first guesses before the limit does
    quiet_server.redis.flushdb()
    with app.app_context():
        db.session.execute(delete(LoginThrottle))
        db.session.commit()
    burst = concurrently(20, attempt)
    assert statuses(burst) == [401] * 5 + [429] * 15
    assert all(int(r.headers["Retry-After"]) > 0 for r in burst if r.status_code == 429)

    served_by = re.findall(r"served-by <(\d+)> (\d+)", quiet_server.log())
    assert len({pid for pid, _ in served_by}) >= 2, "one gunicorn worker took every request"


def test_gunicorn_logged_no_traceback(live_server):
    assert "Traceback" not in live_server.log(), live_server.log()[-5000:]
