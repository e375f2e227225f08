"""Scale: does every list cost the same at a million rows as at ten thousand?

    .venv/bin/python bench/run.py --scale                # SQLite, and PostgreSQL if set
    .venv/bin/python bench/run.py --scale --with-10m     # also 10,000,000 rows on PostgreSQL

Seeds each database once with SQL (recursive CTE on SQLite, generate_series on PostgreSQL,
indexes and foreign keys built after the rows) and keeps it for the next run: SQLite files in
SCALE_CACHE (default ~/.cache/library-bench-scale), PostgreSQL databases
`library_scale_<size>` on TEST_DATABASE_URL's server. Every database of a backend is served
at once by its own gunicorn (gunicorn.conf.py, 2 workers), and every list route is timed one
request at a time, at page 1, at page 500 and at a deep cursor (the row a page 500 would start
at, or the middle of a shorter list), each request going to every size in turn so that the
machine's other load falls on all sizes alike. Medians and growth against the smallest size
are printed with the 2x target.
"""

import json
import os
import secrets
import statistics
import sys
import time
from urllib.parse import urlsplit

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
BIN = os.path.dirname(sys.executable)

# book requests -> users, as the issue states them (100 users at 10k, 100,000 at 1M)
SIZES = {10_000: 100, 1_000_000: 100_000, 10_000_000: 100_000}
HEAVY_EVERY = 100  # the heavy patron's share of the requests: one in a hundred
REPORTS_PER_REQUEST = 10  # one report for every ten requests
PASSWORD = "scale-password-1"
REPEATS = 15
SEED_VERSION = "3"  # bump when the seed changes, so cached databases are rebuilt


def label(size):
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


# ---------------------------------------------------------------- seeding


def series(dialect, count):
    """A FROM clause yielding i = 1..count."""
    if dialect == "postgresql":
        return f"generate_series(1::bigint, {count}) AS g(i)"
    counting = f"SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {count}"
    return f"(WITH RECURSIVE s(i) AS ({counting}) SELECT i FROM s) AS g"


def seed_sql(dialect, rows, users, password_hash):
    """The statements that fill an empty, migrated database."""
    pg = dialect == "postgresql"
    ts = (
        (lambda s: f"TIMESTAMP '2020-01-01' + ({s}) * INTERVAL '1 second'")
        if pg
        # the text SQLAlchemy itself stores (microseconds included), so keys compare alike
        else (lambda s: f"datetime('2020-01-01', '+' || ({s}) || ' seconds') || '.000000'")
    )
    hexed = (
        (lambda v, n: f"lpad(to_hex({v}), {n}, '0')")
        if pg
        else (lambda v, n: f"printf('%0{n}x', {v})")
    )
    # user 1 is the librarian; user 2 the heavy patron, with every 100th request (100 of
    # 10,000, 10,000 of 1,000,000): their own history grows with the library
    status = (
        "CASE WHEN m < 3 THEN 'pending' WHEN m < 20 THEN 'approved' "
        "WHEN m < 40 THEN 'rejected' WHEN m < 50 THEN 'cancelled' ELSE 'returned' END"
    ).replace("m", f"((i * 7 + i / {HEAVY_EVERY}) % 100)")
    reports = rows // REPORTS_PER_REQUEST
    report_id = f"{hexed('i', 8)} || '-0000-4000-8000-' || {hexed('i', 12)}"
    return [
        f"""INSERT INTO "user" (id, username, username_key, email, email_verified_at,
                                password_hash, role, created_at)
        SELECT i, 'scale' || i, 'scale' || i, 'scale' || i || '@example.org', {ts("i")},
               '{password_hash}', CASE WHEN i = 1 THEN 'admin' ELSE 'user' END, {ts("i")}
        FROM {series(dialect, users)}""",
        f"""INSERT INTO book_request (id, user_id, book_name, status, request_date)
        SELECT i, CASE WHEN i % {HEAVY_EVERY} = 0 THEN 2
                       ELSE 3 + (i * 7919) % {users - 2} END,
               'Book ' || i, {status}, {ts("i * 60")}
        FROM {series(dialect, rows)}""",
        f"""INSERT INTO report (id, user_id, status, progress, attempts, created_at, sizes)
        SELECT {report_id}, CASE WHEN i % 20 = 0 THEN 2 ELSE 3 + (i * 7919) % {users - 2} END,
               'done', 1.0, 1, {ts("i * 600")}, '{{}}'
        FROM {series(dialect, reports)}""",
    ] + (
        [
            "SELECT setval(pg_get_serial_sequence('\"user\"', 'id'), "
            '(SELECT max(id) FROM "user"))',
            "SELECT setval(pg_get_serial_sequence('book_request', 'id'), "
            "(SELECT max(id) FROM book_request))",
        ]
        if pg
        else []
    )


def migrate(url):
    """Create the schema with the service's own migrations."""
    os.environ["DATABASE_URL"] = url
    from flask_migrate import upgrade

    from app import create_app

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade(directory=os.path.join(ROOT, "migrations"))


def seed(url, size, say):
    """Fill the database at `url` with `size` requests, unless a run already did."""
    engine = create_engine(url)
    marker = f"{size}:{SEED_VERSION}"
    with engine.connect() as conn:
        if "scale_seed" in inspect(conn).get_table_names():
            if conn.execute(text("SELECT spec FROM scale_seed")).scalar() == marker:
                engine.dispose()
                # a kept database follows the code's migrations (new columns, indexes)
                migrate(url)
                return False
            raise SystemExit(f"{url} holds another seed: drop it first")
    engine.dispose()
    migrate(url)
    from models import db, password_hasher

    engine = create_engine(url)
    dialect = engine.dialect.name
    tables = [db.metadata.tables[name] for name in ("book_request", "report")]
    started = time.monotonic()
    with engine.begin() as conn:
        foreign_keys = []
        if dialect == "postgresql":
            # one commit at the end, so a lost commit only loses this seed; index sorts in
            # memory rather than in temporary files
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            # foreign keys after the rows too: one join checks them all, where a trigger per
            # inserted row would look each user up by itself
            foreign_keys = conn.execute(
                text(
                    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                    "FROM pg_constraint WHERE contype = 'f' "
                    "AND conrelid IN ('book_request'::regclass, 'report'::regclass)"
                )
            ).all()
            for table, name, _ in foreign_keys:
                conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        # rows first, indexes after: one sort per index instead of a million random inserts
        indexes = [index for table in tables for index in table.indexes]
        for index in indexes:
            conn.execute(text(f"DROP INDEX {index.name}"))
        for statement in seed_sql(dialect, size, SIZES[size], password_hasher.hash(PASSWORD)):
            conn.execute(text(statement))
        say(f"  rows in after {time.monotonic() - started:.0f} s; building indexes")
        for index in indexes:
            index.create(conn)
        for table, name, definition in foreign_keys:
            conn.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
        conn.execute(text("CREATE TABLE scale_seed (spec VARCHAR(40))"))
        conn.execute(text("INSERT INTO scale_seed VALUES (:spec)"), {"spec": marker})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # what autovacuum does by itself a little later: statistics and the visibility map
        if dialect == "postgresql":
            conn.execute(text("SET maintenance_work_mem = '1GB'"))
        conn.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "VACUUM"))
    engine.dispose()
    say(f"  seeded {size:,} requests in {time.monotonic() - started:.0f} s")
    return True


def database_url(backend, size):
    if backend == "sqlite":
        cache = os.environ.get("SCALE_CACHE", os.path.expanduser("~/.cache/library-bench-scale"))
        os.makedirs(cache, exist_ok=True)
        return f"sqlite:///{os.path.join(cache, f'library-{label(size)}.db')}"
    import psycopg

    server = make_url(os.environ["TEST_DATABASE_URL"])
    name = f"library_scale_{label(size).lower()}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return server.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )


# ---------------------------------------------------------------- timing


class Served:
    """The API under gunicorn (2 workers) on one database, with its own redis-server."""

    def __init__(self, url, tmp):
        from loadgen import Client
        from run import Managed, free_port, wait_for

        redis_port, self.port = free_port(), free_port()
        self.redis = Managed(
            "redis",
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            None, os.path.join(tmp, "scale-redis.log"),
        )  # fmt: skip
        redis = f"redis://127.0.0.1:{redis_port}"
        self.secret = secrets.token_urlsafe(48)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "FLASK_"))}
        env.update(
            DATABASE_URL=url, REDIS_URL=redis, CELERY_BROKER_URL=f"{redis}/1",
            CELERY_RESULT_BACKEND=f"{redis}/2", RATELIMIT_STORAGE_URI=f"{redis}/3",
            RATELIMIT_ENABLED="false", JWT_SECRET_KEY=self.secret,
            JWT_ACCESS_TOKEN_EXPIRES="7200", MAIL_BACKEND="console",
            INSTANCE_PATH=os.path.join(tmp, "instance"), BIND=f"127.0.0.1:{self.port}",
            WEB_CONCURRENCY="2",
        )  # fmt: skip
        self.api = Managed(
            "api",
            [os.path.join(BIN, "gunicorn"), "--config", "gunicorn.conf.py", "app:create_app()"],
            env, os.path.join(tmp, "scale-api.log"),
        )  # fmt: skip
        self.client = Client(self.port, timeout=120)

        def up():
            if not self.api.alive():
                raise RuntimeError(f"the API died at start:\n{self.api.log()[-3000:]}")
            try:
                return self.client.request("GET", "/openapi.json")[0] == 200
            except OSError:
                return False

        wait_for(up, 120, "the API")

    def stop(self):
        self.client = None
        self.api.stop()
        self.redis.stop()

    def token(self, username):
        body = {"username": username, "password": PASSWORD}
        status, raw = self.client.request("POST", "/login", body=body)
        assert status == 200, raw
        return {"Authorization": f"Bearer {json.loads(raw)['access_token']}"}

    def get(self, path, headers):
        """Milliseconds of one GET, and its body."""
        began = time.perf_counter()
        status, raw = self.client.request("GET", path, headers=headers)
        took = (time.perf_counter() - began) * 1000
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {raw[:300]}")
        return took, json.loads(raw)


# (name, who, path); {heavy} is the heavy patron's id
ROUTES = [
    ("librarian GET /requests", "librarian", "/requests"),
    ("librarian GET /requests?status=pending", "librarian", "/requests?status=pending"),
    ("librarian GET /requests?status=returned", "librarian", "/requests?status=returned"),
    ("librarian GET /requests?user_id=heavy", "librarian", "/requests?user_id=2"),
    ("librarian GET /requests?user_id=heavy&status=approved", "librarian",
     "/requests?user_id=2&status=approved"),
    ("patron GET /requests (heavy history)", "heavy", "/requests"),
    ("patron GET /requests?status=returned (heavy)", "heavy", "/requests?status=returned"),
    ("patron GET /requests (typical)", "typical", "/requests"),
    ("librarian GET /users", "librarian", "/users"),
    ("librarian GET /reports", "librarian", "/reports"),
    ("patron GET /reports (heavy)", "heavy", "/reports"),
]  # fmt: skip


def deep_path(served, path, headers, first_page):
    """Walk `next` to row 9,900, or the middle of a shorter list; return the path of the page
    that follows there, 20 a page, as a client deep in the list asks it."""
    total = first_page["total"]
    depth = 9_900 if total is None else min(9_900, total // 2)
    if depth < 2:
        return None
    step = min(100, depth)
    sep = "&" if "?" in path else "?"
    url, walked = f"{path}{sep}per_page={step}", 0
    while walked < depth:
        status, raw = served.client.request("GET", url, headers=headers)
        page = json.loads(raw)
        if status != 200 or not page["next"]:
            return None
        parts = urlsplit(page["next"])
        url, walked = f"{parts.path}?{parts.query}", walked + step
    return url.replace(f"per_page={step}", "per_page=20")


def measure(urls, tmp, say):
    """Time every route on the databases {size: url} of one backend; return
    {size: {(route, where): ms}}.

    Every database is served at once and each request goes to each size in turn (the order
    rotating), so a burst of other load on the machine falls on all sizes alike.
    """
    served = {}
    try:
        for size, url in urls.items():
            served[size] = Served(url, tmp)
        who = {
            size: {
                "librarian": one.token("scale1"),
                "heavy": one.token("scale2"),
                "typical": one.token("scale3"),
            }
            for size, one in served.items()
        }
        times = {size: {} for size in served}
        for name, caller, path in ROUTES:
            sep = "&" if "?" in path else "?"
            paths, found = {}, {}
            for size, one in served.items():
                headers = who[size][caller]
                _, first = one.get(path, headers)
                found[size] = first["total"]
                paths[size, "page 1"] = path
                if first["total"] is None or first["total"] > 9_980:
                    paths[size, "page 500"] = f"{path}{sep}page=500"
                deep = deep_path(one, path, headers, first)
                if deep:
                    paths[size, "deep cursor"] = deep
            for where in ("page 1", "page 500", "deep cursor"):
                sizes = [size for size in served if (size, where) in paths]
                took = {size: [] for size in sizes}
                for n in range(REPEATS + 2):
                    shift = n % len(sizes) if sizes else 0
                    for size in sizes[shift:] + sizes[:shift]:
                        ms, _ = served[size].get(paths[size, where], who[size][caller])
                        if n >= 2:  # two warm-ups
                            took[size].append(ms)
                for size in sizes:
                    times[size][name, where] = statistics.median(took[size])
            say(f"    {name}: " + "; ".join(
                f"{label(size)} ({'over 10,000' if found[size] is None else f'{found[size]:,}'}"
                " rows) " + ", ".join(
                    f"{where} {ms:.1f}" for (route, where), ms in times[size].items()
                    if route == name
                )
                for size in served
            ) + " ms")  # fmt: skip
        return times
    finally:
        for one in served.values():
            one.stop()


def run(with_10m=False, rounds=2, say=print):
    """Seed (once) every database, then time each backend's sizes `rounds` times; keep the
    lower median of each cell, so that a burst of someone else's load counts less."""
    import tempfile

    backends = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])
    tmp = tempfile.mkdtemp(prefix="library-scale-")
    databases = {}
    for backend in backends:
        sizes = [10_000, 1_000_000] + ([10_000_000] if with_10m and backend != "sqlite" else [])
        for size in sizes:
            databases.setdefault(backend, {})[size] = url = database_url(backend, size)
            say(f"{backend}, {size:,} requests: seeding (once)")
            seed(url, size, say)
    results, loads = {}, {}
    for round_number in range(1, rounds + 1):
        for backend, urls in databases.items():
            say(f"round {round_number}: {backend}, " + ", ".join(label(s) for s in urls))
            load_before = os.getloadavg()[0]
            for size, times in measure(urls, tmp, say).items():
                best = results.setdefault((backend, size), {})
                for cell, ms in times.items():
                    best[cell] = min(ms, best.get(cell, ms))
            load = (load_before, os.getloadavg()[0])
            loads.setdefault(backend, []).append(load)
            say(f"  load average {load[0]:.1f} before, {load[1]:.1f} after")
    notes = [
        f"{backend}: load average (1 min) before/after each round: "
        + ", ".join(f"{before:.1f}/{after:.1f}" for before, after in pairs)
        + f" on {os.cpu_count()} CPUs"
        for backend, pairs in loads.items()
    ]
    return results, table(results, rounds) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def table(results, rounds=2):
    """Markdown: medians per size and the growth from the smallest, against the 2x target."""
    columns = sorted(results, key=lambda key: (key[0] != "sqlite", key[1]))
    head = ["route", "page"]
    for backend, size in columns:
        head.append(f"{backend} {label(size)}")
        if size != 10_000:
            head.append(f"growth {label(size)}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    worst = 0.0
    keys = list(dict.fromkeys(cell for times in results.values() for cell in times))
    order = [name for name, _, _ in ROUTES]
    keys.sort(
        key=lambda cell: (
            order.index(cell[0]),
            ["page 1", "page 500", "deep cursor"].index(cell[1]),
        )
    )
    for route, where in keys:
        cells = [route, where]
        for backend, size in columns:
            ms = results[backend, size].get((route, where))
            cells.append("-" if ms is None else f"{ms:.1f} ms")
            if size != 10_000:
                base = results[backend, 10_000].get((route, where))
                growth = ms / base if ms and base else None
                if growth and size == 1_000_000:
                    worst = max(worst, growth)
                cells.append("-" if growth is None else f"{growth:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    verdict = "met" if worst <= 2 else "NOT met"
    lines.append("")
    lines.append(f"Largest growth from 10k to 1M: {worst:.2f}x (target 2x: {verdict}).")
    lines.append(
        f"Each cell: the lowest of {rounds} rounds' medians of {REPEATS} requests, one at a "
        "time, each request sent to every size in turn. "
        "'-': no such page at that size (page 500 needs 10,000 matching rows)."
    )
    return "\n".join(lines)


def main(with_10m=False, rounds=2):
    began = time.monotonic()

    def say(message):
        print(f"[{time.monotonic() - began:6.1f}s] {message}", flush=True)

    _, text_table = run(with_10m, rounds, say=say)
    print()
    print(text_table)
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    path = os.path.join(BENCH, "results", "scale.md")
    with open(path, "w", encoding="utf-8") as out:
        out.write(text_table + "\n")
    print(f"written to {os.path.relpath(path, ROOT)}")
