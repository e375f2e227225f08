"""Demo data for trying the service by hand: `flask --app app seed-demo`.

`seed_demo()` fills the database with a small, lived-in library: a librarian, three patrons,
book requests in every status (one loan overdue, one renewed), a finished report for alice
and a finished library-wide report for the librarian. No mail is queued for this made-up
history. It is
idempotent: what already exists is found by its name and left alone, so running it again
adds nothing. An account of the same name that it did not create (its demo password does not
work there) is never changed: it is named in the output and gets no demo data. Everything goes
through the model methods the API itself uses.
"""

import os
from datetime import timedelta

import click
from flask import current_app
from sqlalchemy import select

from models import (
    REPORT_ACTIVE_STATUSES,
    BookRequest,
    DomainError,
    Report,
    ReportScope,
    ReportStatus,
    User,
    db,
    username_key,
    utcnow,
)
from models import RequestStatus as Status
from report_builder import build_report

LIBRARIAN = ("librarian", "librarian-demo", "admin")
PATRONS = ("alice", "bob", "carol")
PATRON_PASSWORD = "patron-demo"
EMAIL_DOMAIN = "example.org"
SEED_TASK_ID = "seed-demo"

# an approved loan past its due date: a status of its own only in the demo data
OVERDUE = "overdue"
# an approved loan renewed once
RENEWED = "renewed"
# the actions that walk a new request to each outcome
PATHS = {
    Status.PENDING: (),
    Status.APPROVED: ("approve",),
    OVERDUE: ("approve",),
    RENEWED: ("approve", "renew"),
    Status.REJECTED: ("reject",),
    Status.CANCELLED: ("cancel",),
    Status.RETURNED: ("approve", "return"),
}

# (patron, book, author, note, what happens to it, days ago it was requested)
DEMO_REQUESTS = (
    ("alice", "The Left Hand of Darkness", "Ursula K. Le Guin", None, Status.RETURNED, 40),
    ("alice", "The Name of the Rose", "Umberto Eco", "In English, please.", Status.REJECTED, 25),
    ("alice", "Middlemarch", "George Eliot", None, Status.APPROVED, 3),
    (
        "alice",
        "Gödel, Escher, Bach",
        "Douglas R. Hofstadter",
        "Any edition is fine.",
        Status.PENDING,
        1,
    ),
    # requested LOAN_DAYS + 5 days ago, so its loan ran out a few days ago
    ("bob", "Dune", "Frank Herbert", None, OVERDUE, None),
    ("bob", "Neuromancer", "William Gibson", None, Status.CANCELLED, 12),
    ("bob", "The Pragmatic Programmer", "David Thomas, Andrew Hunt", None, Status.PENDING, 2),
    ("carol", "A Brief History of Time", "Stephen Hawking", None, Status.RETURNED, 50),
    ("carol", "Beloved", "Toni Morrison", "For the book club on the 20th.", RENEWED, 6),
    ("carol", "Pride and Prejudice", "Jane Austen", None, Status.PENDING, 0),
)
REJECT_REASON = "Our only copy is being rebound; please ask again next month."


class Outcome:
    """What seed-demo did with each demo account, for its closing lines."""

    def __init__(self):
        self.created, self.reused, self.foreign = [], [], []


def seed_demo(outcome=None):
    """Create the demo accounts, requests and report (inside an app context); return logins.

    Returns a list of `(username, password, role)` that work: the demo accounts it created
    now or on an earlier run. `outcome`, if given, collects which were created, reused, or
    left alone because someone else holds the name.
    """
    outcome = outcome if outcome is not None else Outcome()
    librarian = ensure_user(*LIBRARIAN, outcome)
    if librarian is None:
        raise click.ClickException(
            f"An account named {LIBRARIAN[0]!r} exists that seed-demo did not create (the demo "
            "password does not open it); nothing was changed. Seed another database, or rename "
            "that account."
        )
    patrons = {name: ensure_user(name, PATRON_PASSWORD, "user", outcome) for name in PATRONS}
    overdue_days = current_app.config["LOAN_DAYS"] + 5
    history = [
        (patron, book, author, note, result, overdue_days if days is None else days)
        for patron, book, author, note, result, days in DEMO_REQUESTS
        # someone else's account gets no demo requests
        if patrons[patron] is not None
    ]
    # oldest first, so ids grow with request dates as they do in real life
    history.sort(key=lambda item: -item[5])
    for patron, book, author, note, result, days_ago in history:
        ensure_request(patrons[patron], librarian, book, author, note, result, days_ago)
    if patrons["alice"] is not None:
        ensure_report(patrons["alice"])
    ensure_report(librarian, ReportScope.LIBRARY)
    logins = [LIBRARIAN] + [(name, PATRON_PASSWORD, "user") for name in PATRONS]
    return [login for login in logins if login[0] not in outcome.foreign]


def ensure_user(username, password, role, outcome):
    """Return the demo account, creating it if need be; None if the name is someone else's."""
    user = db.session.scalar(select(User).where(User.username_key == username_key(username)))
    if user is None:
        outcome.created.append(username)
        # example.org addresses are the demo's own: marked verified, so its mail shows
        email = f"{username}@{EMAIL_DOMAIN}"
        return User.register(username, email, password, role=role, verified=True)
    # the demo password opening it is what makes it the demo's (and the printed login true)
    if not user.check_password(password) or (role == "admin" and not user.is_admin):
        outcome.foreign.append(username)
        return None
    outcome.reused.append(username)
    return user


def ensure_request(patron, librarian, book, author, note, result, days_ago):
    """Create one request and walk it to `result`, unless the patron already asked for it."""
    existing = db.session.scalar(
        select(BookRequest.id).where(
            BookRequest.user_id == patron.id, BookRequest.book_name == book
        )
    )
    if existing is not None:
        return
    book_request = db.session.get(BookRequest, BookRequest.create(patron, book, author, note).id)
    for action in PATHS[result]:
        if action == "renew":
            book_request.renew()
            continue
        actor = patron if action == "cancel" else librarian
        reason = REJECT_REASON if action == "reject" else None
        book_request.apply(action, actor, reason=reason, mail=False)
    backdate(book_request, days_ago)


def backdate(book_request, days_ago):
    """Spread the history over past weeks, keeping every timestamp in a believable order."""
    loan = timedelta(days=current_app.config["LOAN_DAYS"])
    requested = utcnow() - timedelta(days=days_ago, hours=3)
    book_request.request_date = requested
    if book_request.decided_at is not None:
        book_request.decided_at = requested + timedelta(hours=20)
    if book_request.due_date is not None:
        book_request.due_date = book_request.decided_at + loan * (1 + book_request.renewals)
    if book_request.returned_at is not None:
        book_request.returned_at = book_request.decided_at + timedelta(days=9)
    db.session.commit()


def ensure_report(user, scope=ReportScope.PATRON):
    """Build one all-time report of `scope` for `user` here and now, without Celery."""
    done = db.session.scalar(
        select(Report.id).where(
            Report.user_id == user.id, Report.scope == scope, Report.status == ReportStatus.DONE
        )
    )
    if done is not None:
        return
    active = db.session.scalar(
        select(Report).where(Report.user_id == user.id, Report.status.in_(REPORT_ACTIVE_STATUSES))
    )
    if active is not None and active.scope != scope:
        # one report at a time per user: that one first, this one on the next run
        return
    report = active or Report.start(user, scope=scope)
    if not report.claim(SEED_TASK_ID):
        # a worker is building it right now; it will be done in a moment
        return
    build_report(report)


def register_seed_command(app):
    """Add `flask --app app seed-demo` to the app's command line."""

    @app.cli.command("seed-demo")
    @click.option("--force", is_flag=True, help="Seed even under APP_ENV=production.")
    def seed_demo_command(force):
        """Fill the database with demo accounts, requests and a report (safe to rerun)."""
        if os.environ.get("APP_ENV", "").lower() == "production" and not force:
            # the demo passwords are published in this repository
            raise click.ClickException(
                "APP_ENV is production: the demo accounts have published passwords. "
                "Add --force if you really want them here."
            )
        outcome = Outcome()
        try:
            logins = seed_demo(outcome)
        except DomainError as exc:  # a model rule said no, e.g. the pending-request limit
            db.session.rollback()
            raise click.ClickException(f"Seeding stopped: {exc.message}") from exc
        click.echo("Demo data is ready. Log in with:")
        echo_table(logins)
        echo_outcome(outcome)


def echo_table(logins):
    # the widths of the full demo table, so the columns stay put whichever rows are shown
    user_width = max(len(name) for name in ("username", LIBRARIAN[0], *PATRONS))
    password_width = max(len(word) for word in ("password", LIBRARIAN[1], PATRON_PASSWORD))
    click.echo(f"  {'username':<{user_width}}  {'password':<{password_width}}  role")
    click.echo(f"  {'-' * user_width}  {'-' * password_width}  {'-' * 5}")
    for username, password, role in logins:
        click.echo(f"  {username:<{user_width}}  {password:<{password_width}}  {role}")


def echo_outcome(outcome):
    if outcome.created:
        click.echo(f"Created: {', '.join(outcome.created)}.")
    if outcome.reused:
        click.echo(f"Reused from an earlier seed-demo, unchanged: {', '.join(outcome.reused)}.")
    if outcome.foreign:
        click.echo(
            f"Left alone, not listed above and given no demo data: {', '.join(outcome.foreign)} "
            "(accounts seed-demo did not create; the demo password does not open them)."
        )
