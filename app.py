"""The application factory, its CLI commands, and `python app.py` for the development server."""

import contextlib
import logging
import os
import sys

import click
from flask import Flask
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from werkzeug.middleware.proxy_fix import ProxyFix

import auth
import book_requests
import celery_worker
import health
import outbox
import reports
import users
import verification
from api_docs import swagger_ui_assets
from config import default_config
from extensions import api, jwt, limiter, migrate
from models import db
from schemas import UserUpdateSchema
from seed import register_seed_command
from start_checks import check_jwt_settings, ensure_jwt_secret, warn_dev_public_url

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


def create_app(test_config=None):
    """Create and configure the app."""
    # INSTANCE_PATH moves the instance folder (database, dev secret, outbox) elsewhere
    app = Flask(
        __name__, instance_relative_config=True, instance_path=os.environ.get("INSTANCE_PATH")
    )
    make_private_dir(app.instance_path)
    app.config.from_mapping(default_config(app.instance_path))
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        # any Flask key can also come from the environment as FLASK_<KEY>
        app.config.from_prefixed_env()
    else:
        app.config.from_mapping(test_config)
    ensure_jwt_secret(app)
    check_jwt_settings(app)
    configure_logging(app)
    warn_dev_public_url(app)
    trust_proxies(app)
    make_private_sqlite_file(app.config["SQLALCHEMY_DATABASE_URI"])
    set_pre_ping(app.config)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    jwt.init_app(app)
    limiter.init_app(app)
    api.init_app(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    # an empty PATCH body is refused: the document says so, which a schema field cannot
    api.spec.components.schema("UserUpdate", {"minProperties": 1}, schema=UserUpdateSchema)
    for module in (auth, verification, book_requests, reports, users, health):
        api.register_blueprint(module.blp)
    app.register_blueprint(swagger_ui_assets)
    celery_worker.celery_init_app(app)
    outbox.init_app(app)
    app.after_request(add_security_headers)
    register_commands(app)
    register_seed_command(app)
    if app.config["AUTO_MIGRATE"]:
        ensure_schema(app)
    return app


def set_pre_ping(config):
    """Test a pooled connection before each checkout, unless the database is SQLite.

    The ping finds a connection the server dropped (a restart, an idle timeout) before a
    request uses it; a SQLite file has no connection to lose, and the ping would be one more
    statement for every request. A pool_pre_ping set in the configuration is kept.
    """
    options = config["SQLALCHEMY_ENGINE_OPTIONS"]
    is_sqlite = config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": not is_sqlite, **options}


def trust_proxies(app):
    """Behind TRUSTED_PROXIES reverse proxies, take the client's address and scheme from them.

    Off by default: without a proxy, X-Forwarded-For is the client's to forge, and would
    let anyone pick the address that the rate limits count.
    """
    count = app.config["TRUSTED_PROXIES"]
    if count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)


def make_private_dir(path):
    """Make a folder only its owner can enter (the instance folder holds secrets)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    # a fresh checkout has instance/ already, made with the umask's permissions
    with contextlib.suppress(PermissionError):
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)


def make_private_sqlite_file(url):
    """Create the SQLite file owner-only before SQLite does (it would use the umask).

    SQLite gives its -wal and -shm files the database file's permissions.
    """
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:":
        return
    # FileNotFoundError: no such folder; SQLite will say so itself
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def add_security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # tokens and personal data must not linger in shared caches
    response.headers.setdefault("Cache-Control", "no-store")
    return response


class OneLineStorageErrors(logging.Filter):
    """Log a rate-limit storage error as one warning line: Redis being down is no bug."""

    def filter(self, record):
        if record.exc_info:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = ()
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(app):
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    limiter_log = logging.getLogger("flask-limiter")
    if not any(isinstance(f, OneLineStorageErrors) for f in limiter_log.filters):
        limiter_log.addFilter(OneLineStorageErrors())


@event.listens_for(Engine, "connect")
def tune_sqlite(dbapi_connection, connection_record):
    # WAL lets readers and a writer work at once; busy_timeout waits instead of failing
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # in WAL mode NORMAL is safe against crashes of the app and skips an fsync per commit
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


@contextlib.contextmanager
def migration_lock(app):
    """Hold a lock so that processes starting together migrate one at a time."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(727001)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(727001)"))
                conn.commit()
        return
    try:
        import fcntl
    except ImportError:  # native Windows has no fcntl; a single process is assumed there
        yield
        return
    lock_path = os.path.join(app.instance_path, ".migrate.lock")
    with open(os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def ensure_schema(app):
    """Create the schema of a database that was never migrated, so a fresh checkout starts.

    A database that was migrated once is left alone: upgrading and downgrading it are the
    operator's (`flask --app app db upgrade`, which ./run.sh runs), so a downgrade stays.
    """
    from flask_migrate import upgrade

    with app.app_context():
        if inspect(db.engine).has_table("alembic_version"):
            warn_if_behind(app)
            return
        with migration_lock(app), quiet_logger("alembic"):
            # another process may have created it while this one waited for the lock
            if not inspect(db.engine).has_table("alembic_version"):
                upgrade(directory=MIGRATIONS)
                app.logger.info("Created the database schema.")


def warn_if_behind(app):
    """Say in one line when the schema is not the one this code expects."""
    from alembic.script import ScriptDirectory

    # `flask db ...` is the operator handling exactly that
    if "db" in sys.argv[1:]:
        return
    with db.engine.connect() as conn:
        current = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    heads = set(ScriptDirectory(MIGRATIONS).get_heads())
    if current != heads:
        app.logger.warning(
            "The database schema is at revision %s, this code expects %s: "
            "run `flask --app app db upgrade`.",
            ", ".join(sorted(current)) or "base",
            ", ".join(sorted(heads)),
        )


@contextlib.contextmanager
def quiet_logger(name):
    """Keep a logger's INFO lines (alembic's, at every migration step) out of the output."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def register_commands(app):
    @app.cli.command("create-admin")
    @click.option("--username", required=True)
    @click.option("--email", required=True)
    @click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
    @click.option(
        "--promote",
        is_flag=True,
        help="Make an existing account a librarian; its stored email must match --email.",
    )
    def create_admin(username, email, password_stdin, promote):
        """Create a librarian account (or, with --promote, promote a matching one)."""
        from admin import create_or_promote_librarian

        try:
            click.echo(create_or_promote_librarian(username, email, password_stdin, promote))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc


def __getattr__(name):
    # `gunicorn app:app` and other servers that want an app object rather than the factory
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    # the debugger runs arbitrary code for whoever reaches it: only on explicit request
    debug = os.environ.get("FLASK_DEBUG", "").lower() in {"1", "true", "yes", "on"}
    create_app().run(
        host=os.environ.get("FLASK_RUN_HOST", "127.0.0.1"),
        port=int(os.environ.get("FLASK_RUN_PORT", "5000")),
        debug=debug,
    )
