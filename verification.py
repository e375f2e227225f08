"""Email verification: a signed, expiring token mailed at registration (through the outbox,
so the worker sends it), checked by `POST /verify-email`; resending is rate-limited.

Until an address is verified the library mails it nothing but this: anyone can type
someone else's address into /register.
"""

import uuid

from flask import current_app, render_template
from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import abort
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from extensions import Blueprint, per_user_limit
from mail import absolute_url
from models import OutboxMail, User, db, utcnow
from schemas import MessageSchema, VerifyEmailSchema

blp = Blueprint("verification", __name__, description="Email verification")

SALT = "verify-email"


def serializer():
    # its own salt: a token signed for this purpose is good for nothing else
    return URLSafeTimedSerializer(current_app.config["JWT_SECRET_KEY"], salt=SALT)


def verification_token(user):
    return serializer().dumps({"user": user.id, "email": user.email})


def queue_verification_mail(user):
    """Queue the verification mail in the outbox, to go with the next commit."""
    token = verification_token(user)
    subject, _, body = (
        render_template(
            "email/verify_email.txt",
            user=user,
            token=token,
            link=absolute_url(f"/verify-email?token={token}"),
        )
        .strip()
        .partition("\n")
    )
    key = f"verify:{user.id}:{uuid.uuid4().hex[:16]}"
    db.session.add(OutboxMail(key=key, user_id=user.id, subject=subject, body=body.strip()))


def verify(token):
    """Mark the address the token was made for verified; 400 when the token is not good."""
    max_age = current_app.config["EMAIL_VERIFY_HOURS"] * 3600
    try:
        claims = serializer().loads(token, max_age=max_age)
    except SignatureExpired:
        abort(400, message="The verification link has expired; ask for a new one.")
    except BadSignature:
        abort(400, message="The verification token is not valid.")
    user = db.session.get(User, claims.get("user")) if isinstance(claims, dict) else None
    # the address may have changed hands since the mail went out
    if user is None or user.email is None or user.email != claims.get("email"):
        abort(400, message="The verification token is not valid.")
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        db.session.commit()
    return {"message": f"{user.email} is verified."}


@blp.route("/verify-email")
class VerifyEmail(MethodView):
    @blp.arguments(VerifyEmailSchema)
    @blp.response(200, MessageSchema)
    @blp.error_responses(400)
    def post(self, data):
        """Verify an email address with the token from the verification mail"""
        return verify(data["token"])

    @blp.arguments(VerifyEmailSchema, location="query")
    @blp.response(200, MessageSchema)
    @blp.error_responses(400)
    def get(self, args):
        """Verify an email address by opening the link in the verification mail"""
        return verify(args["token"])


@blp.route("/verify-email/resend")
class ResendVerification(MethodView):
    @blp.auth_required()
    @per_user_limit("VERIFY_RESEND_RATE_LIMIT")
    @blp.response(202, MessageSchema)
    @blp.error_responses(409, 429)
    def post(self):
        """Send the verification mail again"""
        if current_user.email is None:
            abort(409, message="The account has no email address any more.")
        if current_user.email_verified_at is not None:
            abort(409, message="Your email address is already verified.")
        queue_verification_mail(current_user)
        db.session.commit()
        return {"message": f"A verification mail is on its way to {current_user.email}."}
