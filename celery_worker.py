"""The Celery side of the app: `FlaskTask`, `celery_init_app(app)`, and `celery_app`.

Start a worker with `celery -A celery_worker.celery_app worker --loglevel=info`;
`celery -A celery_worker worker` and `-A celery_worker.celery` find the same app.
"""

from celery import Celery, Task
from celery import current_app as current_celery_app
from celery.signals import worker_process_init

import app as flask_app_module
from models import db
from worker_upkeep import RecoverOnConnect, Upkeep

# the names Celery's -A looks up: `celery_app` (ours), and `app` and `celery`, which it
# tries on its own when given just the module (`celery -A celery_worker worker`)
APP_NAMES = ("celery_app", "celery", "app")


class FlaskTask(Task):
    """A task that always runs inside the Flask application context."""

    def __call__(self, *args, **kwargs):
        with self.app.flask_app.app_context():
            return self.run(*args, **kwargs)


def celery_init_app(app):
    """Create the Celery app for `app`, make it the default one, and return it."""
    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.flask_app = app
    celery_app.config_from_object(app.config["CELERY"])
    # the worker must know the tasks even though it never imports the views
    celery_app.conf.include = ["tasks"]
    # only a worker runs these: its heartbeat, maintenance timer and recovery on connect
    celery_app.steps["worker"].add(Upkeep)
    celery_app.steps["consumer"].add(RecoverOnConnect)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


@worker_process_init.connect
def forget_inherited_connections(**kwargs):
    # a forked pool process must not share its parent's database connections
    with current_celery_app.flask_app.app_context():
        db.engine.dispose(close=False)


def __getattr__(name):
    # the one lazy step: `celery_app` is built on first use, not at import, because the
    # API imports this module for celery_init_app and must not build a second Flask app
    if name in APP_NAMES:
        celery_app = flask_app_module.create_app().extensions["celery"]
        globals().update(dict.fromkeys(APP_NAMES, celery_app))
        return celery_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
