"""Liveness of the parts the service needs: the database and the Celery broker."""

from flask import current_app
from flask.views import MethodView
from kombu import Connection
from sqlalchemy import text

from errors import error_response
from extensions import Blueprint
from models import db
from schemas import HealthDownSchema, HealthSchema

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


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthDownSchema, description="a part is down")
    def get(self):
        """Report whether the database and the broker answer"""
        parts = {
            "database": "ok" if database_ok() else "down",
            "broker": "ok" if broker_ok() else "down",
        }
        down = [name for name, state in parts.items() if state != "ok"]
        if down:
            return error_response(503, f"Down: {', '.join(down)}.", **parts)
        return {"status": "ok", **parts}
