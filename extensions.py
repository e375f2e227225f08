"""Flask extension objects, created unbound here and bound to the app in `create_app`."""

import json
from functools import wraps
from http import HTTPStatus

import flask_smorest
from flask import current_app
from flask_jwt_extended import JWTManager, current_user, get_jwt_identity, jwt_required
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import abort
from marshmallow import Schema
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import RequestEntityTooLarge

from api_docs import body_example
from errors import Api

# the values a loaded query may hold to be kept and handed out again
PLAIN_VALUES = (int, float, str, bool, type(None))
# query strings up to this long are kept with what they load: a page size, a status, a user
# id recur from request to request; a cursor (longer) differs for every page
KEPT_QUERY_LENGTH = 64
# how many such query strings the parser keeps (any client may send new ones)
KEPT_QUERIES = 256


def loads_alike(schema):
    """Whether `schema` loads the same query string into the same values every time: no hook
    runs and no default is computed."""
    fields = schema.fields.values()
    return not any(schema._hooks.values()) and not any(callable(f.load_default) for f in fields)


class JSONParser(FlaskParser):
    """webargs' parser, stricter: a body that is not JSON is 415, JSON Python cannot use 400.

    A short query string that loaded without error is kept with what it loaded, and a copy
    of that is handed out when it comes again, rather than running marshmallow again. One
    that fails is parsed every time, and so gets the same error.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kept_queries = {}

    def parse(self, argmap, req=None, *, location=None, **kwargs):
        # without an error, `unknown` and the error settings change nothing; a validator might
        if location == "query" and kwargs.get("validate") is None and isinstance(argmap, Schema):
            req = req if req is not None else self.get_default_request()
            query = req.query_string
            if len(query) <= KEPT_QUERY_LENGTH:
                key = (argmap, query)
                loaded = self.kept_queries.get(key)
                if loaded is None:
                    loaded = super().parse(argmap, req, location=location, **kwargs)
                    plain = all(isinstance(value, PLAIN_VALUES) for value in loaded.values())
                    if plain and loads_alike(argmap):
                        if len(self.kept_queries) >= KEPT_QUERIES:
                            self.kept_queries.clear()
                        self.kept_queries[key] = loaded
                return dict(loaded)
        return super().parse(argmap, req, location=location, **kwargs)

    def load_json(self, req, schema):
        body = req.get_data(cache=True)
        # werkzeug cuts a chunked body off at MAX_CONTENT_LENGTH without a word: is there more?
        limit = req.max_content_length
        if limit is not None and len(body) >= limit and req.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
        # a body sent as a form or as text would otherwise be ignored, as if none were sent
        if body and not is_json_request(req):
            abort(415, message="Send the body as JSON, with Content-Type: application/json.")
        try:
            data = super().load_json(req, schema)
            # a lone surrogate ("\ud800") parses, but no database, hash or response can encode it
            if data is not missing:
                json.dumps(data, ensure_ascii=False).encode()
        # RecursionError: nested too deep; ValueError: a number of over 4300 digits, a surrogate
        except (RecursionError, ValueError) as exc:
            self._handle_invalid_json_error(exc, req)
        return data


# documents the bearer token on every protected operation
BEARER = [{"bearerAuth": []}]


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint: the stricter JSON parser, documented errors, auth_required."""

    ARGUMENTS_PARSER = JSONParser()

    def arguments(self, schema, *, location="json", **kwargs):
        """Take arguments as flask-smorest does; a body can also be 400, 413 or 415, and a
        query with a page cursor 400 (a cursor the API did not sign)."""
        if location == "json" and "examples" not in kwargs:
            kwargs.setdefault("example", body_example(schema))
        # an instance, made once: given a class, webargs would make one for every request
        if isinstance(schema, type):
            schema = schema()
        take_arguments = super().arguments(schema, location=location, **kwargs)
        if location == "query" and "cursor" in schema._declared_fields:
            bad_cursor = self.error_responses(400)
            return lambda view: bad_cursor(take_arguments(view))
        if location != "json":
            return take_arguments
        body_errors = self.error_responses(400, 413, 415)
        return lambda view: body_errors(take_arguments(view))

    def error_responses(self, *codes):
        """Document the error statuses an operation can answer with."""

        def decorator(view):
            for code in codes:
                # flask-smorest registers an error-shaped response for every status, by name
                view = self.alt_response(code, response=HTTPStatus(code).name)(view)
            return view

        return decorator

    def auth_required(self, admin=False, **jwt_options):
        """Let a valid token through (a librarian's only, with `admin`), and document it.

        Goes above the view's other decorators, so a bad token is 401 before its arguments
        are read. `jwt_options` go to jwt_required (refresh=True, verify_type=False).
        """

        def decorator(view):
            @wraps(view)
            @jwt_required(**jwt_options)
            def protected(*args, **kwargs):
                # the role as the database has it now, not as the token remembers it
                if admin and not current_user.is_admin:
                    abort(403, message="Only librarians may do this.")
                return view(*args, **kwargs)

            codes = (401, 403) if admin else (401,)
            return self.error_responses(*codes)(self.doc(security=BEARER)(protected))

        return decorator


api = Api()
jwt = JWTManager()
limiter = Limiter(key_func=get_remote_address)
migrate = Migrate()


def user_key():
    """Count a limit per user: the token's subject (jwt_required has run before the limit)."""
    return f"user:{get_jwt_identity()}"


def per_user_limit(setting, scope=None):
    """Limit a view per user by the config key `setting`; views sharing a `scope` share a count."""

    def limit_value():
        return current_app.config[setting]

    if scope is None:
        return limiter.limit(limit_value, key_func=user_key)
    return limiter.shared_limit(limit_value, scope=scope, key_func=user_key)
