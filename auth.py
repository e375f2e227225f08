"""Accounts and JWT sessions: register, login, refresh, logout, me, and the token rules."""

from datetime import datetime

from flask import current_app, g
from flask.views import MethodView
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    current_user,
    get_jwt,
)
from flask_smorest import abort
from jwt.exceptions import MissingRequiredClaimError

from errors import error_response
from extensions import Blueprint, jwt, limiter, per_user_limit
from login_sessions import REQUIRED_CLAIMS, LoginSession, load_token_user
from models import UTC, User, db, utcnow
from schemas import (
    LoginSchema,
    MessageSchema,
    MeUpdateSchema,
    PasswordChangeSchema,
    RegisterSchema,
    TokenSchema,
    UserSchema,
)
from throttle import clear_account, record_failure, seconds_to_wait, throttle_keys
from verification import queue_verification_mail

blp = Blueprint("auth", __name__, description="Accounts and tokens")


def issue_tokens(user, session, refresh_jti, refresh_expires=None):
    """Return the token response for a session: an access and a refresh token."""
    # the subject must be a string: PyJWT >= 2.10 rejects an integer `sub`
    identity = str(user.id)
    refresh_expires = refresh_expires or session.expires_at
    return {
        "access_token": create_access_token(
            identity=identity, additional_claims={"role": user.role, "sid": session.id}
        ),
        # a refresh token lives no longer than its session, however often it is rotated
        "refresh_token": create_refresh_token(
            identity=identity,
            expires_delta=refresh_expires - utcnow(),
            additional_claims={"sid": session.id, "jti": refresh_jti},
        ),
        "token_type": "Bearer",
        "expires_in": int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    }


def log_in(user):
    """Start a session for `user` and return its tokens."""
    session = LoginSession.start(user)
    return issue_tokens(user, session, session.refresh_jti)


def unauthorized_abort(message):
    abort(401, message=message, headers={"WWW-Authenticate": "Bearer"})


def authenticate_throttled(login, password):
    """Return the user the password opens; 429 while a failure delay runs, else 401 if wrong."""
    keys = throttle_keys(login, User.find(login))
    wait = seconds_to_wait(keys)
    if wait:
        abort(
            429,
            message=f"Too many failed logins: try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )
    user = User.authenticate(login, password)
    if user is None:
        record_failure(keys)
        unauthorized_abort("Wrong username or password.")
    clear_account(keys[0])
    return user


@blp.route("/register")
class Register(MethodView):
    decorators = [limiter.limit(lambda: current_app.config["REGISTER_RATE_LIMIT"])]

    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema)
    @blp.error_responses(409, 429)
    def post(self, data):
        """Create a patron account"""
        user = User.register(data["username"], data["email"], data["password"])
        # committed on its own: a failed mail must not undo the account
        queue_verification_mail(user)
        db.session.commit()
        return user


@blp.route("/login")
class Login(MethodView):
    decorators = [limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"])]

    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    @blp.error_responses(401, 429)
    def post(self, data):
        """Exchange a username (or email) and password for tokens"""
        user = authenticate_throttled(data["username"], data["password"])
        if not user.active:
            unauthorized_abort("The account is disabled.")
        return log_in(user)


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.auth_required(refresh=True)
    @per_user_limit("REFRESH_RATE_LIMIT")
    @blp.response(200, TokenSchema)
    @blp.error_responses(429)
    def post(self):
        """Spend a refresh token for a new access and refresh token"""
        claims = get_jwt()
        next_jti = LoginSession.rotate(claims["sid"], claims["jti"])
        if next_jti is None:
            # another request spent it a moment ago: a copy is about, end the session
            LoginSession.end(claims["sid"])
            unauthorized_abort("This refresh token was already used; the session has ended.")
        session = db.session.get(LoginSession, claims["sid"])
        return issue_tokens(
            current_user, session, next_jti, datetime.fromtimestamp(claims["exp"], UTC)
        )


@blp.route("/logout")
class Logout(MethodView):
    @blp.auth_required(verify_type=False)
    @per_user_limit("LOGOUT_RATE_LIMIT")
    @blp.response(200, MessageSchema)
    @blp.error_responses(429)
    def post(self):
        """End the session of the presented access or refresh token"""
        LoginSession.end(get_jwt()["sid"])
        return {"message": "Logged out."}


@blp.route("/logout-all")
class LogoutAll(MethodView):
    @blp.auth_required()
    @blp.response(200, MessageSchema)
    def post(self):
        """End every session of the account, on every device"""
        LoginSession.end_all(current_user.id)
        return {"message": "Logged out everywhere."}


@blp.route("/me/password")
class MyPassword(MethodView):
    @blp.auth_required()
    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, MessageSchema)
    @blp.error_responses(403, 429)
    def post(self, data):
        """Change the password; every other session of the account ends"""
        user = account()
        keys = throttle_keys(user.username, user)
        if seconds_to_wait(keys[:1]):
            abort(429, message="Too many wrong passwords: try again later.")
        if not user.check_password(data["current_password"]):
            # a stolen token must not become a way to guess the password
            record_failure(keys[:1])
            abort(403, message="The current password is wrong.")
        user.set_password(data["new_password"])
        db.session.commit()
        LoginSession.end_all(user.id, keep_sid=get_jwt()["sid"])
        return {"message": "Password changed; your other sessions have ended."}


@blp.route("/me")
class Me(MethodView):
    @blp.auth_required()
    @blp.response(200, UserSchema)
    def get(self):
        """Show the account the token belongs to"""
        # the account itself: the schema would read each field through the proxy
        return current_user._get_current_object()

    @blp.auth_required()
    @blp.arguments(MeUpdateSchema)
    @blp.response(200, UserSchema)
    def patch(self, data):
        """Turn your decision mails and due-soon nudges on or off"""
        user = account()
        user.notify = data["notify"]
        db.session.commit()
        return user


def account():
    """The token's account as a User, for a view that changes it (current_user is read-only)."""
    return db.session.get(User, current_user.id)


def unauthorized(message):
    return error_response(401, message, {"WWW-Authenticate": "Bearer"})


@jwt.decode_key_loader
def key_for_complete_tokens(jwt_header, jwt_data):
    # flask-jwt-extended fills in a missing `type` or `jti`; a token must carry its own
    for claim in REQUIRED_CLAIMS:
        if claim not in jwt_data:
            raise MissingRequiredClaimError(claim)
    return current_app.config["JWT_SECRET_KEY"]


@jwt.token_in_blocklist_loader
def token_is_revoked(jwt_header, jwt_data):
    # flask-jwt-extended asks this first, then for the user: one query answers both
    g.token_user, g.token_refusal = load_token_user(jwt_data)
    return g.token_refusal is not None


@jwt.user_lookup_loader
def load_user(jwt_header, jwt_data):
    return g.pop("token_user", None)


@jwt.unauthorized_loader
def missing_token(reason):
    return unauthorized(f"Missing or malformed Authorization header: {reason}")


@jwt.invalid_token_loader
def invalid_token(reason):
    return unauthorized(f"Invalid token: {reason}")


@jwt.expired_token_loader
def expired_token(jwt_header, jwt_data):
    return unauthorized("The token has expired.")


@jwt.revoked_token_loader
def revoked_token(jwt_header, jwt_data):
    return unauthorized(g.pop("token_refusal", None) or "The token has been revoked.")


@jwt.user_lookup_error_loader
def unknown_user(jwt_header, jwt_data):
    return unauthorized("The token's account no longer exists.")


@jwt.token_verification_failed_loader
def failed_verification(jwt_header, jwt_data):
    return unauthorized("The token failed verification.")
