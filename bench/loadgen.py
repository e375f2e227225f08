"""A small closed-loop HTTP load generator: N client threads, each one request at a time.

Every client keeps its connection while the server allows it (gunicorn's sync workers close
each one, so then every request includes its TCP connect, for the service and the floor alike).
Latency is measured per request, from sending to the last body byte, in the client.
"""

import http.client
import json
import threading
import time
from collections import Counter


class LoadResult:
    """Latencies (seconds) per status, and the wall time the run took."""

    def __init__(self):
        self.latencies = {}
        self.statuses = Counter()
        self.errors = Counter()
        self.elapsed = 0.0
        self.bodies = []

    def add(self, status, latency):
        self.statuses[status] += 1
        self.latencies.setdefault(status, []).append(latency)

    def of(self, *statuses):
        values = []
        for status in statuses:
            values += self.latencies.get(status, [])
        return sorted(values)

    def rate(self, *statuses):
        return len(self.of(*statuses)) / self.elapsed if self.elapsed else 0.0


def percentile(sorted_values, fraction):
    """Return the nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(fraction * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Client:
    """One connection to 127.0.0.1:port, reopened whenever the server closed it."""

    def __init__(self, port, timeout=60):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, headers=None, body=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                # a kept connection the server had already closed: retry once on a new one
                self.close()
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, data
        raise RuntimeError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_load(port, make_request, concurrency, count=None, duration=None, keep_bodies=None):
    """Run `concurrency` clients until `count` requests were sent or `duration` seconds passed.

    `make_request(i)` returns (method, path, headers, body) for the i-th request overall.
    `keep_bodies` (a status) keeps the response bodies with that status, parsed as JSON.
    """
    result = LoadResult()
    lock = threading.Lock()
    counter = iter(range(count if count is not None else 10**12))
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [None]

    def next_index():
        with lock:
            return next(counter, None)

    def client_loop():
        client = Client(port)
        local = []
        start_gate.wait()
        while True:
            if deadline[0] is not None and time.perf_counter() >= deadline[0]:
                break
            index = next_index()
            if index is None:
                break
            method, path, headers, body = make_request(index)
            sent = time.perf_counter()
            try:
                status, data = client.request(method, path, headers, body)
            except Exception as exc:  # counted, so a broken run shows instead of hanging
                with lock:
                    result.errors[type(exc).__name__] += 1
                continue
            local.append((status, time.perf_counter() - sent, data))
        client.close()
        with lock:
            for status, latency, data in local:
                result.add(status, latency)
                if keep_bodies is not None and status == keep_bodies:
                    result.bodies.append(json.loads(data))

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    if duration is not None:
        deadline[0] = began + duration
    start_gate.wait()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - began
    return result
