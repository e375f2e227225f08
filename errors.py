"""The one JSON error shape, and the handlers that give it to every error from every layer."""

import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger(__name__)

# keys that webargs and flask-smorest keep on an exception for their own use
INTERNAL_KEYS = {"message", "messages", "errors", "headers", "exc", "schema"}


def error_response(code, message, headers=None, **extra):
    """Return `{code, status, message}` (plus extra keys) as a JSON response."""
    body = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Error"), "message": message}
    body.update(extra)
    response = jsonify(body)
    response.status_code = code
    if headers:
        response.headers.update(headers)
    return response


def handle_http_exception(error):
    data = getattr(error, "data", None) or {}
    extra = {key: value for key, value in data.items() if key not in INTERNAL_KEYS}
    errors = data.get("errors") or data.get("messages")
    if errors is not None:
        extra["errors"] = errors
    message = data.get("message") or error.description or error.name
    if errors is not None and "message" not in data:
        message = "The request was not valid; see errors for details."
    response = error_response(error.code or 500, message, **extra)
    # keep headers the exception carries: Allow on 405, Retry-After on 429
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    return response


def handle_unexpected_error(error):
    # the traceback goes to the log, never to the client
    log.exception("unhandled error")
    return handle_http_exception(InternalServerError())


def register_error_handlers(app):
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected_error)
