"""Start-up checks: a JWT secret (generated once in development), no weak token settings,
and a warning when production mail would link to the development address."""

import logging
import os
import secrets
import sys
import time
from datetime import timedelta
from types import SimpleNamespace

from flask import Config

from config import DEV_PUBLIC_BASE_URL, default_config, stop_start_up

# the placeholder .env.example shows: copying it unchanged must not give a usable secret
EXAMPLE_JWT_SECRET = "change-me-to-48-random-characters"
MIN_SECRET_BYTES = 32
MIN_TOKEN_SECONDS = 60


def warn_dev_public_url(app):
    """In production, warn at start when links in mail would point at the development address."""
    if is_production() and app.config["PUBLIC_BASE_URL"] == DEV_PUBLIC_BASE_URL:
        logging.getLogger(__name__).warning(
            "PUBLIC_BASE_URL is not set: links in mail point at %s, which only this machine "
            "reaches. Set it to the address your users reach the API at.",
            DEV_PUBLIC_BASE_URL,
        )


def is_production():
    """Tell whether this process serves real traffic: APP_ENV says so, or gunicorn runs it."""
    app_env = os.environ.get("APP_ENV")
    if app_env:
        return app_env.lower() == "production"
    # however gunicorn was started (`gunicorn`, `python -m gunicorn`), its arbiter is loaded
    return "gunicorn.arbiter" in sys.modules or os.path.basename(sys.argv[0]).startswith("gunicorn")


def check_jwt_settings(app):
    """Stop start-up with one line when the token settings would make weak tokens."""
    secret = app.config["JWT_SECRET_KEY"]
    if secret == EXAMPLE_JWT_SECRET:
        stop_start_up(
            "JWT_SECRET_KEY is the placeholder from .env.example: set a long random value."
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        stop_start_up(
            f"JWT_SECRET_KEY is shorter than {MIN_SECRET_BYTES} bytes: set a long random value "
            '(python -c "import secrets; print(secrets.token_urlsafe(48))").'
        )
    for key in ("JWT_ACCESS_TOKEN_EXPIRES", "JWT_REFRESH_TOKEN_EXPIRES"):
        # 0 or False would mint tokens that never expire
        value = app.config[key]
        if isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, bool) or not isinstance(value, int | float):
            value = 0
        if value < MIN_TOKEN_SECONDS:
            stop_start_up(f"{key} must be at least {MIN_TOKEN_SECONDS} seconds.")


def ensure_jwt_secret(app):
    """Use the configured JWT secret, or in development one generated once into `instance/`."""
    if app.config.get("JWT_SECRET_KEY"):
        return
    if is_production() and not (app.debug or app.testing):
        stop_start_up(
            "JWT_SECRET_KEY is not set: export a long random value "
            '(python -c "import secrets; print(secrets.token_urlsafe(48))") before starting.'
        )
    path = os.path.join(app.instance_path, "jwt-secret")
    try:
        # O_EXCL: when several processes start at once, exactly one writes the secret
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        app.config["JWT_SECRET_KEY"] = read_secret_file(path)
        return
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="utf-8") as secret_file:
        secret_file.write(secret)
    app.config["JWT_SECRET_KEY"] = secret


def read_secret_file(path):
    """Read the generated secret, waiting briefly while another process is still writing it."""
    for _ in range(50):
        with open(path, encoding="utf-8") as secret_file:
            secret = secret_file.read().strip()
        if secret:
            return secret
        time.sleep(0.02)
    stop_start_up(f"{path} is empty: delete it and start again.")


def check_before_workers():
    """Run the start-up checks once in gunicorn's master, before it starts any worker.

    A setting that stops the app (a missing JWT_SECRET_KEY) then stops gunicorn once, with
    its one line, instead of every worker dying at boot and being started again, forever.
    The settings are read as create_app reads them, from the same places.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    instance_path = os.environ.get("INSTANCE_PATH") or os.path.join(here, "instance")
    config = Config(instance_path)
    config.from_mapping(default_config(instance_path))
    config.from_pyfile("config.py", silent=True)
    config.from_prefixed_env()
    app = SimpleNamespace(
        config=config, instance_path=instance_path, debug=bool(config.get("DEBUG")), testing=False
    )
    ensure_jwt_secret(app)
    check_jwt_settings(app)
