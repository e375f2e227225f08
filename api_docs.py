"""What /docs needs beyond the OpenAPI document: local Swagger UI assets and example bodies.

Swagger UI's JavaScript and CSS come from the pinned flask-swagger-ui package and are served
by the app under /docs/assets/, so the page works with no internet access.
"""

import os

import flask_swagger_ui
from flask import Blueprint

ASSETS_URL = "/docs/assets/"

swagger_ui_assets = Blueprint(
    "swagger_ui_assets",
    __name__,
    static_folder=os.path.join(os.path.dirname(flask_swagger_ui.__file__), "dist"),
    static_url_path=ASSETS_URL.rstrip("/"),
)

# Swagger UI settings: the token entered under "Authorize" survives a page reload
SWAGGER_UI_CONFIG = {
    "persistAuthorization": True,
    "displayRequestDuration": True,
    "tryItOutEnabled": True,
}

# an example body for every JSON body schema, keyed by schema class name; Swagger UI fills
# "Try it out" with it, and tests/test_api_docs.py checks each one loads without errors
BODY_EXAMPLES = {
    "RegisterSchema": {
        "username": "ada",
        "email": "ada@example.com",
        "password": "correct horse",
    },
    "LoginSchema": {"username": "ada", "password": "correct horse"},
    "BookRequestCreateSchema": {
        "book_name": "Dune",
        "author": "Frank Herbert",
        "note": "the 1965 edition, please",
    },
    "RejectSchema": {"reason": "We do not hold this title."},
    "ExportArgsSchema": {"month": "2026-01"},
    "MeUpdateSchema": {"notify": False},
    "UserUpdateSchema": {"active": False},
    # the token is the one in the verification mail's link (signed, it expires)
    "VerifyEmailSchema": {"token": "eyJ1IjoxLCJlIjoiYWRhQGV4YW1wbGUuY29tIn0.aV3Qxw.q0uGm2"},
    "PasswordChangeSchema": {
        "current_password": "correct horse",
        "new_password": "battery staple",
    },
}


def body_example(schema):
    """Return the example body for a schema class or instance, or None when it has none."""
    schema_class = schema if isinstance(schema, type) else type(schema)
    return BODY_EXAMPLES.get(schema_class.__name__)
