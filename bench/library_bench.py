"""Benchmark the library-wide report at 10,000 and 1,000,000 requests, against a raw floor.

Each size runs in a fresh process on a fresh SQLite file: the rows are made by SQLite itself
(bench/run.py's insert_rows, spread over 1,000 patrons), the report is built by the real code
(report_builder.build_report, as the worker runs it), and the floor is plain sqlite3 reading
every request with its patron and csv writing it to a file. Printed per size: build seconds,
floor seconds, their ratio (target: at most 3x, as the patron report), and the peak memory of
the process that built it (target: flat).

    .venv/bin/python bench/library_bench.py            # 10k and 1M, 3 rounds each
    .venv/bin/python bench/library_bench.py --quick    # 10k and 100k, 1 round
"""

import argparse
import csv
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

PATRONS = 1000


def build_once(rows, workdir):
    """Seed `rows` requests, build the library report, time it and the floor; print JSON."""
    os.environ.update(
        INSTANCE_PATH=os.path.join(workdir, "instance"),
        DATABASE_URL=f"sqlite:///{os.path.join(workdir, 'library.db')}",
        APP_ENV="development",
    )
    from run import insert_rows

    from app import create_app
    from models import Report, ReportScope, User, db
    from report_builder import build_report

    app = create_app()
    with app.app_context():
        librarian = User.register("head-librarian", "head@example.org", "bench-password", "admin")
        # the ORM fills whatever columns an account has; no password hashing, no checks
        db.session.add_all(
            User(username=f"patron{n}", email=f"patron{n}@example.org", password_hash="x")
            for n in range(PATRONS)
        )
        db.session.commit()
        conn = db.session.connection().connection.driver_connection
        patron_ids = [row[0] for row in conn.execute("SELECT id FROM user WHERE role = 'user'")]
        for patron_id in patron_ids:
            insert_rows(conn, patron_id, rows // PATRONS)
        conn.commit()
        report = Report.start(librarian, scope=ReportScope.LIBRARY)
        assert report.claim("bench")
        began = time.perf_counter()
        build_report(report)
        build_s = time.perf_counter() - began
        assert report.row_count == rows, report.row_count
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    floor_s = floor_scan(os.path.join(workdir, "library.db"), os.path.join(workdir, "floor.csv"))
    print(json.dumps({"rows": rows, "build_s": build_s, "floor_s": floor_s, "peak_mb": peak_mb}))


def floor_scan(db_path, out_path):
    """Plain sqlite3 and csv: every request with its patron, in id order, to a file."""
    began = time.perf_counter()
    conn = sqlite3.connect(db_path)
    with open(out_path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerows(
            conn.execute(
                "SELECT r.id, r.book_name, r.author, r.status, r.request_date, r.decided_at, "
                "r.due_date, r.returned_at, r.reason, r.note, u.username "
                "FROM book_request r JOIN user u ON u.id = r.user_id ORDER BY r.id"
            )
        )
    conn.close()
    return time.perf_counter() - began


def measure(rows):
    """Run one size in a fresh process (so its peak memory is its own); return its figures."""
    with tempfile.TemporaryDirectory() as workdir:
        output = subprocess.run(
            [sys.executable, __file__, "--one", str(rows), "--workdir", workdir],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k, one round")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        build_once(options.one, options.workdir)
        return
    sizes = (10_000, 100_000) if options.quick else (10_000, 1_000_000)
    rounds = 1 if options.quick else 3
    results = {}
    for rows in sizes:
        runs = [measure(rows) for _ in range(rounds)]
        results[rows] = {
            key: statistics.median(run[key] for run in runs)
            for key in ("build_s", "floor_s", "peak_mb")
        }
        figures = results[rows]
        print(
            f"{rows:>9,} rows: build {figures['build_s']:.2f} s, floor {figures['floor_s']:.2f} s, "
            f"ratio {figures['build_s'] / figures['floor_s']:.2f}x (target <= 3x), "
            f"peak RSS {figures['peak_mb']:.0f} MB  (median of {rounds})",
            flush=True,
        )
    small, large = (results[rows] for rows in sizes)
    print(
        f"growth {sizes[0]:,} -> {sizes[1]:,} rows: peak RSS "
        f"{large['peak_mb'] - small['peak_mb']:+.0f} MB (target: flat, <= 50 MB)"
    )


if __name__ == "__main__":
    main()
