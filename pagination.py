"""Page envelopes: page numbers over the first 10,000 rows, keyset cursors to any depth.

A page never reads more than it shows: rows come from an index in the list's order, the
total is counted no further than 10,001 rows, and deep pages continue from a cursor
(the last row's order key, signed) instead of skipping rows with OFFSET.
"""

import functools
import weakref
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

from flask import current_app, request, url_for
from flask_smorest import abort
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import bindparam, func, select, tuple_

from models import db

# the most rows a count reads, and the deepest row a page number may reach
MAX_COUNTED = 10_000
# the longest string a cursor key may hold (report ids are 36-character UUIDs)
MAX_KEY_LENGTH = 64

# documents the Link header every page but the last carries
PAGE_HEADERS = {
    "Link": {
        "description": 'the next page, as in `next`: `<URL>; rel="next"` (RFC 8288)',
        "schema": {"type": "string"},
    }
}


class Listing:
    """One list the API offers: a name bound into its cursors and a unique, immutable order.

    The order key must be unique and never change, so a cursor marks one place for good:
    rows inserted or updated while a client walks the list neither shift nor repeat it.
    Its last column is the row's id, unique by itself.
    """

    def __init__(self, name, *key, descending=True):
        self.name = name
        self.key = key
        self.descending = descending

    def order_by(self):
        return [column.desc() if self.descending else column.asc() for column in self.key]

    def key_of(self, item):
        """The order key of an item: an entity or a row, read by attribute, or a mapping."""
        if isinstance(item, Mapping):
            return [item[column.key] for column in self.key]
        return [getattr(item, column.key) for column in self.key]

    def parse_key(self, values):
        """Turn a cursor's key back into column values; None when it does not fit."""
        if not isinstance(values, list) or len(values) != len(self.key):
            return None
        pairs = zip(self.key, values, strict=True)
        parsed = [decode_value(column.type.python_type, value) for column, value in pairs]
        return None if any(value is None for value in parsed) else parsed


def encode_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def decode_value(kind, value):
    """Return `value` as a `kind`, or None when it is not one."""
    if kind is int:
        # bool is an int to Python, but never a key
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
        return value if ok else None
    if not isinstance(value, str) or len(value) > MAX_KEY_LENGTH:
        return None
    if kind is datetime:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return value


def serializer():
    # every API host shares the JWT secret, so a cursor from one host works on any other
    return cursor_serializer(current_app.config["JWT_SECRET_KEY"])


class CursorSerializer(URLSafeSerializer):
    """URLSafeSerializer with its one signer made once, and that signer's key derived once.

    The cursors are the same bytes: the same HMAC-SHA1 under the same key, derived from the
    secret and salt as itsdangerous derives it; only the derivation (a SHA-1 of salt and
    secret) and a new Signer are no longer paid for every cursor signed or read.
    """

    def __init__(self, secret, salt):
        super().__init__(secret, salt=salt)
        key = super().make_signer().derive_key()
        self.cursor_signer = self.signer(key, salt=salt, key_derivation="none")

    def make_signer(self, salt=None):
        if salt not in (None, self.salt):
            return super().make_signer(salt)
        return self.cursor_signer


@functools.lru_cache(maxsize=4)
def cursor_serializer(secret):
    # built once per secret rather than for every page
    return CursorSerializer(secret, salt="page-cursor")


def read_cursor(listing, cursor):
    """Return (rows before the page, key of the row before it); a bad cursor is 400."""
    try:
        data = serializer().loads(cursor)
    except BadData:
        data = None
    if isinstance(data, dict) and data.get("l") == listing.name:
        offset = data.get("o")
        key = listing.parse_key(data.get("k"))
        if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0 and key:
            return offset, key
    abort(400, message="The cursor is not valid: follow the `next` link of a page as given.")


# the characters werkzeug leaves unquoted in a query it builds (werkzeug.urls._urlencode)
QUERY_SAFE = "!$'()*,/:;?@"


# how many list URLs an app keeps (one per list and host it is reached by)
LIST_URLS_KEPT = 64


def list_url(endpoint):
    """The list's own URL, as url_for builds it, kept per app for what url_for builds it
    from: the request's scheme, host and script root."""
    environ = request.environ
    known = current_app.extensions.setdefault("list_urls", {})
    where = (
        endpoint,
        environ.get("wsgi.url_scheme"),
        environ.get("HTTP_HOST"),
        environ.get("SERVER_NAME"),
        environ.get("SERVER_PORT"),
        environ.get("SCRIPT_NAME"),
    )
    url = known.get(where)
    if url is None:
        url = url_for(endpoint, _external=True)
        if len(known) >= LIST_URLS_KEPT:
            # the Host header is the client's to choose: a few are kept, not every one
            known.clear()
        known[where] = url
    return url


def next_url(listing, args, offset, key):
    """The next page's URL: url_for's, with the list's query as url_for would append it,
    but its base built once per host rather than for every page."""
    cursor = serializer().dumps({"l": listing.name, "o": offset, "k": key})
    params = {name: value for name, value in args.items() if name not in ("page", "cursor")}
    if request.view_args:
        # a list under a path with parameters: url_for fills them in
        return url_for(request.endpoint, _external=True, cursor=cursor, **params)
    base = list_url(request.endpoint)
    query = [("cursor", cursor)]
    query += [(name, value) for name, value in params.items() if value is not None]
    return f"{base}?{urlencode(query, doseq=True, safe=QUERY_SAFE)}"


def capped_count(listing, statement):
    """The number of matching rows, reading at most MAX_COUNTED + 1 of them: a scalar
    subquery, so that it rides along with the page's own query."""
    capped = (
        statement.with_only_columns(*listing.key)
        .order_by(*listing.order_by())
        .limit(MAX_COUNTED + 1)
        .subquery()
    )
    return select(func.count()).select_from(capped).scalar_subquery()


class PageQueries:
    """The statements that read pages of one list query, with every value a bind parameter
    (page_limit, page_offset, the cursor's key_0, key_1 ..., ids), so that they are built,
    and their cache keys computed, once per list query rather than once per request."""

    def __init__(self, listing, statement):
        ordered = statement.order_by(*listing.order_by()).limit(bindparam("page_limit"))
        count = capped_count(listing, statement)
        key = [bindparam(f"key_{n}", type_=column.type) for n, column in enumerate(listing.key)]
        left = listing.key[0] if len(key) == 1 else tuple_(*listing.key)
        right = key[0] if len(key) == 1 else tuple_(*key)
        after = left < right if listing.descending else left > right
        row_id = listing.key[-1]
        described = statement.column_descriptions[0]
        # a query of the entity gives entities, one of columns gives rows read by name
        entity = described.get("entity")
        self.whole = entity is not None and described["expr"] is entity
        columns = [described["expr"]] if self.whole else list(statement.selected_columns)
        self.first = ordered.add_columns(count)
        self.after = ordered.where(after).add_columns(count)
        self.ids_at = (
            statement.with_only_columns(row_id)
            .order_by(*listing.order_by())
            .offset(bindparam("page_offset"))
            .limit(bindparam("page_limit"))
            .add_columns(count)
        )
        # by id alone: a row that changed since it was counted in is still this page's row
        self.by_ids = select(*columns).where(row_id.in_(bindparam("ids", expanding=True)))
        self.count = select(count)

    def item(self, row):
        # a row of columns is read by attribute, as an entity would be
        return row[0] if self.whole else row

    def execute(self, statement, params):
        """Run one of these statements: entities through the ORM, plain columns on the
        session's connection, without the ORM's work per statement and per row."""
        if self.whole:
            return db.session.execute(statement, params)
        return db.session.connection().execute(statement, params)


# one PageQueries per list query that lives on (a route's query built once); a query built
# per request is dropped with it
PAGE_QUERIES = weakref.WeakKeyDictionary()


def page_queries(listing, statement):
    found = PAGE_QUERIES.get(statement)
    if found is None or found[0] is not listing:
        found = PAGE_QUERIES[statement] = (listing, PageQueries(listing, statement))
    return found[1]


def counted(queries, statement, params):
    """Run `statement`, whose last column is the count: (its rows, the count), the count None
    when no row came back to carry it."""
    rows = queries.execute(statement, params).all()
    return rows, (rows[0][-1] if rows else None)


def paginate(listing, statement, args, params=None):
    """Run `statement` for the page `args` ask for; return the envelope and its headers.

    `statement` may hold bind parameters, whose values come in `params`; built once and kept
    (a route's query for each set of filters), it is turned into page queries only once.
    One query reads the page and counts the list; a second one only where the page is
    empty, or deep in the list by page number.
    """
    queries = page_queries(listing, statement)
    per_page = args["per_page"]
    params = {**(params or {}), "page_limit": per_page + 1}
    if args.get("cursor") is not None:
        offset, key = read_cursor(listing, args["cursor"])
        params.update((f"key_{n}", value) for n, value in enumerate(key))
        rows, total = counted(queries, queries.after, params)
        rows = [queries.item(row) for row in rows]
        page = offset // per_page + 1
    else:
        page = args["page"]
        offset = (page - 1) * per_page
        if offset >= MAX_COUNTED:
            abort(
                400,
                message=f"Page numbers reach the first {MAX_COUNTED:,} rows only: to go "
                "deeper, follow the `next` link (its cursor) from page to page.",
            )
        if offset:
            # the ids alone are skipped, in the index (PostgreSQL's index-only scan, SQLite's
            # covering index); OFFSET over whole rows would fetch every skipped row
            found, total = counted(queries, queries.ids_at, {**params, "page_offset": offset})
            ids = [row[0] for row in found]
            by_id = {}
            if ids:
                for row in queries.execute(queries.by_ids, {"ids": ids}):
                    item = queries.item(row)
                    by_id[listing.key_of(item)[-1]] = item
            rows = [by_id[each] for each in ids if each in by_id]
        else:
            rows, total = counted(queries, queries.first, params)
            rows = [queries.item(row) for row in rows]
    items = rows[:per_page]
    if total is None:
        total = queries.execute(queries.count, params).scalar()
    exceeds = total > MAX_COUNTED
    link = None
    if len(rows) > per_page:
        key = [encode_value(value) for value in listing.key_of(items[-1])]
        link = next_url(listing, args, offset + per_page, key)
    envelope = {
        "items": items,
        "page": page,
        "per_page": per_page,
        "total": None if exceeds else total,
        "pages": None if exceeds else -(-total // per_page),
        "total_exceeds": exceeds,
        "next": link,
    }
    return envelope, ({"Link": f'<{link}>; rel="next"'} if link else {})
