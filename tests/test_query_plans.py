"""Every list query is served by an index: no full scan, no sort of the table.

Each probe calls a real list route and records the SQL it runs (first page, a page by
number and a page by cursor); each statement is then explained by the database itself,
`EXPLAIN QUERY PLAN` on SQLite and `EXPLAIN` on PostgreSQL.
"""

import pytest
from sqlalchemy import event, insert, text

from models import BookRequest, Report, db

# (caller, path, filters on the list): the query strings every list offers
PROBES = [
    ("patron", "/requests", True),
    ("patron", "/requests?status=pending", True),
    ("librarian", "/requests", False),
    ("librarian", "/requests?status=pending", True),
    ("librarian", "/requests?user_id={patron}", True),
    ("librarian", "/requests?user_id={patron}&status=pending", True),
    ("librarian", "/users", False),
    ("patron", "/reports", True),
    ("librarian", "/reports", False),
]


@pytest.fixture
def library(app, auth):
    """A patron with enough rows in every list for two pages and a cursor."""
    patron, patron_headers = auth.patron()
    librarian, librarian_headers = auth.librarian()
    others = [auth.register()["id"] for _ in range(3)]
    statuses = ["pending", "approved", "rejected", "returned", "cancelled"]
    # a library's mix, most requests long settled: PostgreSQL's planner weighs indexes by it
    history = ["returned"] * 50 + ["rejected"] * 20 + ["cancelled"] * 10 + ["approved"] * 17
    history += ["pending"] * 3
    with app.app_context():
        rows = [
            {"user_id": others[n % 3], "book_name": "Dune", "status": history[n % 100]}
            for n in range(20_000)
        ]
        rows += [{"user_id": patron["id"], "book_name": "Dune", "status": s} for s in statuses * 3]
        db.session.execute(insert(BookRequest), rows)
        reports = [{"user_id": others[n % 3], "status": "done"} for n in range(2_000)]
        reports += [{"user_id": patron["id"], "status": "done"}] * 5
        db.session.execute(insert(Report), reports)
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("ANALYZE"))
            db.session.commit()
    return {"patron": patron, "headers": {"patron": patron_headers, "librarian": librarian_headers}}


def record_statements(app, client, headers, url):
    """Run a page, the second page by number and the second by cursor; return their SQL."""
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        separator = "&" if "?" in url else "?"
        first = client.get(f"{url}{separator}per_page=2", headers=headers)
        assert first.status_code == 200 and first.json["next"], first.json
        assert client.get(f"{url}{separator}per_page=2&page=2", headers=headers).status_code == 200
        assert client.get(first.json["next"], headers=headers).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    # the token's session lookup runs on every route, by the user's id and the session's:
    # a key lookup of one login's row, not a list, so the list checks leave it out
    return [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().upper().startswith("SELECT") and "login_session" not in sql
    ]


def plan_of(app, sql, params):
    with app.app_context():
        with db.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
                return [row[-1] for row in rows]
            # no seq scan or sort unless nothing else can answer: the plan then names the
            # index that serves the query, whatever the size of the test's tables
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            conn.exec_driver_sql("SET LOCAL enable_sort = off")
            return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", params).all()]


def problems_in(plan, dialect, table_walk_allowed):
    """The lines of `plan` that sort a table or may read all of it.

    A walk along an index (or the table) in the list's order is bounded by the LIMIT only
    when every row it meets belongs on the page: that is, when the list has no filter.
    A filtered list must seek straight to its rows (SQLite SEARCH, PostgreSQL Index Cond
    with no Filter left over).
    """
    tables = set(db.metadata.tables)
    bad = []
    for line in plan:
        text = line.strip()
        if dialect == "sqlite":
            words = text.split()
            walks_table = words[0] == "SCAN" and words[1] in tables
            if "TEMP B-TREE" in text or (walks_table and not table_walk_allowed):
                bad.append(text)
        elif (
            "Seq Scan" in text
            or text.lstrip("-> ").startswith(("Sort", "Incremental Sort"))
            or text.startswith("Filter:")
        ):
            bad.append(text)
    return bad


@pytest.mark.parametrize(("caller", "path", "filtered"), PROBES)
def test_list_queries_use_indexes(app, client, library, caller, path, filtered):
    url = path.format(patron=library["patron"]["id"])
    statements = record_statements(app, client, library["headers"][caller], url)
    # the first page and the cursor's in one query each (rows and count), the numbered page
    # in two (its ids with the count, then its rows)
    assert len(statements) >= 4
    with app.app_context():
        dialect = db.engine.dialect.name
    for sql, params in statements:
        plan = plan_of(app, sql, params)
        assert not problems_in(plan, dialect, table_walk_allowed=not filtered), (sql, plan)


def test_the_check_catches_a_query_no_index_serves(app, library):
    """The checker itself fails a filter without an index and an order without one."""
    with app.app_context():
        dialect = db.engine.dialect.name
    for sql in [
        "SELECT * FROM book_request WHERE book_name = 'Dune' ORDER BY id DESC LIMIT 21",
        "SELECT * FROM book_request WHERE user_id = 1 ORDER BY book_name LIMIT 21",
        "SELECT * FROM report WHERE error = 'x' ORDER BY created_at DESC, id DESC LIMIT 21",
    ]:
        plan = plan_of(app, sql, ())
        assert problems_in(plan, dialect, table_walk_allowed=False), (sql, plan)
