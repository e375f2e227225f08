"""Book requests: patrons create, list, cancel and renew; librarians approve, reject, return."""

import functools

from flask import jsonify
from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import abort
from sqlalchemy import bindparam, select

from extensions import Blueprint, per_user_limit
from models import BookRequest, db
from pagination import PAGE_HEADERS, Listing, paginate
from schemas import (
    BookRequestCreateSchema,
    BookRequestQuerySchema,
    BookRequestSchema,
    RejectSchema,
    dump_book_request,
    page_schema,
)

blp = Blueprint("book_requests", __name__, description="Book requests and the librarian workflow")

# POST /requests and POST /request-book count against one limit
create_limit = per_user_limit("REQUEST_RATE_LIMIT", scope="create-request")

TABLE = BookRequest.__table__
# newest first; ids are unique and never change, so a cursor holds its place. The table's
# column, not the entity's: the list's statements stay plain SQL, without the ORM's work
REQUESTS = Listing("requests", TABLE.c.id)


@functools.cache
def requests_query(*filters):
    """The list's query for a set of filters ("status", "user_id"), their values left as bind
    parameters: built once for each set. The columns the schema dumps, in its order, rather
    than entities: the page's rows go straight to the dump, without the ORM's identity map."""
    query = select(*(TABLE.c[name] for name in dump_book_request.fields))
    for name in filters:
        query = query.where(TABLE.c[name] == bindparam(name))
    return query


# ids past PostgreSQL's integer range cannot exist: 404 at routing, not a database error
REQUEST_URL = "/requests/<int(max=2147483647):request_id>"


def get_book_request(request_id):
    """Return the request if the caller may see it; someone else's is 404, like a missing one."""
    book_request = db.session.get(BookRequest, request_id)
    if book_request is None or (
        book_request.user_id != current_user.id and not current_user.is_admin
    ):
        abort(404, message=f"Book request {request_id} not found.")
    return book_request


def create_book_request(data):
    row = BookRequest.create(current_user, **data)
    # the inserted row, dumped by hand as BookRequestSchema would
    return jsonify(dump_book_request(row)), 201, {"Location": f"/requests/{row.id}"}


@blp.route("/requests")
class BookRequests(MethodView):
    @blp.auth_required()
    @blp.arguments(BookRequestQuerySchema, location="query")
    @blp.response(200, page_schema(BookRequestSchema), headers=PAGE_HEADERS)
    @blp.error_responses(400)
    def get(self, args):
        """List your requests, newest first (librarians see everyone's)"""
        params = {}
        if not current_user.is_admin:
            params["user_id"] = current_user.id
        elif "user_id" in args:
            params["user_id"] = args["user_id"]
        if "status" in args:
            params["status"] = args["status"]
        page, headers = paginate(REQUESTS, requests_query(*sorted(params)), args, params)
        # dumped by hand, as the page schema would (its other fields are plain values already):
        # marshmallow's work per field cost more than reading the rows
        page["items"] = [dump_book_request.row(row) for row in page["items"]]
        return jsonify(page), headers

    @blp.auth_required()
    @create_limit
    @blp.arguments(BookRequestCreateSchema)
    @blp.response(201, BookRequestSchema)
    @blp.error_responses(409, 429)
    def post(self, data):
        """Request a book"""
        return create_book_request(data)


@blp.route("/request-book")
class RequestBook(MethodView):
    @blp.auth_required()
    @create_limit
    @blp.arguments(BookRequestCreateSchema)
    @blp.response(201, BookRequestSchema)
    @blp.error_responses(409, 429)
    def post(self, data):
        """Request a book (the tutorial's path; same as POST /requests)"""
        return create_book_request(data)


@blp.route(REQUEST_URL)
class BookRequestDetail(MethodView):
    @blp.auth_required()
    @blp.response(200, BookRequestSchema)
    @blp.error_responses(404)
    def get(self, request_id):
        """Show one request"""
        return get_book_request(request_id)


@blp.route(f"{REQUEST_URL}/cancel", methods=["POST"])
@blp.auth_required()
@per_user_limit("CANCEL_RATE_LIMIT")
@blp.response(200, BookRequestSchema)
@blp.error_responses(403, 404, 409, 429)
def cancel_request(request_id):
    """Cancel your own pending request"""
    book_request = get_book_request(request_id)
    if book_request.user_id != current_user.id:
        abort(403, message="Only the patron who made a request may cancel it.")
    return book_request.apply("cancel", current_user)


@blp.route(f"{REQUEST_URL}/approve", methods=["POST"])
@blp.auth_required(admin=True)
@blp.response(200, BookRequestSchema)
@blp.error_responses(404, 409)
def approve_request(request_id):
    """Approve a pending request; the loan is due in LOAN_DAYS days"""
    return get_book_request(request_id).apply("approve", current_user)


@blp.route(f"{REQUEST_URL}/reject", methods=["POST"])
@blp.auth_required(admin=True)
@blp.arguments(RejectSchema)
@blp.response(200, BookRequestSchema)
@blp.error_responses(404, 409)
def reject_request(data, request_id):
    """Reject a pending request, giving a reason"""
    return get_book_request(request_id).apply("reject", current_user, reason=data["reason"])


@blp.route(f"{REQUEST_URL}/return", methods=["POST"])
@blp.auth_required(admin=True)
@blp.response(200, BookRequestSchema)
@blp.error_responses(404, 409)
def return_request(request_id):
    """Mark an approved request's book as returned"""
    return get_book_request(request_id).apply("return", current_user)


@blp.route(f"{REQUEST_URL}/renew", methods=["POST"])
@blp.auth_required()
@blp.response(200, BookRequestSchema)
@blp.error_responses(404, 409)
def renew_request(request_id):
    """Renew an approved loan: due LOAN_DAYS later, at most MAX_RENEWALS times"""
    return get_book_request(request_id).renew()
