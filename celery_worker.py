"""The Celery side of the app: `FlaskTask`, `celery_init_app(app)`, and `celery_app`.

Start a worker with `celery -A celery_worker.celery_app worker --loglevel=info`.
"""

from celery import Celery, Task

from app import create_app


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
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def __getattr__(name):
    # `celery_app` is built on first use, not at import: the API imports this module for
    # celery_init_app and must not build a second Flask app as a side effect
    if name == "celery_app":
        celery_app = create_app().extensions["celery"]
        globals()["celery_app"] = celery_app
        return celery_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
