"""accounts: login sessions, case-insensitive usernames, email verification, disabling,
and user ids that SQLite never hands out twice

Revision ID: 8384dc82afa1
Revises: c3e9f1a7b254
Create Date: 2026-11-22 03:53:03.632007

"""
import unicodedata

import sqlalchemy as sa
from alembic import op

import models

# revision identifiers, used by Alembic.
revision = "8384dc82afa1"
down_revision = "c3e9f1a7b254"
branch_labels = None
depends_on = None


def username_key(username):
    # the same form as models.username_key, frozen here as this migration saw it
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username).casefold())


def fill_username_keys():
    """Key every account; an account whose name differs from an older one only in case
    gets a key that cannot collide (it still logs in by email, and keeps its username)."""
    user = sa.table("user", sa.column("id", sa.Integer), sa.column("username", sa.String))
    keyed = sa.table("user", sa.column("id", sa.Integer), sa.column("username_key", sa.String))
    conn = op.get_bind()
    seen = set()
    for user_id, username in conn.execute(sa.select(user.c.id, user.c.username).order_by("id")):
        key = username_key(username)
        if key in seen:
            key = f"{key[:60]}#{user_id}"
        seen.add(key)
        conn.execute(sa.update(keyed).where(keyed.c.id == user_id).values(username_key=key))


def upgrade():
    op.create_table(
        "login_session",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("refresh_jti", sa.String(length=36), nullable=False),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", models.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.create_index("ix_login_session_expires_at", ["expires_at"], unique=False)
        batch_op.create_index("ix_login_session_user_id", ["user_id"], unique=False)

    # sessions replace per-token revocation; tokens issued before carry no session anyway
    with op.batch_alter_table("revoked_token", schema=None) as batch_op:
        batch_op.drop_index("ix_revoked_token_expires_at")
    op.drop_table("revoked_token")

    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_key", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("email_verified_at", models.UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    fill_username_keys()
    # on SQLite the table is rebuilt (env.py turns foreign keys off around migrations, so
    # no request or report is cascaded away), now with AUTOINCREMENT
    with op.batch_alter_table(
        "user", recreate="auto", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.alter_column("username_key", existing_type=sa.String(length=80), nullable=False)
        batch_op.alter_column("email", existing_type=sa.VARCHAR(length=254), nullable=True)
        batch_op.create_unique_constraint("uq_user_username_key", ["username_key"])


def downgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_constraint("uq_user_username_key", type_="unique")
        batch_op.alter_column("email", existing_type=sa.VARCHAR(length=254), nullable=False)
        batch_op.drop_column("active")
        batch_op.drop_column("email_verified_at")
        batch_op.drop_column("username_key")

    op.create_table(
        "revoked_token",
        sa.Column("id", sa.INTEGER(), nullable=False),
        sa.Column("jti", sa.VARCHAR(length=64), nullable=False),
        sa.Column("user_id", sa.INTEGER(), nullable=True),
        sa.Column("expires_at", sa.DATETIME(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("jti"),
    )
    with op.batch_alter_table("revoked_token", schema=None) as batch_op:
        batch_op.create_index("ix_revoked_token_expires_at", ["expires_at"], unique=False)

    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.drop_index("ix_login_session_user_id")
        batch_op.drop_index("ix_login_session_expires_at")
    op.drop_table("login_session")
