"""A bounded soak: a few clients register, log in, request, list and export against gunicorn
and a real worker for SOAK_SECONDS (20 by default, 60 for the full soak). Every answer is one
its call expects, every call succeeded at least once, and every export finished. (The API's
memory over a soak is measured by bench/run.py, not asserted here.)"""

import collections
import itertools
import os
import random
import threading
import time
import uuid

import pytest
import requests
from sqlalchemy import select

from models import REPORT_ACTIVE_STATUSES, Report, ReportStatus, db
from tests.servers import wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
WARM_UP_SECONDS = 4
CLIENTS = 4
# every status each call may answer with; the first is its success, which must be seen
EXPECTED = {
    "POST /register": (201,),
    "POST /login": (200,),
    "POST /requests": (201, 409),  # 409: the pending limit, which the client then frees
    "GET /requests": (200,),
    "POST /requests/<id>/cancel": (200,),
    "GET /me": (200,),
    "POST /export-report": (202, 409),  # 409: the patron's previous export is still active
    "GET /reports": (200,),
    "GET /reports/<id>": (200,),
    "GET /reports/<id>/download": (200,),  # only asked for a report listed as done
}

pytestmark = pytest.mark.soak


class Client:
    """One patron after another: register, log in, then a mix of the API's everyday calls."""

    def __init__(self, base_url, number, stats):
        self.base_url = base_url
        self.rng = random.Random(number)  # the same mix on every run
        self.number = number
        self.stats = stats
        self.stop_at = 0.0
        self.reports = []
        self.http = requests.Session()

    def call(self, method, path, **kwargs):
        try:
            response = self.http.request(method, self.base_url + path, timeout=60, **kwargs)
        except requests.RequestException as exc:
            self.stats.record(f"{method} {route_of(path)}", f"error {type(exc).__name__}")
            return None
        self.stats.record(f"{method} {route_of(path)}", response.status_code)
        return response

    def new_patron(self):
        name = f"soak{self.number}_{uuid.uuid4().hex[:10]}"
        body = {"username": name, "email": f"{name}@example.org", "password": "soak password"}
        self.call("POST", "/register", json=body)
        login = self.call("POST", "/login", json={"username": name, "password": body["password"]})
        token = login.json()["access_token"] if login is not None and login.ok else ""
        self.http.headers["Authorization"] = f"Bearer {token}"

    def step(self):
        roll = self.rng.random()
        if roll < 0.05:
            self.new_patron()
        elif roll < 0.35:
            note = self.rng.choice([None, "hardback", "📚 any edition"])
            created = self.call(
                "POST", "/requests", json={"book_name": f"Book {self.rng.randrange(10**6)}",
                                           "note": note},
            )  # fmt: skip
            if created is not None and created.status_code == 409:  # the pending limit
                request_id = self.call("GET", "/requests?status=pending&per_page=1")
                if request_id is not None and request_id.ok and request_id.json()["items"]:
                    pending = request_id.json()["items"][0]["id"]
                    self.call("POST", f"/requests/{pending}/cancel")
        elif roll < 0.65:
            page = self.rng.randint(1, 3)
            self.call("GET", f"/requests?page={page}&per_page={self.rng.choice([5, 20, 100])}")
        elif roll < 0.75:
            self.call("GET", "/me")
        elif roll < 0.85:
            exported = self.call("POST", "/export-report")
            if exported is not None and exported.status_code == 202:
                self.reports.append(exported.json()["id"])
        else:
            listed = self.call("GET", "/reports")
            if listed is not None and listed.ok:
                for report in listed.json()["items"][:1]:
                    self.call("GET", f"/reports/{report['id']}")
                    if report["status"] == "done":
                        self.call("GET", f"/reports/{report['id']}/download?format=csv")

    def run(self):
        self.new_patron()
        while time.monotonic() < self.stop_at:
            self.step()


def route_of(path):
    """The route a path belongs to, with ids folded, so that the figures group by route."""
    parts = [
        "<id>" if part.isdigit() or len(part) == 36 else part
        for part in path.split("?")[0].split("/")
    ]
    return "/".join(parts)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()

    def record(self, route, status):
        with self.lock:
            self.counts[(route, status)] += 1

    def total(self):
        return sum(self.counts.values())

    def unexpected(self):
        """Answers outside their call's expected set, and calls that never once succeeded."""
        wrong = {key: n for key, n in self.counts.items() if key[1] not in EXPECTED.get(key[0], ())}
        succeeded = {
            route for route, status in self.counts if status == EXPECTED.get(route, [0])[0]
        }
        never = sorted(set(EXPECTED) - succeeded)
        return wrong, never


def drive(clients, seconds):
    stop_at = time.monotonic() + seconds
    threads = []
    for client in clients:
        client.stop_at = stop_at
        thread = threading.Thread(target=client.run, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=seconds + 120)
        assert not thread.is_alive(), "a soak client hung"


def test_soak(live_server, worker_factory, app, capsys):
    worker = worker_factory(concurrency=1)
    try:
        warm_stats, stats = Stats(), Stats()
        # warm-up: every kind of call, so each worker has imported and cached what it uses
        drive([Client(live_server.url, n, warm_stats) for n in range(CLIENTS)], WARM_UP_SECONDS)

        clients = [Client(live_server.url, 100 + n, stats) for n in range(CLIENTS)]
        began = time.monotonic()
        drive(clients, SOAK_SECONDS)
        elapsed = time.monotonic() - began
        report_ids = list(itertools.chain.from_iterable(c.reports for c in clients))

        def all_exports_finished():
            with app.app_context():
                return not db.session.scalar(
                    select(Report.id)
                    .where(Report.id.in_(report_ids), Report.status.in_(REPORT_ACTIVE_STATUSES))
                    .limit(1)
                )

        drain_began = time.monotonic()
        wait_for(all_exports_finished, timeout=120, interval=0.5, what="every export finished")
        drain = time.monotonic() - drain_began
    finally:
        worker.kill()

    by_status = collections.Counter()
    for (_, status), n in stats.counts.items():
        by_status[status] += n
    with app.app_context():
        failed = db.session.scalars(
            select(Report.error).where(
                Report.id.in_(report_ids), Report.status == ReportStatus.FAILED
            )
        ).all()
    with capsys.disabled():
        print(
            f"\nsoak: {SOAK_SECONDS:.0f} s, {CLIENTS} clients, {stats.total()} requests "
            f"({stats.total() / elapsed:.0f}/s), statuses {dict(sorted(by_status.items()))}\n"
            f"soak: {len(report_ids)} exports, all done {drain:.1f} s after the load stopped"
        )
    assert warm_stats.unexpected()[0] == {}, warm_stats.unexpected()
    wrong, never = stats.unexpected()
    assert wrong == {}, f"answers outside the expected set: {wrong}"
    assert never == [], f"calls that never succeeded: {never}"
    assert not failed, failed
