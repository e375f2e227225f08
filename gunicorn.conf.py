"""Gunicorn settings for the API (override any of them with GUNICORN_CMD_ARGS)."""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:5000")
# two processes per core keep the cores busy while one waits on the database or Redis;
# gthread: a client holds a thread, not a whole process, and the worker's heartbeat runs on,
# so a stalled client is never taken for a hung worker (nginx.conf stops slow clients first,
# see docs/benchmarks.md)
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", 8))
timeout = 30
graceful_timeout = 10
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
if int(os.environ.get("TRUSTED_PROXIES") or 0):
    # behind a proxy the peer is the proxy: log the addresses it forwarded for, too
    access_log_format = '%(h)s for %({x-forwarded-for}i)s "%(r)s" %(s)s %(b)s %(M)sms'
# the control socket lives at one fixed path per user, so two instances would collide
control_socket_disable = True


def on_starting(server):
    """Check the settings in the master: a bad one stops gunicorn once, not every worker."""
    from start_checks import check_before_workers

    check_before_workers()
