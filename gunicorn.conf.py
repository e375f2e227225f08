"""Gunicorn settings for the API (override any of them with GUNICORN_CMD_ARGS)."""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:5000")
# sync workers: each request is short and CPU-bound (JSON, argon2), so one process per
# request at a time is fastest; two per core keeps the cores busy while one waits on I/O
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
if int(os.environ.get("TRUSTED_PROXIES") or 0):
    # behind a proxy the peer is the proxy: log the addresses it forwarded for, too
    access_log_format = '%(h)s for %({x-forwarded-for}i)s "%(r)s" %(s)s %(b)s %(M)sms'
# the control socket lives at one fixed path per user, so two instances would collide
control_socket_disable = True
