"""Build the reports the README shows, in a throwaway database, and write each as HTML.

seed-demo's alice, a patron with 45 requests over half a year, and a library-wide report of
about a thousand requests: `python scripts/render_reports.py OUT_DIR` (INSTANCE_PATH should
point at an empty folder; scripts/render-reports.sh does all of it and takes the pictures).
"""

import os
import random
import sys
from datetime import timedelta

from sqlalchemy import insert

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app import create_app  # noqa: E402
from models import (  # noqa: E402
    BookRequest,
    Report,
    ReportScope,
    RequestStatus,
    User,
    db,
    utcnow,
)
from report_builder import build_report  # noqa: E402
from seed import seed_demo  # noqa: E402

TITLES = [
    ("Dune", "Frank Herbert"),
    ("Middlemarch", "George Eliot"),
    ("Beloved", "Toni Morrison"),
    ("The Dispossessed", "Ursula K. Le Guin"),
    ("Gödel, Escher, Bach", "Douglas R. Hofstadter"),
    ("Things Fall Apart", "Chinua Achebe"),
    ("Pride and Prejudice", "Jane Austen"),
    ("Neuromancer", "William Gibson"),
    ("The Name of the Rose", "Umberto Eco"),
    ("Invisible Cities", "Italo Calvino"),
    ("Kindred", "Octavia E. Butler"),
    ("Emma", "Jane Austen"),
]
NOTES = [None, None, None, "Any edition is fine.", "Large print, please.", "For the book club."]


def history(rng, user_id, count, days, librarian_id):
    """`count` believable requests of one patron over the last `days` days."""
    now = utcnow()
    rows = []
    for _ in range(count):
        book, author = rng.choice(TITLES)
        requested = now - timedelta(days=rng.uniform(0, days), hours=rng.uniform(0, 23))
        age = (now - requested).days
        status = rng.choices(
            list(RequestStatus),
            weights=[0, 3, 1, 1, 5] if age > 20 else [6, 4, 1, 1, 0],
        )[0]
        decided = requested + timedelta(hours=rng.uniform(1, 70))
        row = {
            "user_id": user_id,
            "book_name": book,
            "author": author,
            "note": rng.choice(NOTES),
            "status": status,
            "request_date": requested,
        }
        if status != RequestStatus.PENDING and status != RequestStatus.CANCELLED:
            row.update(decided_at=decided, decided_by=librarian_id)
        if status in (RequestStatus.APPROVED, RequestStatus.RETURNED):
            row["due_date"] = decided + timedelta(days=14)
        if status == RequestStatus.RETURNED:
            row["returned_at"] = decided + timedelta(days=rng.uniform(2, 13))
        if status == RequestStatus.REJECTED:
            row["reason"] = "Out of print; try the reading room copy."
        rows.append(row)
    db.session.execute(insert(BookRequest), rows)
    db.session.commit()


def build(user, scope=ReportScope.PATRON):
    report = Report.start(user, scope=scope)
    assert report.claim("render-reports")
    build_report(report)
    return report


def write(report, path):
    with open(path, "wb") as html:
        for chunk in report.read_chunks("html"):
            html.write(chunk)


def main(out_dir):
    rng = random.Random(7)
    app = create_app()
    with app.app_context():
        seed_demo()
        librarian = db.session.scalar(db.select(User).where(User.username == "librarian"))
        alice = db.session.scalar(db.select(User).where(User.username == "alice"))
        dora = User.register("dora", "dora@example.org", "patron-demo")
        history(rng, dora.id, 45, 180, librarian.id)
        for n in range(40):
            patron = User.register(f"reader{n:02}", f"reader{n:02}@example.org", "patron-demo")
            history(rng, patron.id, 24, 365, librarian.id)
        write(db.session.get(Report, alice_report(alice)), f"{out_dir}/report-alice.html")
        write(build(dora), f"{out_dir}/report-dora-45-rows.html")
        library = db.session.scalar(
            db.select(Report).where(Report.user_id == librarian.id, Report.status == "done")
        )
        db.session.delete(library)  # seed-demo's, built before the thousand rows existed
        db.session.commit()
        write(build(librarian, ReportScope.LIBRARY), f"{out_dir}/report-library.html")


def alice_report(alice):
    return db.session.scalar(db.select(Report.id).where(Report.user_id == alice.id))


if __name__ == "__main__":
    main(sys.argv[1])
