"""Compare production starts under slow clients: gunicorn alone or behind nginx, sync or gthread.

    .venv/bin/python bench/slow_clients.py                 # about 3 minutes, loopback only
    .venv/bin/python bench/slow_clients.py --modes sync nginx --slow 50 --seconds 20

For each start it measures, against a fresh SQLite database and a private redis-server:
- throughput: authenticated `GET /me` at 32 clients for a few seconds, and CPU per request;
- under attack: SLOW connections each send a partial header, one byte a second (reopened
  when the server drops them), while one client sends `GET /me` back to back; its latencies
  are the figure, and the server log is searched for WORKER TIMEOUT.
Every loop is bounded in time and sends only to 127.0.0.1.
"""

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(1, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from loadgen import Client, percentile, run_load  # noqa: E402
from nginx_conf import render  # noqa: E402
from run import BIN, Managed, free_port, process_jiffies, wait_for  # noqa: E402

from tests.servers import SlowClients  # noqa: E402

MODES = {
    "sync": "gunicorn sync, alone",
    "gthread": "gunicorn gthread (8 threads), alone",
    "nginx": "nginx in front of gunicorn sync",
    "nginx-gthread": "nginx in front of gunicorn gthread (8 threads): the production start",
}
# gunicorn.conf.py as it is, but for the worker class
WORKER_ARGS = {"sync": "--worker-class sync", "gthread": "--worker-class gthread --threads 8"}


def probe(port, headers, seconds):
    """Send GET /me back to back for `seconds`; return (latencies of 200s, failures)."""
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client = Client(port, timeout=30)
        began = time.perf_counter()
        try:
            status, _ = client.request("GET", "/me", headers)
        except OSError:
            status = None
        client.close()
        if status == 200:
            latencies.append(time.perf_counter() - began)
        else:
            failures += 1
        time.sleep(0.05)
    return sorted(latencies), failures


class Start:
    """One production start: gunicorn (and nginx in front of it) on free ports."""

    def __init__(self, mode, tmp, base_env):
        self.mode = mode
        self.port = free_port()
        proxied = mode.startswith("nginx")
        gunicorn_port = free_port() if proxied else self.port
        env = {**base_env, "BIND": f"127.0.0.1:{gunicorn_port}"}
        env["GUNICORN_CMD_ARGS"] = WORKER_ARGS["gthread" if mode.endswith("gthread") else "sync"]
        self.api = Managed(
            f"api-{mode}",
            [os.path.join(BIN, "gunicorn"), "--config", "gunicorn.conf.py", "app:create_app()"],
            env, os.path.join(tmp, f"api-{mode}.log"),
        )  # fmt: skip
        self.proxy = None
        if proxied:
            conf = render(f"127.0.0.1:{self.port}", f"127.0.0.1:{gunicorn_port}",
                          os.path.join(tmp, "nginx"))  # fmt: skip
            self.proxy = Managed(
                "nginx", ["nginx", "-e", "stderr", "-c", conf, "-p", os.path.dirname(conf)],
                None, os.path.join(tmp, "nginx.log"),
            )  # fmt: skip
        wait_for(self.ready, 90, f"the {mode} start")

    def ready(self):
        for server in (self.api, self.proxy):
            if server is not None and not server.alive():
                raise RuntimeError(f"{server.name} died:\n{server.log()[-3000:]}")
        try:
            return Client(self.port, timeout=2).request("GET", "/health")[0] == 200
        except OSError:
            return False

    def cpu_seconds(self):
        pids = [self.api.pid, *self.api.children()]
        if self.proxy is not None:
            pids += [self.proxy.pid, *self.proxy.children()]
        return sum(process_jiffies(pid) for pid in pids) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        for server in (self.proxy, self.api):
            if server is not None:
                server.stop()


def token_for(port):
    name = f"slow{secrets.token_hex(4)}"
    body = {"username": name, "email": f"{name}@example.org", "password": "bench-password-1"}
    client = Client(port, timeout=30)
    client.request("POST", "/register", None, body)
    login = {"username": name, "password": body["password"]}
    status, data = client.request("POST", "/login", None, login)
    client.close()
    return {"Authorization": f"Bearer {json.loads(data)['access_token']}"}


def measure(mode, tmp, base_env, options):
    start = Start(mode, tmp, base_env)
    try:
        headers = token_for(start.port)
        run_load(start.port, lambda i: ("GET", "/me", headers, None), 8, duration=1)  # warm-up
        cpu_before = start.cpu_seconds()
        load = run_load(start.port, lambda i: ("GET", "/me", headers, None), 32,
                        duration=options.throughput_seconds)  # fmt: skip
        cpu = (start.cpu_seconds() - cpu_before) / max(1, len(load.of(200)))
        quiet, _ = probe(start.port, headers, 3)
        with SlowClients(start.port, options.slow) as slow:
            time.sleep(2)  # let every slow connection open first
            attacked, failures = probe(start.port, headers, options.seconds)
        log = start.api.log()
        return {
            "mode": mode,
            "rate": load.rate(200),
            "errors": sum(load.errors.values()) + sum(
                n for status, n in load.statuses.items() if status != 200),
            "cpu_ms": cpu * 1000,
            "quiet_p50": percentile(quiet, 0.5),
            "p50": percentile(attacked, 0.5),
            "p99": percentile(attacked, 0.99),
            "max": attacked[-1] if attacked else float("nan"),
            "answered": len(attacked),
            "failures": failures,
            "over_1s": sum(1 for value in attacked if value > 1.0),
            "timeouts": log.count("WORKER TIMEOUT"),
            "opened": slow.opened,
            "dropped": slow.dropped,
        }  # fmt: skip
    finally:
        start.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--slow", type=int, default=50, help="slow connections (default 50)")
    parser.add_argument("--seconds", type=float, default=40, help="attack length (default 40)")
    parser.add_argument("--throughput-seconds", type=float, default=6)
    options = parser.parse_args()
    if any(mode.startswith("nginx") for mode in options.modes) and shutil.which("nginx") is None:
        sys.exit("nginx is not installed: apt-get install nginx-light (or drop --modes nginx)")
    tmp = tempfile.mkdtemp(prefix="library-slow-")
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}"
    Managed("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                      "--save", "", "--appendonly", "no", "--dir", tmp],
            None, os.path.join(tmp, "redis.log"))  # fmt: skip
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "FLASK_"))}
    base_env.update(
        DATABASE_URL=f"sqlite:///{tmp}/library.db", REDIS_URL=redis_url,
        CELERY_BROKER_URL=f"{redis_url}/1", CELERY_RESULT_BACKEND=f"{redis_url}/2",
        RATELIMIT_STORAGE_URI=f"{redis_url}/3", RATELIMIT_ENABLED="false",
        JWT_SECRET_KEY=secrets.token_urlsafe(48), INSTANCE_PATH=os.path.join(tmp, "instance"),
        PYTHONUNBUFFERED="1",
    )  # fmt: skip
    rows = []
    try:
        for mode in options.modes:
            print(f"measuring {mode}: {MODES[mode]}", flush=True)
            rows.append(measure(mode, tmp, base_env, options))
            print(rows[-1], flush=True)
    finally:
        for server in reversed(Managed.started):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{options.slow} slow connections for {options.seconds:.0f} s\n")
    print(
        "| start | GET /me req/s, 32 clients | CPU ms/req | p50 quiet | p50 | p99 | max "
        "| answered > 1 s | failed | WORKER TIMEOUT | slow conns dropped |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {MODES[row['mode']]} | {row['rate']:.0f} | {row['cpu_ms']:.2f} "
              f"| {row['quiet_p50'] * 1000:.0f} ms | {row['p50'] * 1000:.0f} ms "
              f"| {row['p99'] * 1000:.0f} ms | {row['max'] * 1000:.0f} ms "
              f"| {row['over_1s']} of {row['answered']} | {row['failures']} "
              f"| {row['timeouts']} | {row['dropped']} |")  # fmt: skip


if __name__ == "__main__":
    main()
