"""Liveness of the parts the service needs: the database, the broker, and the workers."""

from flask import current_app
from flask.views import MethodView
from kombu import Connection
from sqlalchemy import text

from errors import error_response
from extensions import Blueprint
from models import db
from schemas import HealthDownSchema, HealthSchema
from worker_upkeep import count_live_workers

blp = Blueprint("health", __name__, description="Service health")


def database_ok():
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except Exception:
        db.session.rollback()
        return False


def broker_ok():
    url = current_app.config["CELERY"]["broker_url"]
    # one quick attempt: a health check must answer fast when the broker is down
    try:
        with Connection(url, connect_timeout=1, transport_options={"socket_timeout": 1}) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=1)
        return True
    except Exception:
        return False


DEGRADED = {
    "none": "No worker is running: exports stay queued until one starts.",
    "unknown": "Worker heartbeats cannot be read: Redis at REDIS_URL does not answer.",
}


def worker_state():
    """Return `worker` (up, none or unknown) and `workers`, from the workers' heartbeats."""
    count = count_live_workers(current_app.config)
    if count is None:
        return {"worker": "unknown", "workers": None}
    return {"worker": "up" if count else "none", "workers": count}


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthDownSchema, description="a part is down")
    def get(self):
        """Report whether the database and the broker answer, and how many workers run"""
        parts = {
            "database": "ok" if database_ok() else "down",
            "broker": "ok" if broker_ok() else "down",
        }
        workers = worker_state()
        down = [name for name, state in parts.items() if state != "ok"]
        if down:
            return error_response(503, f"Down: {', '.join(down)}.", **parts, **workers)
        # the API works without a worker, so this is no 503; exports just wait for one
        if workers["worker"] != "up":
            message = DEGRADED[workers["worker"]]
            return {"status": "degraded", **parts, **workers, "message": message}
        return {"status": "ok", **parts, **workers}
