"""Operator commands' account work: `create-admin` creates a librarian, or promotes one.

Promotion is explicit (`--promote`) and needs the stored email to match: otherwise anyone
who registered the name first would become the librarian, with their own password.
"""

import sys

import click
from marshmallow import ValidationError
from sqlalchemy import select

from login_sessions import LoginSession
from models import DomainError, User, db, username_key, utcnow
from schemas import RegisterSchema


def read_password(from_stdin):
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def validated(username, email, password):
    """Return the account fields as registration would store them; ValueError if bad."""
    try:
        return RegisterSchema().load({"username": username, "email": email, "password": password})
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.messages.items()
        )
        raise ValueError(f"Invalid account: {problems}") from exc


def create_or_promote_librarian(username, email, password_stdin, promote):
    """Create the librarian, or promote the matching account; return what was done."""
    existing = db.session.scalar(select(User).where(User.username_key == username_key(username)))
    if existing is not None:
        return promote_librarian(existing, email, password_stdin, promote)
    data = validated(username, email, read_password(password_stdin))
    try:
        # the operator vouches for the address: librarians receive the library's reports
        User.register(data["username"], data["email"], data["password"], "admin", verified=True)
    except DomainError as exc:
        raise ValueError(exc.message) from exc
    return f"Librarian {data['username']} created."


def promote_librarian(user, email, password_stdin, promote):
    if not promote:
        raise ValueError(
            f"An account named {user.username!r} already exists; nothing was changed. "
            "If it is yours, run again with --promote and its email."
        )
    if user.email is None or user.email != email.strip().lower():
        raise ValueError(
            f"The account {user.username!r} has another email address; it was not promoted."
        )
    password = read_password(True) if password_stdin else None
    if user.email_verified_at is None and password is None:
        # whoever registered it may not own the address: only a new password makes it safe
        raise ValueError(
            f"The email of {user.username!r} was never verified, so its password may not be "
            "yours: run again with --password-stdin to set a new one as it is promoted."
        )
    if password is not None:
        validated(user.username, email, password)
        user.set_password(password)
        user.email_verified_at = user.email_verified_at or utcnow()
    user.role, user.active = "admin", True
    db.session.commit()
    if password is not None:
        # sessions opened with the old password end with it
        LoginSession.end_all(user.id)
    return f"{user.username} is now a librarian" + (" with the new password." if password else ".")
