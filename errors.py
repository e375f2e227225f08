"""The one JSON error shape, given to every error from every layer by the Api's handlers.

flask-smorest registers `Api.handle_http_exception` for every HTTPException (routing,
validation, JWT, rate limit); the subclass here gives it the shape, and adds handlers for
the domain errors the models raise and for anything unexpected (a 500, never a traceback).
"""

import logging
import math
import time

import flask_smorest
from flask import jsonify
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from models import Conflict, DomainError, Unavailable
from schemas import ErrorSchema

log = logging.getLogger(__name__)

# the HTTP status of each domain error
DOMAIN_STATUS = {Conflict: 409, Unavailable: 503}

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


class Api(flask_smorest.Api):
    """flask-smorest's Api, giving every error the one shape and documenting it."""

    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self):
        super()._register_error_handlers()
        self._app.register_error_handler(DomainError, self.handle_domain_error)
        self._app.register_error_handler(RateLimitExceeded, self.handle_rate_limit)
        self._app.register_error_handler(Exception, self.handle_unexpected_error)

    def handle_http_exception(self, error):
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

    def handle_domain_error(self, error):
        return error_response(DOMAIN_STATUS[type(error)], error.message, **error.extra)

    def handle_rate_limit(self, error):
        """Name the limit that was hit and how long until it lets the client in again."""
        from extensions import limiter

        hit = limiter.current_limit
        wait = max(1, math.ceil(hit.window[0] - time.time())) if hit is not None else 1
        message = f"Too many requests: {error.limit.limit}. Try again in {wait} s."
        return error_response(429, message, {"Retry-After": str(wait)})

    def handle_unexpected_error(self, error):
        # the traceback goes to the log, never to the client
        log.exception("unhandled error")
        return self.handle_http_exception(InternalServerError())
