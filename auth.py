"""Accounts and JWT sessions: register, login, refresh, logout, me, and the token rules."""

from flask import current_app, g
from flask.views import MethodView
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    current_user,
    get_jwt,
)
from flask_smorest import abort

from errors import error_response
from extensions import Blueprint, jwt, limiter, per_user_limit
from models import RevokedToken, User, db
from schemas import (
    LoginSchema,
    MessageSchema,
    MeUpdateSchema,
    RegisterSchema,
    TokenSchema,
    UserSchema,
)

blp = Blueprint("auth", __name__, description="Accounts and tokens")


def access_token_for(user):
    # the subject must be a string: PyJWT >= 2.10 rejects an integer `sub`
    return create_access_token(identity=str(user.id), additional_claims={"role": user.role})


def expires_in():
    return int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())


@blp.route("/register")
class Register(MethodView):
    decorators = [limiter.limit(lambda: current_app.config["REGISTER_RATE_LIMIT"])]

    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema)
    @blp.error_responses(409, 429)
    def post(self, data):
        """Create a patron account"""
        return User.register(data["username"], data["email"], data["password"])


@blp.route("/login")
class Login(MethodView):
    decorators = [limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"])]

    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    @blp.error_responses(401, 429)
    def post(self, data):
        """Exchange a username (or email) and password for tokens"""
        user = User.authenticate(data["username"], data["password"])
        if user is None:
            abort(
                401, message="Wrong username or password.", headers={"WWW-Authenticate": "Bearer"}
            )
        return {
            "access_token": access_token_for(user),
            "refresh_token": create_refresh_token(identity=str(user.id)),
            "token_type": "Bearer",
            "expires_in": expires_in(),
        }


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.auth_required(refresh=True)
    @per_user_limit("REFRESH_RATE_LIMIT")
    @blp.response(200, TokenSchema)
    @blp.error_responses(429)
    def post(self):
        """Exchange a refresh token for a new access token"""
        return {
            "access_token": access_token_for(current_user),
            "token_type": "Bearer",
            "expires_in": expires_in(),
        }


@blp.route("/logout")
class Logout(MethodView):
    @blp.auth_required(verify_type=False)
    @per_user_limit("LOGOUT_RATE_LIMIT")
    @blp.response(200, MessageSchema)
    @blp.error_responses(429)
    def post(self):
        """Revoke the presented access or refresh token"""
        RevokedToken.revoke(get_jwt())
        return {"message": "Logged out."}


@blp.route("/me")
class Me(MethodView):
    @blp.auth_required()
    @blp.response(200, UserSchema)
    def get(self):
        """Show the account the token belongs to"""
        return current_user

    @blp.auth_required()
    @blp.arguments(MeUpdateSchema)
    @blp.response(200, UserSchema)
    def patch(self, data):
        """Turn your decision mails and due-soon nudges on or off"""
        current_user.notify = data["notify"]
        db.session.commit()
        return current_user


def unauthorized(message):
    return error_response(401, message, {"WWW-Authenticate": "Bearer"})


@jwt.token_in_blocklist_loader
def token_is_revoked(jwt_header, jwt_data):
    # flask-jwt-extended asks this first, then for the user: one query answers both
    g.token_user, revoked = User.for_token(jwt_data)
    return revoked


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
    return unauthorized("The token has been revoked.")


@jwt.user_lookup_error_loader
def unknown_user(jwt_header, jwt_data):
    return unauthorized("The token's account no longer exists.")


@jwt.token_verification_failed_loader
def failed_verification(jwt_header, jwt_data):
    return unauthorized("The token failed verification.")
