"""Benchmark the service against floors built in the same run, on loopback only.

    .venv/bin/python bench/run.py            # full run, about 4 minutes on 2 cores
    .venv/bin/python bench/run.py --quick    # shorter run, about 2 minutes
    .venv/bin/python bench/run.py --scale    # list routes at 10k and 1M rows (bench/scale.py)

It starts its own redis-server, a fresh SQLite database in a temporary folder, the API under
gunicorn (gunicorn.conf.py), a Celery worker, and a bare Flask floor app (bench/floor_app.py)
under the same gunicorn settings; it stops them all at the end. Results are printed and written
to bench/results/latest.md.
"""

import argparse
import csv
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, BENCH)
sys.path.insert(1, ROOT)

from loadgen import Client, percentile, run_load  # noqa: E402

from models import ReportStatus, RequestStatus  # noqa: E402
from tests.servers import free_port, wait_for  # noqa: E402

# the statuses as named parameters of the SQL below (:pending, :queued, ...)
STATUS_PARAMS = {status.value: status.value for status in (*RequestStatus, *ReportStatus)}

PASSWORD = "bench-password-1"
CSV_COLUMNS = (
    "id", "book_name", "author", "status", "request_date", "decided_at", "due_date",
    "returned_at", "reason", "note",
)  # fmt: skip

FULL = {
    "rounds": 3,
    "concurrency": 32,
    # distinct users, each exporting once per round: the export figure's p99 is then the
    # 10th slowest of 1,000 (with 160 it was the 2nd slowest, which one burst of other load sets)
    "users": 1000,
    "rows_per_user": 25,  # their book requests: a page of 20 and a small report
    "throughput_seconds": 6,
    "throughput_concurrency": 32,
    "report_rows": 100_000,
    "memory_rows": (10_000, 1_000_000),
    "logins": 20,
    "timing_samples": 200,  # refused logins of each kind
    "broker_down_exports": 20,
}
QUICK = {
    **FULL,
    "users": 480,  # the p99 is the 5th slowest
    "throughput_seconds": 3,
    "memory_rows": (10_000, 100_000),
    "logins": 10,
    "timing_samples": 50,
    "broker_down_exports": 10,
}


# what one exported row may cost (figure 6): about 1.5x what it cost when set, so a change
# that makes reports heavier fails here; (results key, label, unit, limit)
BUDGETS = (
    ("budget_db_bytes", "database bytes (stored chunks)", "B", 60),
    ("budget_worker_us", "worker CPU, build and mail", "µs", 30),
)

# ---------------------------------------------------------------- processes


class Managed:
    """A child process in its own session, with its output in a log file."""

    started = []

    def __init__(self, name, args, env, log_path, cwd=ROOT):
        self.name = name
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        Managed.started.append(self)

    @property
    def pid(self):
        return self.process.pid

    def alive(self):
        return self.process.poll() is None

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as log_file:
            return log_file.read()

    def children(self):
        return child_pids(self.pid)

    def stop(self, timeout=15):
        """Ask the whole process group to stop, then kill what is left of it."""
        if self.alive():
            signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # the group may outlive its leader (a pool child): kill whatever still holds it
        signal_group(self.pid, signal.SIGKILL)
        if self.alive():
            self.process.wait()
        self.log_file.close()


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def child_pids(pid):
    pids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                pids += [int(p) for p in children.read().split()]
    except FileNotFoundError:
        pass
    return pids


def group_members(pgid):
    """Return the pids still in process group `pgid` (to prove nothing was left behind)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def proc_status(pid, key):
    """Return a /proc/<pid>/status value in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss(pid):
    # writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def system_busy():
    """Return the jiffies all CPUs spent busy since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy
    return sum(values[:8]) - values[3] - values[4]


def process_jiffies(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return sum(int(v) for v in fields[11:15])


class CpuMeter:
    """Tell how much of the machine's CPU went to processes that are not this benchmark's."""

    def __init__(self, groups):
        self.groups = groups
        self.mark()

    def ours(self):
        pids = {os.getpid()}
        for group in self.groups():
            pids.update(group_members(group))
        return sum(process_jiffies(pid) for pid in pids)

    def mark(self):
        self.at = (time.monotonic(), system_busy(), self.ours())

    def background_share(self):
        """Return the share (0..1) of all CPUs others used since the last mark, and mark."""
        then, busy, ours = self.at
        self.mark()
        now, busy_now, ours_now = self.at
        capacity = (now - then) * os.sysconf("SC_CLK_TCK") * os.cpu_count()
        others = (busy_now - busy) - (ours_now - ours)
        return max(0.0, others / capacity) if capacity else 0.0


# ---------------------------------------------------------------- statistics


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}  # fmt: skip


def fmt(stat, unit, digits=1):
    if stat is None:
        return "n/a"
    unit = f" {unit}" if unit else ""
    low, high = f"{stat['min']:.{digits}f}", f"{stat['max']:.{digits}f}"
    return f"{stat['median']:.{digits}f}{unit} ({low}–{high})"


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, options):
        self.options = options
        self.size = QUICK if options.quick else FULL
        self.tmp = tempfile.mkdtemp(prefix="library-bench-")
        self.db_path = os.path.join(self.tmp, "library.db")
        self.results = {}
        self.notes = []
        self.facts = {}

    # ---------------------------------------------------------- start and stop

    def say(self, text):
        elapsed = time.monotonic() - self.began
        print(f"[{elapsed:6.1f}s] {text}", flush=True)

    def start(self):
        self.began = time.monotonic()
        redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{redis_port}"
        self.redis = Managed(
            "redis",
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp],
            None, os.path.join(self.tmp, "redis.log"),
        )  # fmt: skip
        wait_for(lambda: self.redis_ping(redis_port), 10, "redis-server")

        self.api_port = free_port()
        self.env = self.service_env(self.api_port)
        self.say(f"redis-server on {redis_port}; starting the API on {self.api_port}")
        self.api = Managed(
            "api",
            [os.path.join(BIN, "gunicorn"), "--config", "gunicorn.conf.py", "app:create_app()"],
            self.env, os.path.join(self.tmp, "api.log"),
        )  # fmt: skip
        wait_for(lambda: self.http_ok(self.api, self.api_port, "/health"), 90, "the API")

        self.floor_port = free_port()
        floor_env = {**self.env, "BIND": f"127.0.0.1:{self.floor_port}"}
        self.floor = Managed(
            "floor",
            [os.path.join(BIN, "gunicorn"), "--config", "gunicorn.conf.py",
             "bench.floor_app:app"],
            floor_env, os.path.join(self.tmp, "floor.log"),
        )  # fmt: skip

        self.worker = self.start_worker()
        from celery import Celery

        self.control = Celery("bench-control", broker=self.env["CELERY_BROKER_URL"])
        self.control.conf.broker_connection_timeout = 2
        wait_for(lambda: self.http_ok(self.floor, self.floor_port, "/plain"), 60, "the floor")
        wait_for(self.worker_ready, 90, "the Celery worker", interval=0.2)
        self.facts["api_workers"] = len(self.api.children())
        self.facts["floor_workers"] = len(self.floor.children())
        self.facts["celery_pool"] = len(self.worker.children())
        match = re.search(r"Using worker: (\S+)", self.api.log())
        self.facts["worker_class"] = match.group(1) if match else "?"
        self.say(
            f"up: gunicorn {self.facts['worker_class']} x{self.facts['api_workers']} (API), "
            f"x{self.facts['floor_workers']} (floor); celery prefork x{self.facts['celery_pool']}"
        )

    def service_env(self, port):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "FLASK_"))}
        db = "/".join(self.redis_url.split("/")[:3])
        env.update(
            DATABASE_URL=f"sqlite:///{self.db_path}",
            REDIS_URL=db,
            # set explicitly, so nothing in the environment or .env points anywhere else
            CELERY_BROKER_URL=f"{db}/1",
            CELERY_RESULT_BACKEND=f"{db}/2",
            RATELIMIT_STORAGE_URI=f"{db}/3",
            RATELIMIT_ENABLED="false",
            JWT_SECRET_KEY=secrets.token_urlsafe(48),
            JWT_ACCESS_TOKEN_EXPIRES="7200",
            MAX_PENDING_REQUESTS=str(10**9),
            # the refused-login timing sends hundreds of wrong passwords from one address:
            # each is still counted, but none is delayed
            LOGIN_FREE_FAILURES_PER_ACCOUNT=str(10**9),
            LOGIN_FREE_FAILURES_PER_ADDRESS=str(10**9),
            MAIL_BACKEND="console",
            # nothing of the run lands in the checkout's instance/ folder
            INSTANCE_PATH=os.path.join(self.tmp, "instance"),
            BIND=f"127.0.0.1:{port}",
            PYTHONUNBUFFERED="1",
        )
        return env

    def redis_ping(self, port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            if not self.redis.alive():
                raise RuntimeError(f"redis-server died:\n{self.redis.log()}") from None
            return False

    def http_ok(self, server, port, path):
        if not server.alive():
            raise RuntimeError(f"{server.name} died at start:\n{server.log()[-4000:]}")
        try:
            status, _ = Client(port, timeout=2).request("GET", path)
            return status == 200
        except OSError:
            return False

    def start_worker(self):
        return Managed(
            "worker",
            [os.path.join(BIN, "celery"), "-A", "celery_worker.celery_app", "worker",
             "--loglevel=warning"],
            self.env, os.path.join(self.tmp, "worker.log"),
        )  # fmt: skip

    def restart_worker(self):
        """A new worker, with pool children that have built nothing yet."""
        self.worker.stop()
        self.worker = self.start_worker()
        wait_for(self.worker_ready, 90, "the restarted Celery worker", interval=0.2)

    def api_rss_mb(self):
        """The resident memory of the API: the sum over gunicorn's workers."""
        return sum(proc_status(pid, "VmRSS") for pid in self.api.children()) / 1024

    def worker_ready(self):
        if not self.worker.alive():
            raise RuntimeError(f"the worker died at start:\n{self.worker.log()[-4000:]}")
        replies = self.control.control.ping(timeout=0.5)
        if replies:
            self.worker_name = list(replies[0])
        return bool(replies)

    def stop(self):
        for server in reversed(Managed.started):
            server.stop()
        left = [pid for server in Managed.started for pid in group_members(server.pid)]
        if left:
            print(f"warning: processes left behind: {left}", file=sys.stderr)
        if self.options.keep:
            print(f"logs and database kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------- helpers

    def db(self):
        conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    def pause_worker(self):
        replies = self.control.control.cancel_consumer(
            "celery", reply=True, timeout=5, destination=self.worker_name, limit=1
        )
        if not replies:
            raise RuntimeError("the worker did not answer cancel_consumer")

    def resume_worker(self):
        replies = self.control.control.add_consumer(
            "celery", reply=True, timeout=5, destination=self.worker_name, limit=1
        )
        if not replies:
            raise RuntimeError("the worker did not answer add_consumer")

    def wait_worker_idle(self, timeout=600):
        def idle():
            inspect = self.control.control.inspect(timeout=2, destination=self.worker_name, limit=1)
            active = inspect.active() or {}
            return active and not any(active.values())

        wait_for(idle, timeout, "the worker to finish its tasks", interval=0.1)

    def auth(self, token):
        return {"Authorization": f"Bearer {token}"}

    # ---------------------------------------------------------- users and data

    def create_users(self):
        size = self.size
        count = size["users"] + 3
        names = [f"bench{i:05d}" for i in range(count)]

        def register(i):
            body = {"username": names[i], "email": f"{names[i]}@example.org", "password": PASSWORD}
            return "POST", "/register", {}, body

        result = run_load(self.api_port, register, size["concurrency"], count=count,
                          keep_bodies=201)  # fmt: skip
        self.check(result, 201, count, "POST /register")
        self.results["register_rate"] = [result.rate(201)]
        ids = {body["username"]: body["id"] for body in result.bodies}
        self.user_ids = [ids[name] for name in names]

        def login(i):
            return "POST", "/login", {}, {"username": names[i], "password": PASSWORD}

        result = run_load(self.api_port, login, size["concurrency"], count=count, keep_bodies=200)
        self.check(result, 200, count, "POST /login")
        self.results["login_rate"] = [result.rate(200)]
        # bodies come back in completion order; map each token to its user via /me-free JWT
        tokens = {}
        for body in result.bodies:
            payload = body["access_token"].split(".")[1]
            sub = json.loads(b64url(payload))["sub"]
            tokens[int(sub)] = body["access_token"]
        self.tokens = [tokens[user_id] for user_id in self.user_ids]
        # as if each had followed the verification link: the library mails verified
        # addresses only, and a report counts as drained once it is mailed
        conn = self.db()
        conn.execute(
            "UPDATE user SET email_verified_at = ? WHERE email_verified_at IS NULL",
            (dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),),
        )
        conn.close()
        self.small_users = list(range(size["users"]))
        self.big = {"report": count - 3, "memory_small": count - 2, "memory_large": count - 1}
        self.say(f"registered and logged in {count} users")

    def seed(self):
        """Write book requests straight into the database, as years of use would leave them."""
        size = self.size
        conn = self.db()
        started = time.perf_counter()
        conn.execute("BEGIN")
        for index in self.small_users:
            insert_rows(conn, self.user_ids[index], size["rows_per_user"])
        rows = size["rows_per_user"] * len(self.small_users)
        plan = [
            (self.big["report"], size["report_rows"]),
            (self.big["memory_small"], size["memory_rows"][0]),
            (self.big["memory_large"], size["memory_rows"][1]),
        ]
        for index, count in plan:
            insert_rows(conn, self.user_ids[index], count)
            rows += count
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        self.say(f"seeded {rows:,} book requests in {time.perf_counter() - started:.1f}s")

    def check(self, result, status, expected, what):
        got = result.statuses.get(status, 0)
        if got != expected or result.errors:
            raise RuntimeError(
                f"{what}: {got}/{expected} answered {status}; statuses {dict(result.statuses)}, "
                f"errors {dict(result.errors)}; API log tail:\n{self.api.log()[-3000:]}"
            )

    # ---------------------------------------------------------- figure 5: argon2id

    def measure_login_cost(self):
        """Sequential logins (one client) against argon2 verify in this process, same params."""
        from argon2 import PasswordHasher

        conn = self.db()
        stored = conn.execute(
            "SELECT password_hash FROM user WHERE id = ?", (self.user_ids[0],)
        ).fetchone()[0]
        conn.close()
        params = parse_argon2(stored)
        self.facts["argon2"] = params
        hasher = PasswordHasher(
            time_cost=params["t"], memory_cost=params["m"], parallelism=params["p"]
        )
        client = Client(self.api_port)
        logins, verifies, hashes = [], [], []
        for run in range(self.size["rounds"]):
            users = self.small_users[run * self.size["logins"] : (run + 1) * self.size["logins"]]
            began = time.perf_counter()
            for index in users:
                body = {"username": f"bench{index:05d}", "password": PASSWORD}
                status, _ = client.request("POST", "/login", body=body)
                assert status == 200, status
            logins.append((time.perf_counter() - began) / len(users) * 1000)
            began = time.perf_counter()
            for _ in users:
                hasher.verify(stored, PASSWORD)
            verifies.append((time.perf_counter() - began) / len(users) * 1000)
            began = time.perf_counter()
            for _ in users:
                hasher.hash(PASSWORD)
            hashes.append((time.perf_counter() - began) / len(users) * 1000)
        client.close()
        self.results["login_ms"] = logins
        self.results["argon2_verify_ms"] = verifies
        self.results["argon2_hash_ms"] = hashes
        self.say(
            f"login {statistics.median(logins):.1f} ms, argon2 verify "
            f"{statistics.median(verifies):.1f} ms ({params['text']})"
        )

    # ---------------------------------------------------------- figures 1 and 4

    def me_request(self, i):
        users = self.small_users
        return "GET", "/me", self.auth(self.tokens[users[i % len(users)]]), None

    def export_request(self, i):
        return "GET", "/export-report", self.auth(self.tokens[self.small_users[i]]), None

    def warm_up(self):
        """Let every gunicorn worker import, connect and cache before anything is timed."""
        n = 200
        floor_auth = self.auth(self.tokens[0])
        run_load(self.api_port, self.me_request, 32, count=n)
        run_load(self.api_port, lambda i: ("GET", "/requests", floor_auth, None), 32, count=n)
        run_load(self.floor_port, lambda i: ("GET", "/protected", floor_auth, None), 32, count=n)
        run_load(self.floor_port, lambda i: ("GET", "/plain", {}, None), 32, count=n)
        # one small export round, drained, so the export path and the worker are warm too
        self.pause_worker()
        result = run_load(self.api_port, self.export_request, 32, count=64)
        self.check(result, 202, 64, "warm-up exports")
        self.resume_worker()
        self.wait_drained()
        self.say("warmed up")

    def wait_drained(self, timeout=600):
        conn = self.db()

        def drained():
            return not conn.execute(
                "SELECT count(*) FROM report WHERE status IN (:queued, :running) "
                "OR (status = :done AND emailed_at IS NULL)",
                STATUS_PARAMS,
            ).fetchone()[0]

        wait_for(drained, timeout, "the reports to drain", interval=0.02)
        failed = conn.execute(
            "SELECT count(*) FROM report WHERE status = :failed", STATUS_PARAMS
        ).fetchone()[0]
        conn.close()
        if failed:
            tail = self.worker.log()[-3000:]
            raise RuntimeError(f"{failed} report(s) failed; worker log:\n{tail}")

    def measure_exports(self):
        size = self.size
        n = len(self.small_users)
        for field in ("me_p50", "me_p99", "export_p50", "export_p99", "drain_rate",
                      "me_rate", "export_rate"):  # fmt: skip
            self.results[field] = []
        self.results["export_statuses"] = []
        for round_no in range(size["rounds"]):
            # the worker waits while the API is timed: the figure is the web request's own cost
            self.pause_worker()
            me = run_load(self.api_port, self.me_request, size["concurrency"], count=n)
            self.check(me, 200, n, "GET /me")
            exports = run_load(self.api_port, self.export_request, size["concurrency"], count=n)
            self.results["export_statuses"].append(dict(exports.statuses))
            accepted = exports.of(202)
            if len(accepted) < n:
                self.notes.append(
                    f"round {round_no + 1}: {len(accepted)}/{n} exports answered 202 "
                    f"({dict(exports.statuses)}); only the 202s are counted"
                )
            me_latency = me.of(200)
            self.results["me_p50"].append(percentile(me_latency, 0.50) * 1000)
            self.results["me_p99"].append(percentile(me_latency, 0.99) * 1000)
            self.results["export_p50"].append(percentile(accepted, 0.50) * 1000)
            self.results["export_p99"].append(percentile(accepted, 0.99) * 1000)
            self.results["me_rate"].append(me.rate(200))
            self.results["export_rate"].append(exports.rate(202))
            # figure 4: the queue is full; time one worker (default concurrency) emptying it
            began = time.perf_counter()
            self.resume_worker()
            self.wait_drained()
            self.results["drain_rate"].append(len(accepted) / (time.perf_counter() - began))
            self.say(
                f"round {round_no + 1}: /me p50 {self.results['me_p50'][-1]:.1f} ms "
                f"p99 {self.results['me_p99'][-1]:.1f} ms; export p50 "
                f"{self.results['export_p50'][-1]:.1f} ms p99 "
                f"{self.results['export_p99'][-1]:.1f} ms; drained "
                f"{self.results['drain_rate'][-1]:.1f} reports/s"
            )

    # ---------------------------------------------------------- figure 3

    def measure_throughput(self):
        size = self.size
        users = self.small_users
        seconds, clients = size["throughput_seconds"], size["throughput_concurrency"]

        def token(i):
            return self.auth(self.tokens[users[i % len(users)]])

        body = {"book_name": "The Bench Book", "author": "A. Writer", "note": "bench"}
        floor, api = (self.floor, self.floor_port), (self.api, self.api_port)
        cases = {
            "floor_plain": (floor, lambda i: ("GET", "/plain", {}, None), 200),
            "floor_jwt": (floor, lambda i: ("GET", "/protected", token(i), None), 200),
            "me": (api, lambda i: ("GET", "/me", token(i), None), 200),
            "list": (api, lambda i: ("GET", "/requests?per_page=20", token(i), None), 200),
            "create": (api, lambda i: ("POST", "/requests", token(i), body), 201),
        }  # fmt: skip
        for name in cases:
            self.results[f"rps_{name}"] = []
            self.results[f"cpu_ms_{name}"] = []
        hz = os.sysconf("SC_CLK_TCK")
        for round_no in range(size["rounds"]):
            line = []
            for name, ((server, port), make, ok) in cases.items():
                # the server's own CPU per request: steadier than req/s on a shared machine
                workers = server.children()
                cpu_before = sum(process_jiffies(pid) for pid in workers)
                result = run_load(port, make, clients, duration=seconds)
                cpu = sum(process_jiffies(pid) for pid in workers) - cpu_before
                answered = sum(result.statuses.values())
                self.results[f"cpu_ms_{name}"].append(1000 * cpu / hz / max(answered, 1))
                self.results[f"rps_{name}"].append(result.rate(ok))
                others = {s: c for s, c in result.statuses.items() if s != ok}
                if others or result.errors:
                    self.notes.append(
                        f"throughput round {round_no + 1}, {name}: besides {ok} also "
                        f"{others} {dict(result.errors)}"
                    )
                line.append(f"{name} {result.rate(ok):.0f}/s")
            self.say(f"throughput round {round_no + 1}: " + ", ".join(line))

    # ---------------------------------------------------------- figure 2

    def build_report(self, user_index):
        """Export as the user, poll until done; return (build seconds, report json)."""
        client = Client(self.api_port)
        headers = self.auth(self.tokens[user_index])
        status, data = client.request("GET", "/export-report", headers)
        if status != 202:
            raise RuntimeError(f"export answered {status}: {data[:500]!r}")
        report_id = json.loads(data)["id"]

        def done():
            status, data = client.request("GET", f"/reports/{report_id}", headers)
            report = json.loads(data)
            if report["status"] == "failed":
                raise RuntimeError(f"report failed: {report['error']}")
            return report if report["status"] == "done" else None

        report = wait_for(done, 900, f"report {report_id}", interval=0.1)
        client.close()
        started = dt.datetime.fromisoformat(report["started_at"])
        finished = dt.datetime.fromisoformat(report["finished_at"])
        return (finished - started).total_seconds(), report

    def floor_scan(self, user_index, out_path):
        """The floor: plain sqlite3 reading the same rows, csv writing them to a file."""
        began = time.perf_counter()
        conn = sqlite3.connect(self.db_path)
        with open(out_path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(
                conn.execute(
                    f"SELECT {', '.join(CSV_COLUMNS)} FROM book_request "
                    "WHERE user_id = ? ORDER BY id",
                    (self.user_ids[user_index],),
                )
            )
        conn.close()
        return time.perf_counter() - began

    def measure_reports(self):
        size = self.size
        self.results["build_s"], self.results["floor_scan_s"] = [], []
        out_path = os.path.join(self.tmp, "floor.csv")
        for round_no in range(size["rounds"]):
            self.wait_worker_idle()
            seconds, report = self.build_report(self.big["report"])
            if report["row_count"] != size["report_rows"]:
                raise RuntimeError(f"report has {report['row_count']} rows")
            self.results["build_s"].append(seconds)
            self.wait_worker_idle()
            self.results["floor_scan_s"].append(self.floor_scan(self.big["report"], out_path))
            self.say(
                f"report round {round_no + 1}: {size['report_rows']:,} rows built in "
                f"{seconds:.2f}s; sqlite3+csv floor {self.results['floor_scan_s'][-1]:.2f}s"
            )
        self.facts["floor_csv_bytes"] = os.path.getsize(out_path)
        self.facts["report_sizes"] = self.stored_sizes(report["id"])

    def stored_sizes(self, report_id):
        conn = self.db()
        sizes = json.loads(
            conn.execute("SELECT sizes FROM report WHERE id = ?", (report_id,)).fetchone()[0]
        )
        stored = conn.execute(
            "SELECT count(*), sum(length(data)) FROM report_chunk WHERE report_id = ?",
            (report_id,),
        ).fetchone()
        conn.close()
        return {**sizes, "chunks": stored[0], "compressed": stored[1]}

    # ---------------------------------------------------------- resource budget

    def worker_cpu_seconds(self):
        pids = [self.worker.pid, *self.worker.children()]
        return sum(process_jiffies(pid) for pid in pids) / os.sysconf("SC_CLK_TCK")

    def measure_budget(self):
        """What one exported row costs: database bytes stored, and worker CPU (build and mail)."""
        rows = self.size["report_rows"]
        self.results["budget_db_bytes"], self.results["budget_worker_us"] = [], []
        for _ in range(self.size["rounds"]):
            self.wait_worker_idle()
            cpu = self.worker_cpu_seconds()
            _, report = self.build_report(self.big["report"])
            self.wait_worker_idle()
            cpu = self.worker_cpu_seconds() - cpu
            stored = self.stored_sizes(report["id"])["compressed"]
            self.results["budget_db_bytes"].append(stored / rows)
            self.results["budget_worker_us"].append(cpu / rows * 1e6)
        self.say(
            f"budget: {self.results['budget_db_bytes'][-1]:.1f} database bytes and "
            f"{self.results['budget_worker_us'][-1]:.1f} µs of worker CPU per exported row"
        )

    def measure_memory(self):
        small, large = self.size["memory_rows"]
        keys = {small: "peak_small_mb", large: "peak_large_mb"}
        for key in keys.values():
            self.results[key] = []
            self.results[key.replace("peak", "rise")] = []
        self.results["large_build_s"] = []
        for round_no in range(self.size["rounds"]):
            for rows, index in ((small, self.big["memory_small"]),
                                (large, self.big["memory_large"])):  # fmt: skip
                # fresh children for each size: a child that built a large report before
                # starts already grown, and would hide the growth this figure is about
                self.restart_worker()
                self.wait_worker_idle()
                children = self.worker.children()
                before = {}
                for pid in children:
                    reset_peak_rss(pid)
                    before[pid] = proc_status(pid, "VmRSS")
                seconds, _ = self.build_report(index)
                # the mail goes out after finished_at: the peak counts the whole task
                self.wait_worker_idle()
                grown = {pid: proc_status(pid, "VmHWM") - before[pid] for pid in children}
                busiest = max(grown, key=grown.get)
                self.results[keys[rows]].append(proc_status(busiest, "VmHWM") / 1024)
                # how far the task took the process above where it started
                self.results[keys[rows].replace("peak", "rise")].append(grown[busiest] / 1024)
                if rows == large:
                    self.results["large_build_s"].append(seconds)
            self.say(
                f"memory round {round_no + 1}: peak RSS {self.results[keys[small]][-1]:.1f} MB "
                f"at {small:,} rows, {self.results[keys[large]][-1]:.1f} MB at {large:,} rows "
                f"(built in {self.results['large_build_s'][-1]:.1f}s)"
            )

    # ---------------------------------------------------------- timing claims

    def measure_login_timing(self):
        """Wrong password against unknown user, alternated, many samples of each.

        Both must verify an argon2 hash, so that the time does not tell which usernames exist.
        """
        client = Client(self.api_port)
        samples = {"wrong": [], "unknown": []}
        for n in range(self.size["timing_samples"]):
            for kind, username in (("wrong", f"bench{self.small_users[n % 10]:05d}"),
                                   ("unknown", f"nobody{n:05d}")):  # fmt: skip
                began = time.perf_counter()
                status, _ = client.request(
                    "POST", "/login", body={"username": username, "password": "wrong-pass"}
                )
                samples[kind].append((time.perf_counter() - began) * 1000)
                assert status == 401, status
        client.close()
        self.results["login_wrong_ms"] = samples["wrong"]
        self.results["login_unknown_ms"] = samples["unknown"]
        self.say(
            f"refused logins: wrong password {statistics.median(samples['wrong']):.1f} ms, "
            f"unknown user {statistics.median(samples['unknown']):.1f} ms (medians)"
        )

    def measure_broker_down(self):
        """How long an export takes to answer 202 while Redis (the broker) is down."""
        self.api_rss.append(self.api_rss_mb())
        self.redis.stop()
        client = Client(self.api_port)
        seconds = []
        try:
            for n in range(self.size["broker_down_exports"]):
                auth = self.auth(self.tokens[self.small_users[n]])
                began = time.perf_counter()
                status, _ = client.request("POST", "/export-report", headers=auth)
                seconds.append(time.perf_counter() - began)
                assert status == 202, status
        finally:
            client.close()
        self.results["broker_down_export_s"] = seconds
        self.say(f"export with the broker down: {statistics.median(seconds):.2f}s (median)")

    # ---------------------------------------------------------- run it all

    def run(self):
        self.start()
        self.cpu = CpuMeter(lambda: [server.pid for server in Managed.started])
        self.facts["background"] = {}
        steps = (
            ("users", self.create_users),
            ("seed", self.seed),
            ("login cost", self.measure_login_cost),
            ("warm-up", self.warm_up),
            ("exports and drain", self.measure_exports),
            ("throughput", self.measure_throughput),
            ("report build", self.measure_reports),
            ("resource budget", self.measure_budget),
            ("worker memory", self.measure_memory),
            ("login timing", self.measure_login_timing),
            # last: the broker stays down until the end
            ("broker down", self.measure_broker_down),
        )
        self.api_rss = []
        for name, step in steps:
            step()
            if name == "warm-up":
                self.api_rss.append(self.api_rss_mb())
            share = self.cpu.background_share()
            self.facts["background"][name] = share
            if share > 0.05:
                self.say(f"warning: other processes used {share:.0%} of the CPUs during {name}")
        self.facts["duration"] = time.monotonic() - self.began
        self.facts["api_rss_mb"] = self.api_rss
        if self.options.quick:
            self.notes.append(
                f"--quick cannot show memory growth past {self.size['memory_rows'][1]:,} rows "
                f"(the full run goes to {FULL['memory_rows'][1]:,}), and takes "
                f"{self.size['timing_samples']} samples of each refused login instead of "
                f"{FULL['timing_samples']}: run without --quick for those figures."
            )


# ---------------------------------------------------------------- data


def b64url(text):
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_argon2(stored):
    """Read the parameters out of a stored PHC string: $argon2id$v=19$m=19456,t=2,p=1$..."""
    parts = stored.split("$")
    params = dict(item.split("=") for item in parts[3].split(","))
    salt_len = len(b64url(parts[4].replace("+", "-").replace("/", "_")))
    hash_len = len(b64url(parts[5].replace("+", "-").replace("/", "_")))
    result = {k: int(v) for k, v in params.items()}
    result["text"] = (
        f"{parts[1]} v={parts[2].split('=')[1]}, m={result['m']} KiB, t={result['t']}, "
        f"p={result['p']}, salt {salt_len} B, hash {hash_len} B"
    )
    return result


def insert_rows(conn, user_id, count):
    """Insert `count` book requests for `user_id`, in every status, oldest first.

    One INSERT ... SELECT over a recursive counter, so SQLite makes the rows itself; the
    times are in the form SQLAlchemy stores them (naive UTC, with microseconds).
    """
    span = 5 * 365 * 86400
    conn.execute(
        """
        WITH RECURSIVE seq(i) AS (
            SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :count
        ),
        numbered AS (
            SELECT i,
                   CASE i % 5 WHEN 0 THEN :pending WHEN 1 THEN :approved
                        WHEN 2 THEN :rejected WHEN 3 THEN :cancelled ELSE :returned END
                       AS status,
                   CAST(strftime('%s', '2020-01-01') AS INTEGER) + i * :step AS t,
                   printf('.%06d', (i * 7919) % 1000000) AS micro
            FROM seq
        )
        INSERT INTO book_request (user_id, book_name, author, note, status, request_date,
                                  decided_at, decided_by, reason, due_date, returned_at)
        SELECT :user_id,
               -- now and then a title a spreadsheet would run as a formula
               CASE WHEN i % 997 = 0 THEN '=Title ' || i
                    ELSE 'The Collected Works, volume ' || i END,
               CASE WHEN i % 7 = 0 THEN NULL ELSE 'Author Number ' || (i % 1000) END,
               CASE WHEN i % 3 = 0 THEN 'please, the hardback edition' END,
               status,
               datetime(t, 'unixepoch') || micro,
               CASE WHEN status != :pending THEN datetime(t + 86400, 'unixepoch') || micro END,
               CASE WHEN status != :pending THEN :user_id END,
               CASE WHEN status = :rejected THEN 'not in the collection' END,
               CASE WHEN status IN (:approved, :returned)
                    THEN datetime(t + 15 * 86400, 'unixepoch') || micro END,
               CASE WHEN status = :returned
                    THEN datetime(t + 13 * 86400, 'unixepoch') || micro END
        FROM numbered
        """,
        {
            **STATUS_PARAMS,
            "count": count,
            "step": max(1, span // max(count, 1)),
            "user_id": user_id,
        },
    )


# ---------------------------------------------------------------- report


def machine():
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("gunicorn", "Flask", "SQLAlchemy", "celery", "argon2-cffi"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "versions": versions,
        "git": git_state(),
    }


def git_state():
    """Return the commit measured, and the core files that differ from it."""

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("log", "-1", "--format=%h %s") or "unknown"
    changed = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if not line[3:].startswith("bench/")
    ]  # fmt: skip
    return {"head": head, "changed": changed}


def background_now(seconds=2.0):
    """Return the share of all CPUs busy right now (nothing of ours runs yet)."""
    meter = CpuMeter(lambda: [])
    time.sleep(seconds)
    return meter.background_share()


def rows_of(results, facts, size):
    """Return the table: (figure, value, floor, ratio, target, verdict).

    A ratio is taken within each run (value and floor measured back to back) and the table
    shows the median of those ratios, so slow drift of the machine cancels out.
    """
    r = {key: summary(values) for key, values in results.items() if is_series(values)}
    table = []

    def ratio(a, b):
        return summary([x / y for x, y in zip(results[a], results[b], strict=True) if y])

    def times(stat):
        return f"{stat['median']:.2f}x ({stat['min']:.2f}–{stat['max']:.2f})"

    def share(stat):
        return f"{stat['median']:.0%} ({stat['min']:.0%}–{stat['max']:.0%})"

    def verdict(stat, limit, at_most=True):
        value = stat["median"]
        return "PASS" if (value <= limit if at_most else value >= limit) else "**FAIL**"

    c = size["concurrency"]
    for p in ("p50", "p99"):
        x = ratio(f"export_{p}", f"me_{p}")
        table.append((
            f"1. `/export-report` {p}, {c} clients",
            fmt(r[f"export_{p}"], "ms"), "`GET /me` " + fmt(r[f"me_{p}"], "ms"),
            times(x), "≤ 2x", verdict(x, 2),
        ))  # fmt: skip
    x = ratio("build_s", "floor_scan_s")
    table.append((
        f"2a. report build, {size['report_rows']:,} rows, HTML+CSV stored",
        fmt(r["build_s"], "s", 2), "sqlite3+csv scan " + fmt(r["floor_scan_s"], "s", 2),
        times(x), "≤ 3x", verdict(x, 3),
    ))  # fmt: skip
    small, large = size["memory_rows"]
    growth = summary([b - a for a, b in zip(results["peak_small_mb"], results["peak_large_mb"],
                                            strict=True)])  # fmt: skip
    table.append((
        f"2b. worker peak RSS growth, {small:,} → {large:,} rows",
        fmt(growth, "MB"),
        f"peak {fmt(r['peak_small_mb'], 'MB')} → {fmt(r['peak_large_mb'], 'MB')}",
        "–", "≤ 50 MB", verdict(growth, 50),
    ))  # fmt: skip
    tc = size["throughput_concurrency"]
    floor = "`@jwt_required()` " + fmt(r["rps_floor_jwt"], "req/s", 0)
    for key, label, target in (("list", "`GET /requests` (page of 20)", 0.5),
                               ("create", "`POST /requests`", 0.4)):  # fmt: skip
        x = ratio(f"rps_{key}", "rps_floor_jwt")
        table.append((
            f"3. {label}, {tc} clients", fmt(r[f"rps_{key}"], "req/s", 0), floor,
            share(x), f"≥ {target:.0%}", verdict(x, target, at_most=False),
        ))  # fmt: skip
    table.append((
        f"(3.) `GET /me`, {tc} clients", fmt(r["rps_me"], "req/s", 0), floor,
        share(ratio("rps_me", "rps_floor_jwt")), "–", "info",
    ))  # fmt: skip
    table.append((
        "(3.) floor `@jwt_required()` route", fmt(r["rps_floor_jwt"], "req/s", 0),
        "plain JSON route " + fmt(r["rps_floor_plain"], "req/s", 0),
        share(ratio("rps_floor_jwt", "rps_floor_plain")), "–", "info",
    ))  # fmt: skip
    table.append((
        f"4. drain: {size['rows_per_user']}-row reports done per second, one worker "
        f"(prefork, concurrency {facts['celery_pool']})",
        fmt(r["drain_rate"], "reports/s"), "–", "–", "–", "info",
    ))  # fmt: skip
    table.append((
        f"5. `POST /login`, one client; {facts['argon2']['text']}",
        fmt(r["login_ms"], "ms"), "argon2 verify in-process " + fmt(r["argon2_verify_ms"], "ms"),
        times(ratio("login_ms", "argon2_verify_ms")), "–", "info",
    ))  # fmt: skip
    for key, label, unit, budget in BUDGETS:
        table.append((
            f"6. budget: {label} per exported row ({size['report_rows']:,}-row report)",
            fmt(r[key], unit, 1), "–", "–", f"≤ {budget} {unit}", verdict(r[key], budget),
        ))  # fmt: skip
    return table


def is_series(values):
    return isinstance(values, list) and values and isinstance(values[0], (int, float))


def render(table, results, facts, size, command, info, notes):
    r = {key: summary(values) for key, values in results.items() if is_series(values)}
    background = ", ".join(f"{name} {value:.0%}" for name, value in facts["background"].items())
    lines = [
        f"# Benchmark results ({'quick' if size is QUICK else 'full'} run)",
        "",
        f"- date: {facts['date']}",
        f"- command: `{command}`",
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- code measured: commit {info['git']['head']}"
        + (
            f", with uncommitted changes to {', '.join(info['git']['changed'])}"
            if info["git"]["changed"]
            else ", no uncommitted changes"
        ),
        f"- API: gunicorn.conf.py, worker class `{facts['worker_class']}`, "
        f"{facts['api_workers']} workers (floor app: same settings, {facts['floor_workers']} "
        f"workers); Celery worker: prefork, concurrency {facts['celery_pool']}",
        f"- database: SQLite (WAL) in a temporary folder; private redis-server; everything on "
        f"127.0.0.1; run took {facts['duration']:.0f} s",
        f"- every figure: median of {size['rounds']} runs, (min–max) in brackets; a ratio is "
        "the median of the per-run ratios",
        f"- CPU used by other processes on the machine: {facts['background_before']:.0%} just "
        f"before the run; during each phase: {background}",
        "",
        "| figure | value | floor | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    sizes = facts.get("report_sizes", {})
    lines += [
        "",
        "Other numbers from the same run:",
        "",
        f"- registration at {size['concurrency']} clients: {fmt(r['register_rate'], '/s')}; "
        f"login at {size['concurrency']} clients: {fmt(r['login_rate'], '/s')}; "
        f"argon2 hash in-process: {fmt(r['argon2_hash_ms'], 'ms')}",
        "- server CPU per request in the throughput runs (all gunicorn workers, ms): "
        + ", ".join(
            f"{label} {fmt(r[f'cpu_ms_{key}'], '', 2)}"
            for key, label in (
                ("floor_plain", "floor plain"),
                ("floor_jwt", "floor `@jwt_required()`"),
                ("me", "`GET /me`"),
                ("list", "`GET /requests`"),
                ("create", "`POST /requests`"),
            )
        ),
        f"- throughput while the exports were timed: `/me` {fmt(r['me_rate'], 'req/s', 0)}, "
        f"`/export-report` {fmt(r['export_rate'], 'req/s', 0)} (202s only)",
        f"- {size['report_rows']:,}-row report: HTML {sizes.get('html', 0) / 1e6:.1f} MB and "
        f"CSV {sizes.get('csv', 0) / 1e6:.1f} MB, stored as {sizes.get('chunks')} chunks, "
        f"{(sizes.get('compressed') or 0) / 1e6:.1f} MB compressed; floor CSV "
        f"{facts.get('floor_csv_bytes', 0) / 1e6:.1f} MB",
        f"- {size['memory_rows'][1]:,}-row report build time: {fmt(r['large_build_s'], 's')}",
        f"- worker child's peak RSS above its RSS before the task (a fresh worker for each "
        f"size): {fmt(r['rise_small_mb'], 'MB')} for {size['memory_rows'][0]:,} rows, "
        f"{fmt(r['rise_large_mb'], 'MB')} for {size['memory_rows'][1]:,} rows; the task "
        "includes the mail, which holds the files in memory only while they are small enough "
        "to attach (MAIL_MAX_ATTACHMENT_BYTES), so a small report can peak above a large one",
        f"- refused logins, {len(results['login_wrong_ms'])} of each kind alternated: "
        f"wrong password {fmt(r['login_wrong_ms'], 'ms')}, "
        f"unknown user {fmt(r['login_unknown_ms'], 'ms')} "
        f"(median ratio unknown/wrong "
        f"{r['login_unknown_ms']['median'] / r['login_wrong_ms']['median']:.2f};"
        f" an unhashed shortcut for unknown users would be ~0.05)",
        f"- `POST /export-report` with Redis down, {len(results['broker_down_export_s'])} exports: "
        f"{fmt(r['broker_down_export_s'], 's', 2)} to the 202 (the report waits for the sweeper)",
        f"- API memory (all gunicorn workers): {facts['api_rss_mb'][0]:.1f} MB after the "
        f"warm-up, {facts['api_rss_mb'][-1]:.1f} MB after every load of the run "
        f"({facts['api_rss_mb'][-1] / facts['api_rss_mb'][0] - 1:+.1%})",
    ]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run, under 3 minutes")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to this long for other processes to leave the CPUs idle",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="only the scale section: list routes at 10k and 1M rows (bench/scale.py)",
    )
    parser.add_argument(
        "--with-10m", action="store_true", help="with --scale: also 10M rows on PostgreSQL"
    )
    parser.add_argument(
        "--scale-rounds",
        type=int,
        default=2,
        help="with --scale: time every database this many times, keep each cell's lowest",
    )
    options = parser.parse_args()
    if options.scale:
        import scale

        return scale.main(with_10m=options.with_10m, rounds=options.scale_rounds)
    command = ".venv/bin/python bench/run.py" + (" --quick" if options.quick else "")
    info = machine()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{date}; {info['nproc']} CPUs ({info['cpu']}); Python {info['python']}")
    print(f"code: {info['git']['head']}; uncommitted: {', '.join(info['git']['changed']) or '-'}")
    deadline = time.monotonic() + options.wait_quiet
    background = background_now()
    while background > 0.1 and time.monotonic() < deadline:
        print(f"other processes use {background:.0%} of the CPUs; waiting for quiet")
        background = background_now(5)
    if background > 0.1:
        print(f"warning: other processes use {background:.0%} of the CPUs: figures will be noisy")
    bench = Bench(options)
    bench.facts["background_before"] = background

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        bench.run()
    except BaseException:
        print(f"\nthe benchmark stopped; logs in {bench.tmp}", file=sys.stderr)
        options.keep = True
        raise
    finally:
        bench.stop()
    bench.facts["date"] = date
    table = rows_of(bench.results, bench.facts, bench.size)
    text = render(table, bench.results, bench.facts, bench.size, command, info, bench.notes)
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    path = os.path.join(BENCH, "results", "latest.md")
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    with open(os.path.join(BENCH, "results", "latest.json"), "w", encoding="utf-8") as out:
        json.dump({"results": bench.results, "facts": bench.facts, "machine": info,
                   "command": command}, out, indent=1, default=str)  # fmt: skip
    print()
    print(text)
    print(f"written to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
