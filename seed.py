"""Demo data for trying the service by hand: `flask --app app seed-demo`.

`seed_demo()` fills the database with a small, lived-in library: a librarian, three patrons,
book requests in every status (one loan overdue) and one finished report for alice. It is
idempotent: what already exists is found by its name and left alone, so running it again
adds nothing. Everything goes through the model methods the API itself uses.
"""

from datetime import timedelta

import click
from flask import current_app
from sqlalchemy import select

from models import (
    REPORT_ACTIVE_STATUSES,
    BookRequest,
    DomainError,
    Report,
    ReportStatus,
    User,
    db,
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
# the actions that walk a new request to each outcome
PATHS = {
    Status.PENDING: (),
    Status.APPROVED: ("approve",),
    OVERDUE: ("approve",),
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
    ("carol", "Beloved", "Toni Morrison", "For the book club on the 20th.", Status.APPROVED, 6),
    ("carol", "Pride and Prejudice", "Jane Austen", None, Status.PENDING, 0),
)
REJECT_REASON = "Our only copy is being rebound; please ask again next month."


def seed_demo():
    """Create the demo accounts, requests and report (inside an app context); return logins.

    Returns a list of `(username, password, role)`. Accounts that already exist keep their
    password and role; an existing `librarian` that is not a librarian is refused rather
    than promoted, since anyone may have registered that name.
    """
    librarian = ensure_user(*LIBRARIAN)
    patrons = {name: ensure_user(name, PATRON_PASSWORD, "user") for name in PATRONS}
    overdue_days = current_app.config["LOAN_DAYS"] + 5
    history = [
        (patron, book, author, note, outcome, overdue_days if days is None else days)
        for patron, book, author, note, outcome, days in DEMO_REQUESTS
    ]
    # oldest first, so ids grow with request dates as they do in real life
    history.sort(key=lambda item: -item[5])
    for patron, book, author, note, outcome, days_ago in history:
        ensure_request(patrons[patron], librarian, book, author, note, outcome, days_ago)
    ensure_report(patrons["alice"])
    return [LIBRARIAN] + [(name, PATRON_PASSWORD, "user") for name in PATRONS]


def ensure_user(username, password, role):
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        return User.register(username, f"{username}@{EMAIL_DOMAIN}", password, role=role)
    if role == "admin" and not user.is_admin:
        raise click.ClickException(
            f"An account named {username!r} exists and is not a librarian; "
            f"promote it with `flask --app app create-admin` if it is yours."
        )
    return user


def ensure_request(patron, librarian, book, author, note, outcome, days_ago):
    """Create one request and walk it to `outcome`, unless the patron already asked for it."""
    existing = db.session.scalar(
        select(BookRequest.id).where(
            BookRequest.user_id == patron.id, BookRequest.book_name == book
        )
    )
    if existing is not None:
        return
    book_request = BookRequest.create(patron, book, author=author, note=note)
    for action in PATHS[outcome]:
        actor = patron if action == "cancel" else librarian
        book_request.apply(action, actor, reason=REJECT_REASON if action == "reject" else None)
    backdate(book_request, days_ago)


def backdate(book_request, days_ago):
    """Spread the history over past weeks, keeping every timestamp in a believable order."""
    loan = timedelta(days=current_app.config["LOAN_DAYS"])
    requested = utcnow() - timedelta(days=days_ago, hours=3)
    book_request.request_date = requested
    if book_request.decided_at is not None:
        book_request.decided_at = requested + timedelta(hours=20)
    if book_request.due_date is not None:
        book_request.due_date = book_request.decided_at + loan
    if book_request.returned_at is not None:
        book_request.returned_at = book_request.decided_at + timedelta(days=9)
    db.session.commit()


def ensure_report(patron):
    """Build one report of all the patron's requests here and now, without Celery."""
    done = db.session.scalar(
        select(Report.id).where(Report.user_id == patron.id, Report.status == ReportStatus.DONE)
    )
    if done is not None:
        return
    active = db.session.scalar(
        select(Report).where(Report.user_id == patron.id, Report.status.in_(REPORT_ACTIVE_STATUSES))
    )
    report = active or Report.start(patron)
    if not report.claim(SEED_TASK_ID):
        # a worker is building it right now; it will be done in a moment
        return
    build_report(report)


def register_seed_command(app):
    """Add `flask --app app seed-demo` to the app's command line."""

    @app.cli.command("seed-demo")
    def seed_demo_command():
        """Fill the database with demo accounts, requests and a report (safe to rerun)."""
        try:
            logins = seed_demo()
        except DomainError as exc:  # a model rule said no, e.g. the pending-request limit
            db.session.rollback()
            raise click.ClickException(f"Seeding stopped: {exc.message}") from exc
        click.echo("Demo data is ready. Log in with:")
        rows = [("username", "password", "role"), *logins]
        user_width = max(len(row[0]) for row in rows)
        password_width = max(len(row[1]) for row in rows)
        for index, (username, password, role) in enumerate(rows):
            click.echo(f"  {username:<{user_width}}  {password:<{password_width}}  {role}")
            if index == 0:
                click.echo(f"  {'-' * user_width}  {'-' * password_width}  {'-' * 5}")
