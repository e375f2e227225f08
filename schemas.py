"""Marshmallow schemas for every request body, query string and response.

The field types they share (Text, Email, StrictBool, FullMatch) are in schema_fields.py.
"""

from flask_smorest.error_handler import ErrorSchema as SmorestErrorSchema
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from models import RequestStatus
from report_formats import FORMATS
from schema_fields import EMAIL_MAX_LENGTH, Email, FullMatch, StrictBool, Text


class ErrorSchema(SmorestErrorSchema):
    """flask-smorest's error body, as errors.Api gives it to every error."""

    code = fields.Int(metadata={"description": "HTTP status code"})
    status = fields.Str(metadata={"description": "HTTP reason phrase"})
    message = fields.Str()
    errors = fields.Dict(metadata={"description": "validation details, by location and field"})


class PageArgsSchema(Schema):
    page = fields.Int(
        load_default=1,
        validate=validate.Range(min=1, max=1_000_000),
        metadata={"description": "page number; pages past the 10,000th row are 400: use cursor"},
    )
    per_page = fields.Int(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.Str(
        validate=validate.Length(max=1000),
        metadata={"description": "opaque; from a page's `next` link. Takes the place of page"},
    )


def page_schema(item_schema):
    """Return the schema of a page envelope holding `item_schema` items."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema)),
            "page": fields.Int(),
            "per_page": fields.Int(),
            "total": fields.Int(
                allow_none=True, metadata={"description": "null past 10,000 matching rows"}
            ),
            "pages": fields.Int(
                allow_none=True, metadata={"description": "null past 10,000 matching rows"}
            ),
            "total_exceeds": fields.Bool(
                metadata={"description": "true when more than 10,000 rows match"}
            ),
            "next": fields.Str(
                allow_none=True,
                metadata={
                    "description": "the following page's URL (also in Link); null on the last"
                },
            ),
        },
        name=f"{item_schema.__name__.removesuffix('Schema')}PageSchema",
    )


class RegisterSchema(Schema):
    username = fields.Str(
        required=True,
        validate=[
            validate.Length(min=3, max=80),
            FullMatch(r"^[A-Za-z0-9_.-]+$", error="Use only letters, digits, '_', '.' and '-'."),
        ],
    )
    email = Email(required=True, validate=validate.Length(max=EMAIL_MAX_LENGTH))
    password = fields.Str(required=True, load_only=True, validate=validate.Length(min=8, max=128))


class LoginSchema(Schema):
    # Text: PostgreSQL refuses a NUL even in a lookup
    username = Text(
        required=True,
        validate=validate.Length(min=1, max=254),
        metadata={"description": "username or email"},
    )
    password = fields.Str(required=True, load_only=True, validate=validate.Length(min=1, max=128))


class TokenSchema(Schema):
    access_token = fields.Str()
    refresh_token = fields.Str()
    token_type = fields.Str()
    expires_in = fields.Int(metadata={"description": "seconds until the access token expires"})


class MessageSchema(Schema):
    message = fields.Str()


class VerifyEmailSchema(Schema):
    # Text: its no-control-character rule is in the OpenAPI document as a pattern
    token = Text(
        required=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "the token from the verification mail"},
    )


class PasswordChangeSchema(Schema):
    current_password = fields.Str(
        required=True, load_only=True, validate=validate.Length(min=1, max=128)
    )
    new_password = fields.Str(
        required=True, load_only=True, validate=validate.Length(min=8, max=128)
    )


class UserSchema(Schema):
    id = fields.Int(dump_only=True)
    username = fields.Str(dump_only=True)
    email = fields.Str(dump_only=True, allow_none=True)
    role = fields.Str(dump_only=True)
    notify = fields.Bool(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    active = fields.Bool(dump_only=True, metadata={"description": "false once disabled"})
    email_verified = fields.Bool(dump_only=True)
    mail_paused = fields.Str(
        dump_only=True,
        allow_none=True,
        metadata={"description": "why nothing but verification mail is sent, or null"},
    )


class MeUpdateSchema(Schema):
    notify = StrictBool(
        required=True, metadata={"description": "decision mails and due-soon nudges on or off"}
    )


class UserUpdateSchema(Schema):
    role = fields.Str(validate=validate.OneOf(["user", "admin"]))
    active = StrictBool(
        metadata={"description": "false disables the account and ends its sessions"},
    )

    @validates_schema
    def something_to_change(self, data, **kwargs):
        if not data:
            raise ValidationError("Give role and/or active.", "_schema")


class BookRequestCreateSchema(Schema):
    book_name = Text(required=True, validate=validate.Length(min=1, max=200))
    author = Text(load_default=None, allow_none=True, validate=validate.Length(max=200))
    note = Text(
        load_default=None, allow_none=True, multiline=True, validate=validate.Length(max=500)
    )


class BookRequestSchema(Schema):
    id = fields.Int()
    user_id = fields.Int()
    book_name = fields.Str()
    author = fields.Str(allow_none=True)
    note = fields.Str(allow_none=True)
    status = fields.Str()
    request_date = fields.DateTime()
    decided_at = fields.DateTime(allow_none=True)
    decided_by = fields.Int(allow_none=True)
    reason = fields.Str(allow_none=True)
    due_date = fields.DateTime(allow_none=True)
    returned_at = fields.DateTime(allow_none=True)
    renewals = fields.Int()


class PlainDump:
    """Gives a row or object the dict `schema_class` would dump, without marshmallow.

    For the hot paths (a list's page of rows, a created request), where marshmallow's work
    per field costs more than reading the row. It handles Int, Str and DateTime fields only
    (refused here otherwise), on values read from columns of those types: an int or a str
    is already what the field dumps, a datetime is written as marshmallow writes it (ISO
    8601, `isoformat()`), and None stays None. tests/test_pagination.py compares it with the
    schema's own dump.
    """

    def __init__(self, schema_class):
        names, times = [], []
        for name, field in schema_class._declared_fields.items():
            kind = type(field)
            if field.load_only or field.data_key not in (None, name) or field.attribute:
                raise TypeError(f"{schema_class.__name__}.{name}: not a plain field")
            if kind is fields.DateTime and field.format in (None, "iso"):
                times.append(name)
            elif kind not in (fields.Int, fields.Str):
                raise TypeError(f"{schema_class.__name__}.{name}: {kind.__name__} is not handled")
            names.append(name)
        # the fields in the schema's order: row() takes values in this order
        self.fields = tuple(names)
        self.times = tuple(times)
        # per field, in that order: whether it is a datetime
        self.layout = tuple((name, name in times) for name in names)

    def __call__(self, item):
        """Dump an object (or a row) read by attribute."""
        return self.finish({name: getattr(item, name) for name in self.fields})

    def row(self, values):
        """Dump a row whose first columns are `self.fields`, in that order (any after them,
        such as a page's count, are left out). One pass, for a page's every row."""
        return {
            name: value.isoformat() if is_time and value is not None else value
            for (name, is_time), value in zip(self.layout, values, strict=False)
        }

    def finish(self, data):
        for name in self.times:
            value = data[name]
            if value is not None:
                data[name] = value.isoformat()
        return data


dump_book_request = PlainDump(BookRequestSchema)


class BookRequestQuerySchema(PageArgsSchema):
    status = fields.Str(validate=validate.OneOf(list(RequestStatus)))
    user_id = fields.Int(
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={"description": "librarians only"},
    )


class RejectSchema(Schema):
    reason = Text(required=True, multiline=True, validate=validate.Length(min=1, max=500))


# years a report can cover: year 0 and 9999-12 would pass a plain YYYY-MM and then fail the
# worker, whose month bounds cannot hold them
MONTH = FullMatch(
    r"^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])$", error="Use the form YYYY-MM (1900-2999)."
)


class ReportConflictSchema(ErrorSchema):
    report_id = fields.Str(metadata={"description": "the report still being prepared"})


class ExportArgsSchema(Schema):
    month = fields.Str(load_default=None, allow_none=True, validate=MONTH)


class DownloadArgsSchema(Schema):
    format = fields.Str(load_default="html", validate=validate.OneOf(list(FORMATS)))


class ReportSchema(Schema):
    id = fields.Str()
    user_id = fields.Int()
    status = fields.Str()
    month = fields.Str(allow_none=True)
    scope = fields.Str(metadata={"description": "patron: the owner's requests; library: all"})
    progress = fields.Float()
    row_count = fields.Int(allow_none=True)
    attempts = fields.Int()
    error = fields.Str(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    emailed_at = fields.DateTime(allow_none=True)
    # set when retention deleted the files (status "expired"); downloads then answer 410
    expired_at = fields.DateTime(allow_none=True)
    status_url = fields.Method("get_status_url")
    download_urls = fields.Method("get_download_urls")

    def get_status_url(self, report):
        return f"/reports/{report.id}"

    def get_download_urls(self, report):
        if not report.is_done:
            return {}
        base = f"/reports/{report.id}/download?format="
        return {format: base + format for format in FORMATS}


class HealthSchema(Schema):
    status = fields.Str(metadata={"description": "ok, or degraded when no worker runs"})
    database = fields.Str(metadata={"description": "ok or down"})
    broker = fields.Str(metadata={"description": "ok or down"})
    worker = fields.Str(
        metadata={"description": "up, none (no live worker heartbeat) or unknown (Redis down)"}
    )
    workers = fields.Int(allow_none=True, metadata={"description": "workers with a live heartbeat"})
    message = fields.Str(metadata={"description": "what is missing, when degraded"})


class HealthDownSchema(ErrorSchema):
    database = fields.Str()
    broker = fields.Str()
    worker = fields.Str()
    workers = fields.Int(allow_none=True)
