"""The one table of report formats, and the renderers that write each format's file.

A renderer is built with the report's Summary and has `head` (str), `rows(page) -> str`
and `tail` (a str, or an iterable of str streamed in pieces). A new format is a row in
FORMATS and its renderers.
"""

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from html import escape

from flask import render_template
from markupsafe import Markup

import library_report
import report_charts
from models import Report, ReportScope, RequestStatus, User

CSV_COLUMNS = (
    "id",
    "book_name",
    "author",
    "status",
    "request_date",
    "decided_at",
    "due_date",
    "returned_at",
    "reason",
    "note",
)
# spreadsheet programs run cells that start with these as formulas ("" never matches)
FORMULA_FIRST_CHARACTERS = frozenset("=+-@\t\r")


@dataclass(frozen=True)
class Summary:
    """What a renderer knows besides the rows: the report, its owner and its figures."""

    report: Report
    user: User
    # the SQL condition that picks the report's requests
    condition: object
    counts: dict
    total: int
    # [(YYYY-MM, {status: count})], oldest first
    monthly: list
    generated_at: datetime

    @property
    def period(self):
        return self.report.month or "all time"

    @property
    def totals(self):
        return [(status, self.counts.get(status, 0)) for status in RequestStatus]

    @property
    def monthly_chart(self):
        return Markup(report_charts.monthly_chart(self.monthly))

    @property
    def status_bar(self):
        return Markup(report_charts.status_bar(dict(self.totals)))


# one table row of monthly_report.html; built here because a template call per row would
# cost more than everything else the build does
ROW_HTML = (
    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n"
).format
# the status column: a coloured badge whose words carry the meaning without the colour
STATUS_BADGES = {
    status: f'<span class="badge s-{status}">{status.capitalize()}</span>'
    for status in RequestStatus
}
OVERDUE_BADGE = '<span class="badge s-overdue">Overdue: {} day{}</span>'.format
ROWS_MARKER = "<!--rows-->"


def loan_badge(status, due, now):
    """The status badge; an approved loan past its due date says how many days overdue."""
    if status == RequestStatus.APPROVED and due:
        due = library_report.parse_stored(due)
        if due < now:
            days = max((now - due).days, 1)
            return OVERDUE_BADGE(days, "" if days == 1 else "s")
    return STATUS_BADGES.get(status) or escape(status)


class HtmlRenderer:
    """templates/monthly_report.html, with the rows written in where the marker is."""

    def __init__(self, summary):
        self.now = summary.generated_at
        page = render_template("monthly_report.html", summary=summary, rows=Markup(ROWS_MARKER))
        self.head, _, self.tail = page.partition(ROWS_MARKER)

    def rows(self, page):
        html = []
        now = self.now
        # the hot loop of a build, written out inline since it runs once per row
        for row_id, book, author, status, requested, decided, due, returned, reason, note in page:
            html.append(
                ROW_HTML(
                    row_id,
                    escape(book),
                    escape(author or ""),
                    loan_badge(status, due, now),
                    str(requested)[:10],
                    str(decided)[:10] if decided else "",
                    str(due)[:10] if due else "",
                    str(returned)[:10] if returned else "",
                    escape(reason or ""),
                    escape(note or ""),
                )
            )
        return "".join(html)


# Excel reads a CSV as the Windows code page unless it starts with a UTF-8 byte order mark
CSV_BOM = "\ufeff"


class CsvRenderer:
    """One line per request, safe to open in a spreadsheet (no cell runs as a formula)."""

    columns = CSV_COLUMNS

    def __init__(self, summary):
        self.head = CSV_BOM + ",".join(self.columns) + "\r\n"
        self.tail = ""

    def rows(self, page):
        lines = io.StringIO()
        write_csv = csv.writer(lines).writerow
        formula = FORMULA_FIRST_CHARACTERS
        # the hot loop of a build, written out inline since a function call per cell costs
        # more than its work: timestamps as ISO 8601 ("2026-11-21T10:40:18.426444Z"), and
        # a quote before a cell a spreadsheet would run as a formula
        for (
            row_id,
            book,
            author,
            status,
            requested,
            decided,
            due,
            returned,
            reason,
            note,
            *more,
        ) in page:
            write_csv(
                (
                    row_id,
                    "'" + book if book[:1] in formula else book,
                    ("'" + author if author[:1] in formula else author) if author else "",
                    status,
                    str(requested).replace(" ", "T", 1) + "Z" if requested else "",
                    str(decided).replace(" ", "T", 1) + "Z" if decided else "",
                    str(due).replace(" ", "T", 1) + "Z" if due else "",
                    str(returned).replace(" ", "T", 1) + "Z" if returned else "",
                    ("'" + reason if reason[:1] in formula else reason) if reason else "",
                    ("'" + note if note[:1] in formula else note) if note else "",
                    # the library report adds the patron; usernames cannot start a formula
                    *more,
                )
            )
        return lines.getvalue()


class LibraryCsvRenderer(CsvRenderer):
    """Every request of the period, with the patron who made it."""

    columns = (*CSV_COLUMNS, "patron")


@dataclass(frozen=True)
class Format:
    """A file a report is stored as: its content type, its renderer, its place in the mail."""

    content_type: str
    # by report scope, a class built with the Summary that has .head (str),
    # .rows(page) -> str and .tail (a str, or an iterable of str streamed in pieces)
    renderers: dict
    # "body": the mail's HTML part; "attachment": attached when small enough; None: a link
    mail: str | None = None


# every format a report is built, stored, downloaded and mailed as
FORMATS = {
    "html": Format(
        "text/html; charset=utf-8",
        {
            ReportScope.PATRON: HtmlRenderer,
            ReportScope.LIBRARY: library_report.LibraryHtmlRenderer,
        },
        mail="body",
    ),
    "csv": Format(
        "text/csv; charset=utf-8",
        {ReportScope.PATRON: CsvRenderer, ReportScope.LIBRARY: LibraryCsvRenderer},
        mail="attachment",
    ),
}
