"""Librarian-only account administration: list users, change roles, disable accounts."""

from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from extensions import Blueprint
from models import User, db
from pagination import PAGE_HEADERS, Listing, paginate
from schemas import PageArgsSchema, UserSchema, UserUpdateSchema, page_schema

blp = Blueprint("users", __name__, description="Accounts (librarians only)")

# oldest account first
# built once, so the page queries made from it are too
USERS_QUERY = select(User)
USERS = Listing("users", User.id, descending=False)


@blp.route("/users")
class Users(MethodView):
    @blp.auth_required(admin=True)
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, page_schema(UserSchema), headers=PAGE_HEADERS)
    @blp.error_responses(400)
    def get(self, args):
        """List every account"""
        return paginate(USERS, USERS_QUERY, args)


# ids past PostgreSQL's integer range cannot exist: 404 at routing, not a database error
@blp.route("/users/<int(max=2147483647):user_id>")
class UserDetail(MethodView):
    @blp.auth_required(admin=True)
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    @blp.error_responses(404, 409)
    def patch(self, data, user_id):
        """Change an account's role, or disable or enable it"""
        user = db.session.get(User, user_id)
        if user is None:
            abort(404, message=f"User {user_id} not found.")
        user.update_access(**data)
        return user
