"""Page envelopes: page numbers over the first 10,000 rows, keyset cursors to any depth.

A page never reads more than it shows: rows come from an index in the list's order, the
total is counted no further than 10,001 rows, and deep pages continue from a cursor
(the last row's order key, signed) instead of skipping rows with OFFSET.
"""

from datetime import datetime

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

    def after(self, values):
        """The condition for rows that come after `values` in this order."""
        pairs = zip(self.key, values, strict=True)
        params = [bindparam(None, value, type_=column.type) for column, value in pairs]
        left = self.key[0] if len(self.key) == 1 else tuple_(*self.key)
        right = params[0] if len(params) == 1 else tuple_(*params)
        return left < right if self.descending else left > right

    def key_of(self, item):
        return [encode_value(getattr(item, column.key)) for column in self.key]

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
    return URLSafeSerializer(current_app.config["JWT_SECRET_KEY"], salt="page-cursor")


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


def next_url(listing, args, offset, key):
    cursor = serializer().dumps({"l": listing.name, "o": offset, "k": key})
    params = {name: value for name, value in args.items() if name not in ("page", "cursor")}
    return url_for(request.endpoint, _external=True, cursor=cursor, **params)


def count_rows(listing, statement):
    """Count the matching rows, reading at most MAX_COUNTED + 1 of them."""
    capped = (
        statement.with_only_columns(*listing.key)
        .order_by(*listing.order_by())
        .limit(MAX_COUNTED + 1)
        .subquery()
    )
    return db.session.scalar(select(func.count()).select_from(capped))


def rows_at_offset(listing, statement, offset, per_page):
    """The rows `offset` places into the list: skipped in the index alone, then read by id.

    OFFSET over whole rows would fetch every skipped row from the table; the ids alone come
    from the index (PostgreSQL's index-only scan, SQLite's covering index).
    """
    row_id = listing.key[-1]
    ids = db.session.scalars(
        statement.with_only_columns(row_id)
        .order_by(*listing.order_by())
        .offset(offset)
        .limit(per_page + 1)
    ).all()
    if not ids:
        return []
    # by id alone: a row that changed since it was counted in is still this page's row
    rows = db.session.scalars(select(row_id.class_).where(row_id.in_(ids)))
    found = {getattr(row, row_id.key): row for row in rows}
    return [found[each] for each in ids if each in found]


def paginate(listing, statement, args):
    """Run `statement` for the page `args` ask for; return the envelope and its headers."""
    per_page = args["per_page"]
    ordered = statement.order_by(*listing.order_by()).limit(per_page + 1)
    if args.get("cursor") is not None:
        offset, key = read_cursor(listing, args["cursor"])
        rows = db.session.scalars(ordered.where(listing.after(key))).all()
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
            rows = rows_at_offset(listing, statement, offset, per_page)
        else:
            rows = db.session.scalars(ordered).all()
    items = rows[:per_page]
    total = count_rows(listing, statement)
    exceeds = total > MAX_COUNTED
    link = None
    if len(rows) > per_page:
        link = next_url(listing, args, offset + per_page, listing.key_of(items[-1]))
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
