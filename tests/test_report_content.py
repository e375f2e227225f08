"""What a report says about what patrons typed: every user-supplied field is escaped in the
HTML (download and mail body) and defused as a formula in the CSV (download and attachment)."""

import csv
import io
from html import escape

import pytest
from sqlalchemy import insert

from models import BookRequest, Report, db, utcnow
from report_builder import build_once, mail_once
from tests.factories import start_report
from tests.servers import wait_for

# one hostile value per field the HTML shows; each breaks out of its cell if left raw
MARKUP = {
    "book_name": '<script>alert("book")</script>',
    "author": "<img src=x onerror=alert('author')>",
    "reason": '</td><svg onload=alert("reason")>',
    "note": "<b>note</b><iframe src=javascript:alert('note')>",
}
CSV_FIELDS = ("book_name", "author", "reason", "note")
# what spreadsheet programs take as the start of a formula (OWASP's CSV injection list)
FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]


def add_rows(app, user_id, rows):
    with app.app_context():
        now = utcnow()
        db.session.execute(
            insert(BookRequest),
            [{"user_id": user_id, "status": "rejected", "request_date": now, **r} for r in rows],
        )
        db.session.commit()


@pytest.fixture
def built(app, auth, client, smtp_server, workers):
    """Build and mail a report of `rows` in process; return its downloads and its mail."""
    # no worker may take the export first: this build is the one under test
    workers.kill()

    def build(rows):
        user, headers = auth.patron()
        add_rows(app, user["id"], rows)
        report_id = start_report(app, user["id"])
        with app.app_context():
            report = db.session.get(Report, report_id)
            assert build_once(report, "content-test")
            mail_once(report)
        download = f"/reports/{report_id}/download?format="
        _, sink = smtp_server
        mail = wait_for(
            lambda: [m for m in sink.messages if m["To"] == user["email"]], what="report mail"
        )[0]
        attachment = next(mail.iter_attachments()).get_content()
        return {
            "html": client.get(download + "html", headers=headers).get_data(as_text=True),
            "mail_html": mail.get_body(preferencelist=("html",)).get_content(),
            "csv": client.get(download + "csv", headers=headers).get_data(as_text=True),
            "mail_csv": attachment if isinstance(attachment, str) else attachment.decode(),
        }

    return build


def test_every_field_the_html_shows_is_escaped(built):
    files = built([MARKUP])
    for where in ("html", "mail_html"):
        html = files[where]
        for field, value in MARKUP.items():
            assert value not in html, f"{field} is raw in the {where}"
            assert escape(value) in html, f"{field} is missing from the {where}"
        assert html.count("<iframe") == 0
        assert html.count("<script") == 0 and html.count("<img") == 0


@pytest.mark.parametrize(
    "first", FORMULA_STARTS, ids=["equals", "plus", "minus", "at", "tab", "cr"]
)
def test_every_csv_field_is_defused_as_a_formula(built, first):
    rows = [
        {field: f'{first}HYPERLINK("http://x","{field}")' for field in CSV_FIELDS},
        {field: f"plain {field}" for field in CSV_FIELDS},
    ]
    files = built(rows)
    for where in ("csv", "mail_csv"):
        parsed = list(csv.DictReader(io.StringIO(files[where], newline="")))
        assert len(parsed) == 2, files[where]
        for field in CSV_FIELDS:
            assert parsed[0][field] == "'" + rows[0][field], f"{field} in the {where}"
            assert parsed[1][field] == rows[1][field], f"{field} in the {where}"
