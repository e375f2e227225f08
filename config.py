"""Configuration defaults, read from the environment, `.env` and `instance/config.py`.

The checks that stop a start-up with weak settings live in start_checks.py.
"""

import os
import sys
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from celery.schedules import crontab
from dotenv import load_dotenv

from api_docs import ASSETS_URL, SWAGGER_UI_CONFIG

# `flask` loads .env itself; gunicorn, celery and `python app.py` do not
load_dotenv()

TRUE_WORDS = {"1", "true", "yes", "on"}
# the address `python app.py` and ./run.sh serve on; links in mail default to it
DEV_PUBLIC_BASE_URL = "http://127.0.0.1:5000"
# seconds between two looks for stranded reports (by every worker, and by beat)
SWEEP_INTERVAL = 5


def env_bool(name, default):
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in TRUE_WORDS


def env_int(name, default):
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        stop_start_up(f"{name} must be a whole number, not {value!r}.")


def stop_start_up(message):
    """Stop the process with one line on standard error, and no traceback."""
    if "gunicorn.arbiter" in sys.modules:
        # exit status 3 is gunicorn's "worker failed to boot": the master stops too,
        # instead of starting workers that die the same way, forever
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(3)
    raise SystemExit(message)


def redis_db_url(base_url, db):
    """Return `base_url` pointing at Redis database number `db`."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def database_url(instance_path):
    """Return the SQLAlchemy URL, mapping plain PostgreSQL URLs to the psycopg 3 driver."""
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{os.path.join(instance_path, 'library.db')}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def celery_config(redis_url):
    """Return the Celery settings: reliable delivery, and a publish that never hangs."""
    broker_url = os.environ.get("CELERY_BROKER_URL") or redis_db_url(redis_url, 1)
    return {
        "broker_url": broker_url,
        "result_backend": os.environ.get("CELERY_RESULT_BACKEND") or redis_db_url(redis_url, 2),
        # the Report row is the record of a job, so task results are not kept
        "task_ignore_result": True,
        # a task is acknowledged after it ran, so a dead worker's task is delivered again
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        # .delay() on a dead broker gives up within about two seconds; the sweeper retries
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.3,
            "interval_max": 0.5,
        },
        "broker_connection_timeout": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
            "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
        },
        "redis_socket_timeout": 2,
        "redis_socket_connect_timeout": 1,
        "beat_schedule": {
            "requeue-stale-reports": {
                "task": "tasks.requeue_stale_reports",
                "schedule": timedelta(seconds=env_int("SWEEP_INTERVAL_SECONDS", SWEEP_INTERVAL)),
            },
            "send-monthly-reports": {
                "task": "tasks.send_monthly_reports",
                "schedule": crontab(minute=0, hour=6, day_of_month=1),
            },
            "sweep-outbox": {
                "task": "tasks.sweep_outbox",
                "schedule": timedelta(seconds=env_int("SWEEP_INTERVAL_SECONDS", SWEEP_INTERVAL)),
            },
            "send-due-soon-nudges": {
                "task": "tasks.send_due_soon_nudges",
                "schedule": crontab(minute=0, hour=7),
            },
            "send-overdue-reminders": {
                "task": "tasks.send_overdue_reminders",
                "schedule": crontab(minute=0, hour=8),
            },
            "purge-expired-reports": {
                "task": "tasks.purge_expired_reports",
                "schedule": timedelta(seconds=env_int("REPORT_PURGE_INTERVAL_SECONDS", 3600)),
            },
            "purge-expired-sessions": {
                "task": "tasks.purge_expired_sessions",
                "schedule": crontab(minute=30, hour=3),
            },
        },
    }


def default_config(instance_path):
    """Return every setting with its default, overridden from the environment."""
    redis_url = os.environ.get("REDIS_URL") or "redis://localhost:6379"
    return {
        "SQLALCHEMY_DATABASE_URI": database_url(instance_path),
        # pool_pre_ping is set by create_app, from the URL as finally configured
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "REDIS_URL": redis_url,
        "CELERY": celery_config(redis_url),
        "AUTO_MIGRATE": env_bool("AUTO_MIGRATE", True),
        # bodies over 1 MiB are refused with 413 before they are read
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "JWT_SECRET_KEY": os.environ.get("JWT_SECRET_KEY"),
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=env_int("JWT_ACCESS_TOKEN_EXPIRES", 900)),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(
            seconds=env_int("JWT_REFRESH_TOKEN_EXPIRES", 30 * 24 * 3600)
        ),
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ALGORITHM": "HS256",
        # how many reverse proxies (nginx, a load balancer) stand in front and set X-Forwarded-*
        "TRUSTED_PROXIES": env_int("TRUSTED_PROXIES", 0),
        # RFC 8725: tokens name who issued them and for whom, and both are checked
        "JWT_ENCODE_ISSUER": os.environ.get("JWT_ISSUER") or "library-api",
        "JWT_DECODE_ISSUER": os.environ.get("JWT_ISSUER") or "library-api",
        "JWT_ENCODE_AUDIENCE": os.environ.get("JWT_AUDIENCE") or "library-api",
        "JWT_DECODE_AUDIENCE": os.environ.get("JWT_AUDIENCE") or "library-api",
        "RATELIMIT_ENABLED": env_bool("RATELIMIT_ENABLED", True),
        "RATELIMIT_STORAGE_URI": os.environ.get("RATELIMIT_STORAGE_URI")
        or redis_db_url(redis_url, 3),
        "RATELIMIT_STORAGE_OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        "RATELIMIT_HEADERS_ENABLED": True,
        # Retry-After itself is set on 429s only, by errors.py, to the wait its message names
        "RATELIMIT_HEADER_RETRY_AFTER": "X-RateLimit-Retry-After",
        # a dead Redis must not take logins down: fall back to per-process counting
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        # a flood guard on every attempt; failures meet the delays in throttle.py first
        "LOGIN_RATE_LIMIT": os.environ.get("LOGIN_RATE_LIMIT") or "60 per minute",
        "REGISTER_RATE_LIMIT": os.environ.get("REGISTER_RATE_LIMIT") or "10 per minute",
        "EXPORT_RATE_LIMIT": os.environ.get("EXPORT_RATE_LIMIT") or "30 per hour",
        # login failures: free ones, then delays doubling from 1 s up to the cap (seconds)
        "LOGIN_FREE_FAILURES_PER_ACCOUNT": env_int("LOGIN_FREE_FAILURES_PER_ACCOUNT", 5),
        "LOGIN_MAX_DELAY_PER_ACCOUNT": env_int("LOGIN_MAX_DELAY_PER_ACCOUNT", 300),
        "LOGIN_FREE_FAILURES_PER_ADDRESS": env_int("LOGIN_FREE_FAILURES_PER_ADDRESS", 20),
        "LOGIN_MAX_DELAY_PER_ADDRESS": env_int("LOGIN_MAX_DELAY_PER_ADDRESS", 60),
        # failures older than this are forgotten
        "LOGIN_FAILURE_WINDOW": env_int("LOGIN_FAILURE_WINDOW", 900),
        "VERIFY_RESEND_RATE_LIMIT": os.environ.get("VERIFY_RESEND_RATE_LIMIT") or "3 per hour",
        # how long a verification link works, and an unverified address stays reserved
        "EMAIL_VERIFY_HOURS": env_int("EMAIL_VERIFY_HOURS", 48),
        # per user; far above what a person does, far below a script's flood
        "REQUEST_RATE_LIMIT": os.environ.get("REQUEST_RATE_LIMIT") or "30 per minute; 300 per day",
        "CANCEL_RATE_LIMIT": os.environ.get("CANCEL_RATE_LIMIT") or "30 per minute; 300 per day",
        "REFRESH_RATE_LIMIT": os.environ.get("REFRESH_RATE_LIMIT") or "30 per minute",
        "LOGOUT_RATE_LIMIT": os.environ.get("LOGOUT_RATE_LIMIT") or "30 per minute",
        "LOAN_DAYS": env_int("LOAN_DAYS", 14),
        "MAX_PENDING_REQUESTS": env_int("MAX_PENDING_REQUESTS", 20),
        "MAX_RENEWALS": env_int("MAX_RENEWALS", 2),
        "RENEW_GRACE_DAYS": env_int("RENEW_GRACE_DAYS", 0),
        "DUE_SOON_DAYS": env_int("DUE_SOON_DAYS", 2),
        # where patrons reach the API: the links in mail are absolute, built from this
        "PUBLIC_BASE_URL": (os.environ.get("PUBLIC_BASE_URL") or DEV_PUBLIC_BASE_URL).rstrip("/"),
        # a queued mail not sent after this long (broker was down) is sent by the sweep
        "OUTBOX_RETRY_SECONDS": env_int("OUTBOX_RETRY_SECONDS", 60),
        # a mail claimed this long ago and not recorded sent (worker died) is sent again
        "OUTBOX_STALE_SECONDS": env_int("OUTBOX_STALE_SECONDS", 300),
        "REPORT_CHUNK_BYTES": env_int("REPORT_CHUNK_BYTES", 256 * 1024),
        "REPORT_STALE_SECONDS": env_int("REPORT_STALE_SECONDS", 20),
        "REPORT_REQUEUE_SECONDS": env_int("REPORT_REQUEUE_SECONDS", 60),
        "REPORT_MAX_ATTEMPTS": env_int("REPORT_MAX_ATTEMPTS", 5),
        "REPORT_RETENTION_DAYS": env_int("REPORT_RETENTION_DAYS", 30),
        "REPORT_MAX_PER_USER": env_int("REPORT_MAX_PER_USER", 20),
        "REPORT_PURGE_INTERVAL_SECONDS": env_int("REPORT_PURGE_INTERVAL_SECONDS", 3600),
        "SWEEP_INTERVAL_SECONDS": env_int("SWEEP_INTERVAL_SECONDS", SWEEP_INTERVAL),
        "WORKER_HEARTBEAT_SECONDS": env_int("WORKER_HEARTBEAT_SECONDS", 10),
        "MAIL_BACKEND": os.environ.get("MAIL_BACKEND") or "console",
        "MAIL_SERVER": os.environ.get("MAIL_SERVER") or "localhost",
        "MAIL_PORT": env_int("MAIL_PORT", 25),
        "MAIL_USERNAME": os.environ.get("MAIL_USERNAME"),
        "MAIL_PASSWORD": os.environ.get("MAIL_PASSWORD"),
        "MAIL_USE_TLS": env_bool("MAIL_USE_TLS", False),
        "MAIL_DEFAULT_SENDER": os.environ.get("MAIL_DEFAULT_SENDER") or "library@localhost",
        "MAIL_MAX_ATTACHMENT_BYTES": env_int("MAIL_MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024),
        "MAIL_OUTBOX": os.path.join(instance_path, "outbox"),
        "API_TITLE": "Library book requests",
        "API_VERSION": "1.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "/docs",
        # Swagger UI's assets are served by the app itself (api_docs.py): /docs works offline
        "OPENAPI_SWAGGER_UI_URL": ASSETS_URL,
        "OPENAPI_SWAGGER_UI_CONFIG": SWAGGER_UI_CONFIG,
    }
