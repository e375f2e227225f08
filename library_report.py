"""The library-wide report for librarians: its figures, its row stream and its renderers.

Every figure is a GROUP BY or an ORDER BY ... LIMIT in the database, and every list (the
pending queue, the overdue loans, the CSV of all requests) is read in keyset pages, so a
build holds no more than a page of rows whatever the size of the library.
"""

from dataclasses import dataclass
from datetime import datetime
from html import escape

from flask import render_template
from markupsafe import Markup
from sqlalchemy import and_, func, or_, select

from models import UTC, BookRequest, RequestStatus, User, db

ROWS_PER_PAGE = 2000
TOP_LIMIT = 20


def month_of(column):
    """SQL for the `YYYY-MM` of a timestamp column."""
    if db.engine.dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM")
    # SQLite keeps timestamps as "YYYY-MM-DD HH:MM:SS.ffffff" text
    return func.substr(column, 1, 7)


def seconds_between(start, end):
    """SQL for the seconds from `start` to `end`."""
    if db.engine.dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def status_counts(condition):
    """`{status: count}` of the requests matching `condition`."""
    return dict(
        db.session.execute(
            select(BookRequest.status, func.count()).where(condition).group_by(BookRequest.status)
        ).all()
    )


def monthly_counts(condition):
    """`[(YYYY-MM, {status: count})]` of the requests matching `condition`, oldest first."""
    month = month_of(BookRequest.request_date)
    months = {}
    rows = db.session.execute(
        select(month, BookRequest.status, func.count())
        .where(condition)
        .group_by(month, BookRequest.status)
        .order_by(month)
    )
    for name, status, count in rows:
        months.setdefault(name, {})[status] = count
    return list(months.items())


def top(column, condition, limit=TOP_LIMIT):
    """The `limit` most frequent non-empty values of `column`: `[(value, count)]`."""
    count = func.count()
    return db.session.execute(
        select(column, count)
        .where(condition, column.is_not(None), column != "")
        .group_by(column)
        .order_by(count.desc(), column)
        .limit(limit)
    ).all()


def median_decision_seconds(condition):
    """The median time from request to decision, in seconds, of decided requests; or None."""
    decided = and_(condition, BookRequest.decided_at.is_not(None))
    count = db.session.scalar(select(func.count()).select_from(BookRequest).where(decided))
    if not count:
        return None
    duration = seconds_between(BookRequest.request_date, BookRequest.decided_at)
    # the middle value, or the two middle ones of an even count
    middle = db.session.scalars(
        select(duration)
        .where(decided)
        .order_by(duration)
        .offset((count - 1) // 2)
        .limit(1 if count % 2 else 2)
    ).all()
    return sum(float(value) for value in middle) / len(middle)


@dataclass(frozen=True)
class LibraryFigures:
    """Everything in the library report besides its lists."""

    top_titles: list
    top_authors: list
    approval_rate: float | None
    median_decision_seconds: float | None
    pending: int
    overdue: int

    @property
    def median_decision(self):
        """The median time to a decision in words: "3 h 20 min", "2 d 4 h", or a dash."""
        if self.median_decision_seconds is None:
            return "\u2013"
        minutes = round(self.median_decision_seconds / 60)
        days, minutes = divmod(minutes, 24 * 60)
        hours, minutes = divmod(minutes, 60)
        if days:
            return f"{days} d {hours} h"
        return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def library_figures(condition, counts, now):
    """Compute the library report's figures for the requests matching `condition`."""
    granted = counts.get(RequestStatus.APPROVED, 0) + counts.get(RequestStatus.RETURNED, 0)
    decided = granted + counts.get(RequestStatus.REJECTED, 0)
    return LibraryFigures(
        top_titles=top(BookRequest.book_name, condition),
        top_authors=top(BookRequest.author, condition),
        approval_rate=granted / decided if decided else None,
        median_decision_seconds=median_decision_seconds(condition),
        pending=count_where(pending_condition()),
        overdue=count_where(overdue_condition(now)),
    )


def count_where(condition):
    return db.session.scalar(select(func.count()).select_from(BookRequest).where(condition))


def pending_condition():
    return BookRequest.status == RequestStatus.PENDING


def overdue_condition(now):
    return and_(BookRequest.status == RequestStatus.APPROVED, BookRequest.due_date < now)


def pending_pages():
    """Yield the pending queue oldest first, a page at a time: (id, book, author, patron, date)."""
    columns = (
        BookRequest.id,
        BookRequest.book_name,
        BookRequest.author,
        User.username,
        BookRequest.request_date,
    )
    return keyset_pages(columns, pending_condition(), BookRequest.request_date)


def keyset_pages(columns, condition, order_column):
    """Yield pages of `columns` (id first) ordered by `order_column` then id, for `condition`.

    `order_column` must be the last selected column; an index on (status, it, id) serves it.
    """
    after = None
    while True:
        page_condition = condition
        if after is not None:
            value, row_id = after
            page_condition = and_(
                condition,
                or_(order_column > value, and_(order_column == value, BookRequest.id > row_id)),
            )
        page = db.session.execute(
            select(*columns)
            .join(User, User.id == BookRequest.user_id)
            .where(page_condition)
            .order_by(order_column, BookRequest.id)
            .limit(ROWS_PER_PAGE)
        ).all()
        if not page:
            return
        yield page
        after = (page[-1][-1], page[-1][0])


def overdue_pages(now):
    """Yield overdue loans, longest overdue first: (id, book, author, patron, due date)."""
    columns = (
        BookRequest.id,
        BookRequest.book_name,
        BookRequest.author,
        User.username,
        BookRequest.due_date,
    )
    return keyset_pages(columns, overdue_condition(now), BookRequest.due_date)


def parse_stored(value):
    """A stored timestamp (text on SQLite, naive datetime on PostgreSQL) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


PENDING_ROW = (
    '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td></tr>\n'
)
OVERDUE_ROW = (
    '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="late">'
    '<span class="badge s-overdue">{} day{} overdue</span></td></tr>\n'
)


def pending_rows(now):
    for page in pending_pages():
        yield "".join(
            PENDING_ROW.format(
                row_id,
                escape(book),
                escape(author or ""),
                escape(patron),
                requested.strftime("%Y-%m-%d"),
                (now - requested).days,
            )
            for row_id, book, author, patron, requested in page
        )


def overdue_rows(now):
    for page in overdue_pages(now):
        pieces = []
        for row_id, book, author, patron, due in page:
            days = max((now - due).days, 1) if due else 0
            pieces.append(
                OVERDUE_ROW.format(
                    row_id,
                    escape(book),
                    escape(author or ""),
                    escape(patron),
                    due.strftime("%Y-%m-%d"),
                    days,
                    "" if days == 1 else "s",
                )
            )
        yield "".join(pieces)


PENDING_MARKER = "<!--pending-->"
OVERDUE_MARKER = "<!--overdue-->"


class LibraryHtmlRenderer:
    """templates/library_report.html, with the pending queue and overdue loans streamed in."""

    def __init__(self, summary):
        self.now = summary.generated_at
        page = render_template(
            "library_report.html",
            summary=summary,
            figures=library_figures(summary.condition, summary.counts, self.now),
            pending_rows=Markup(PENDING_MARKER),
            overdue_rows=Markup(OVERDUE_MARKER),
        )
        self.head, _, rest = page.partition(PENDING_MARKER)
        self.middle, _, self.end = rest.partition(OVERDUE_MARKER)

    def rows(self, page):
        # the HTML summarises the period; every request is in the CSV
        return ""

    @property
    def tail(self):
        yield from pending_rows(self.now)
        yield self.middle
        yield from overdue_rows(self.now)
        yield self.end
