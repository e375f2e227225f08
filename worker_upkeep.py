"""The worker's own upkeep, so that a run without beat still heals itself.

- A heartbeat: each worker keeps a Redis key with a time to live alive; `GET /health`
  counts the live keys, so it never has to broadcast to the workers.
- Recovery on connect: each time a worker connects to the broker (at start, and again
  after the broker came back) it sends a sweep that publishes every report left queued
  (the broker may have lost its message) and every one stuck running, and a sweep of the
  mail outbox (mails whose publish failed, or whose sender died).
- A timer: every task in MAINTENANCE_TASKS is sent on its interval, by one worker at a time.
"""

import logging
import os
import threading
import time

import redis
from celery import bootsteps

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "library:worker:"
LOCK_PREFIX = "library:upkeep:"

# the workers' periodic jobs: (task name, the setting that holds its interval in seconds);
# a job added here runs on every deployment, with or without beat
MAINTENANCE_TASKS = [
    ("tasks.requeue_stale_reports", "SWEEP_INTERVAL_SECONDS"),
    ("tasks.sweep_outbox", "SWEEP_INTERVAL_SECONDS"),
    ("tasks.purge_expired_reports", "REPORT_PURGE_INTERVAL_SECONDS"),
]


def redis_client(url):
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def heartbeat_ttl(config):
    # a worker that missed three beats in a row is taken for gone
    return 3 * config["WORKER_HEARTBEAT_SECONDS"]


def count_live_workers(config):
    """Return how many workers have a live heartbeat; None when Redis does not answer."""
    try:
        keys = redis_client(config["REDIS_URL"]).scan_iter(match=HEARTBEAT_PREFIX + "*")
        return sum(1 for _ in keys)
    except redis.RedisError:
        return None


class Upkeep(bootsteps.StartStopStep):
    """A worker step: a thread that beats the heartbeat and sends the maintenance tasks.

    A thread rather than the worker's event loop, so that the heartbeat goes on while a
    long task runs in `--pool=solo` too.
    """

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.stopping = threading.Event()
        self.thread = None

    def start(self, worker):
        self.celery = worker.app
        self.config = worker.app.flask_app.config
        self.redis = redis_client(self.config["REDIS_URL"])
        # the pid tells apart two workers started with the same node name
        self.key = f"{HEARTBEAT_PREFIX}{worker.hostname}:{os.getpid()}"
        self.thread = threading.Thread(target=self.run, name="worker-upkeep", daemon=True)
        self.thread.start()

    def stop(self, worker):
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        try:
            # a worker that stops cleanly is gone from /health at once, not after the TTL
            self.redis.delete(self.key)
        except redis.RedisError:
            pass

    def run(self):
        beat_every = self.config["WORKER_HEARTBEAT_SECONDS"]
        now = time.monotonic()
        next_beat = now
        # the sweep at start is sent by RecoverOnConnect; the timer's first one comes later
        due = {name: now + self.config[setting] for name, setting in MAINTENANCE_TASKS}
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self.beat()
                next_beat = now + beat_every
            for name, setting in MAINTENANCE_TASKS:
                if now >= due[name]:
                    self.send_once_per_interval(name, self.config[setting])
                    due[name] = now + self.config[setting]
            if self.stopping.wait(max(0.1, min(next_beat, *due.values()) - time.monotonic())):
                return

    def beat(self):
        try:
            self.redis.set(self.key, int(time.time()), ex=heartbeat_ttl(self.config))
        except redis.RedisError as exc:
            log.warning("worker heartbeat not written: %s", exc)

    def send_once_per_interval(self, name, interval):
        """Send the task unless another worker already did in this interval."""
        try:
            # expires a little early, so that the next round is free for whichever comes first
            mine = self.redis.set(LOCK_PREFIX + name, self.key, nx=True, px=int(interval * 900))
        except redis.RedisError:
            mine = True  # no way to agree: a second run of a maintenance task is harmless
        if not mine:
            return
        try:
            self.celery.send_task(name)
        except Exception as exc:  # kombu raises several kinds; every one means "not sent"
            log.warning("maintenance task %s not sent, the broker is unreachable: %s", name, exc)


class RecoverOnConnect(bootsteps.StartStopStep):
    """A consumer step: at every broker connection, sweep stranded reports and mails.

    The consumer restarts its steps when the broker comes back, so this also runs after
    a broker restart that lost the queued messages, with no worker restart.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, consumer):
        try:
            consumer.app.send_task("tasks.requeue_stale_reports", kwargs={"any_age": True})
            consumer.app.send_task("tasks.sweep_outbox")
        except Exception as exc:
            log.warning("recovery sweep not sent, the broker is unreachable: %s", exc)
