"""The library-wide report for librarians: its figures, its row stream and its renderers.

The counts by month and status and the most requested titles and authors are tallied from
the rows the CSV stream reads anyway (LibraryTally), which saves the build three scans of
the table; the other figures are a GROUP BY or an ORDER BY ... LIMIT in the database. Every
list (the pending queue, the overdue loans, the CSV of all requests) is read in keyset
pages, so a build holds no more than a page of rows whatever the size of the library.
"""

import dataclasses
import heapq
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from html import escape
from operator import itemgetter

from flask import render_template
from markupsafe import Markup
from sqlalchemy import String, and_, bindparam, func, select, tuple_, type_coerce

from models import UTC, BookRequest, RequestStatus, User, db, plain_rows

ROWS_PER_PAGE = 5000
TOP_LIMIT = 20
# the distinct titles (or authors) a tally counts before it leaves the ranking to the
# database: it keeps the memory of a build flat for a library of any size
TALLY_MAX_DISTINCT = 20_000


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


def code_point_order(column):
    """`column` compared by code point, as Python compares strings, on every database."""
    if db.engine.dialect.name == "postgresql":
        return column.collate("C")
    # SQLite's default collation, BINARY, compares UTF-8 bytes: the code point order
    return column


def top(column, condition, limit=TOP_LIMIT):
    """The `limit` most frequent non-empty values of `column`: `[(value, count)]`.

    Ties go in code point order, as in LibraryTally.
    """
    count = func.count()
    return [
        tuple(row)
        for row in db.session.execute(
            select(column, count)
            .where(condition, column.is_not(None), column != "")
            .group_by(column)
            .order_by(count.desc(), code_point_order(column))
            .limit(limit)
        )
    ]


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


def library_figures(condition, counts, now, top_titles=None, top_authors=None):
    """Compute the library report's figures for the requests matching `condition`.

    The top titles and authors are counted in the database unless they are given.
    """
    granted = counts.get(RequestStatus.APPROVED, 0) + counts.get(RequestStatus.RETURNED, 0)
    decided = granted + counts.get(RequestStatus.REJECTED, 0)
    if top_titles is None:
        top_titles = top(BookRequest.book_name, condition)
    if top_authors is None:
        top_authors = top(BookRequest.author, condition)
    return LibraryFigures(
        top_titles=top_titles,
        top_authors=top_authors,
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
    return keyset_pages(pending_condition(), BookRequest.request_date)


def overdue_pages(now):
    """Yield overdue loans, longest overdue first: (id, book, author, patron, due date)."""
    return keyset_pages(overdue_condition(now), BookRequest.due_date)


def keyset_pages(condition, order_column):
    """Yield pages of (id, book, author, patron, `order_column`) in `order_column`, id order.

    An index on (status, `order_column`, id) serves it: each page seeks past the last one
    with a row-value comparison, so a page costs the same wherever it is in the list.
    Rows are plain tuples, and the timestamp is as the database stores it (see as_naive).
    """
    query = (
        select(
            BookRequest.id,
            BookRequest.book_name,
            BookRequest.author,
            User.username,
            type_coerce(order_column, String),
        )
        .join(User, User.id == BookRequest.user_id)
        .order_by(order_column, BookRequest.id)
        .limit(ROWS_PER_PAGE)
    )
    page = plain_rows(query.where(condition))
    after = tuple_(order_column, BookRequest.id) > tuple_(
        bindparam("after_value", type_=order_column.type), bindparam("after_id")
    )
    following = query.where(condition, after)
    while page:
        yield page
        after_id, after_value = page[-1][0], parse_stored(page[-1][-1])
        page = plain_rows(following, {"after_value": after_value, "after_id": after_id})


def parse_stored(value):
    """A stored timestamp (text on SQLite, naive datetime on PostgreSQL) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def as_naive(value):
    """A stored timestamp (text on SQLite, naive datetime on PostgreSQL) as naive UTC."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


PENDING_ROW = (
    '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td></tr>\n'
).format
OVERDUE_ROW = (
    '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="late">'
    '<span class="badge s-overdue">{} day{} overdue</span></td></tr>\n'
).format


def pending_rows(now):
    now = now.astimezone(UTC).replace(tzinfo=None)
    for page in pending_pages():
        yield "".join(
            [
                PENDING_ROW(
                    row_id,
                    escape(book),
                    escape(author) if author else "",
                    escape(patron),
                    # stored timestamps print as "YYYY-MM-DD HH:MM:SS[.ffffff]"
                    str(requested)[:10],
                    (now - as_naive(requested)).days,
                )
                for row_id, book, author, patron, requested in page
            ]
        )


def overdue_rows(now):
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    for page in overdue_pages(now):
        pieces = []
        for row_id, book, author, patron, due in page:
            days = max((naive_now - as_naive(due)).days, 1)
            pieces.append(
                OVERDUE_ROW(
                    row_id,
                    escape(book),
                    escape(author) if author else "",
                    escape(patron),
                    str(due)[:10],
                    days,
                    "" if days == 1 else "s",
                )
            )
        yield "".join(pieces)


PENDING_MARKER = "<!--pending-->"
OVERDUE_MARKER = "<!--overdue-->"


# columns of a report page (report_builder.report_pages): id, book_name, author, status,
# request_date, ...
TITLE_OF = itemgetter(1)
AUTHOR_OF = itemgetter(2)


class LibraryTally:
    """Counts by month and status and the most requested titles and authors, from the rows.

    A tally that meets more than TALLY_MAX_DISTINCT distinct titles (or authors) stops
    counting them and reports None, so that the caller asks the database instead.
    """

    def __init__(self):
        self.months = Counter()
        self.titles = Counter()
        self.authors = Counter()

    def add(self, page):
        # the request date is the database's text (SQLite: "YYYY-MM-DD HH:MM:SS[.ffffff]")
        # or a naive datetime (PostgreSQL), whose year and month cost less than its text
        if page and isinstance(page[0][4], str):
            self.months.update((row[4][:7], row[3]) for row in page)
        else:
            self.months.update(((row[4].year, row[4].month), row[3]) for row in page)
        if self.titles is not None:
            self.titles.update(map(TITLE_OF, page))
            if len(self.titles) > TALLY_MAX_DISTINCT:
                self.titles = None
        if self.authors is not None:
            self.authors.update(map(AUTHOR_OF, page))
            if len(self.authors) > TALLY_MAX_DISTINCT:
                self.authors = None

    @property
    def counts(self):
        """`{status: count}`"""
        counts = Counter()
        for (_, status), count in self.months.items():
            counts[status] += count
        return dict(counts)

    @property
    def monthly(self):
        """`[(YYYY-MM, {status: count})]`, oldest first."""
        months = {}
        for (month, status), count in sorted(self.months.items()):
            if not isinstance(month, str):
                month = f"{month[0]:04d}-{month[1]:02d}"
            months.setdefault(month, {})[status] = count
        return list(months.items())

    @staticmethod
    def ranked(counter, limit=TOP_LIMIT):
        """The `limit` most frequent non-empty values, ties in code point order; or None."""
        if counter is None:
            return None
        counted = ((value, count) for value, count in counter.items() if value)
        return heapq.nsmallest(limit, counted, key=lambda item: (-item[1], item[0]))

    @property
    def top_titles(self):
        return self.ranked(self.titles)

    @property
    def top_authors(self):
        return self.ranked(self.authors)


class LibraryHtmlRenderer:
    """templates/library_report.html, with the pending queue and overdue loans streamed in.

    The page sums up the rows of the period, which it tallies as they stream by, so it is
    all written at the end; the CSV has every request.
    """

    def __init__(self, summary):
        self.summary = summary
        self.now = summary.generated_at
        self.tally = LibraryTally()
        self.head = ""

    def rows(self, page):
        self.tally.add(page)
        return ""

    @property
    def tail(self):
        tally = self.tally
        counts = tally.counts
        summary = dataclasses.replace(
            self.summary, counts=counts, total=sum(counts.values()), monthly=tally.monthly
        )
        page = render_template(
            "library_report.html",
            summary=summary,
            figures=library_figures(
                summary.condition, counts, self.now, tally.top_titles, tally.top_authors
            ),
            pending_rows=Markup(PENDING_MARKER),
            overdue_rows=Markup(OVERDUE_MARKER),
        )
        head, _, rest = page.partition(PENDING_MARKER)
        middle, _, end = rest.partition(OVERDUE_MARKER)
        yield head
        yield from pending_rows(self.now)
        yield middle
        yield from overdue_rows(self.now)
        yield end
