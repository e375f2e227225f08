"""The benchmark's floor: a bare Flask app with one plain JSON route and one behind @jwt_required().

It runs under the same gunicorn settings as the service (`gunicorn.conf.py`), so the difference
between the two is what the service itself adds: extensions, database lookups, schemas.
"""

import os

from flask import Flask, jsonify
from flask_jwt_extended import JWTManager, get_jwt_identity, jwt_required


def create_app():
    """Create the floor app, verifying tokens with the service's JWT secret."""
    app = Flask(__name__)
    app.config["JWT_SECRET_KEY"] = os.environ["JWT_SECRET_KEY"]
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    app.config["JWT_ALGORITHM"] = "HS256"
    JWTManager(app)

    @app.get("/plain")
    def plain():
        return jsonify(status="ok")

    @app.get("/protected")
    @jwt_required()
    def protected():
        return jsonify(user_id=get_jwt_identity())

    return app


app = create_app()
