"""Report exports: record and enqueue one, follow its progress, download the result."""

from flask import Response, stream_with_context
from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import abort
from sqlalchemy import bindparam, select

from extensions import Blueprint, per_user_limit
from models import Conflict, Report, ReportScope, db
from pagination import PAGE_HEADERS, Listing, paginate
from report_formats import FORMATS
from retention import begin_snapshot
from schemas import (
    DownloadArgsSchema,
    ExportArgsSchema,
    PageArgsSchema,
    ReportConflictSchema,
    ReportSchema,
    page_schema,
)
from tasks import enqueue_report, requeue_stranded_report

blp = Blueprint("reports", __name__, description="Report exports, built by the Celery worker")

# newest first; the id breaks ties between reports created in the same microsecond
REPORTS = Listing("reports", Report.created_at, Report.id)

# the list's queries, built once (so are the page queries made from them)
ALL_REPORTS = select(Report)
OWN_REPORTS = select(Report).where(Report.user_id == bindparam("user_id"))

# documents the download as the file it is, in the content type of its format
DOWNLOAD_RESPONSE = {
    "description": "the report file, as an attachment (format=" + " or format=".join(FORMATS) + ")",
    "content": {
        format.content_type.split(";")[0]: {"schema": {"type": "string"}}
        for format in FORMATS.values()
    },
}


def get_report(report_id):
    """Return the report if the caller may see it; someone else's is 404, like a missing one."""
    report = db.session.get(Report, str(report_id))
    if report is None or (report.user_id != current_user.id and not current_user.is_admin):
        abort(404, message=f"Report {report_id} not found.")
    return report


def export_report(month, scope=ReportScope.PATRON):
    try:
        report = Report.start(current_user, month, scope)
    except Conflict:
        # a queued report whose message was lost would block every export: publish it
        # again (the user still gets the 409 naming it)
        requeue_stranded_report(current_user.id)
        raise
    # the row is committed first: if the broker is down, the sweeper enqueues it later
    enqueue_report(report)
    return report, 202, {"Location": f"/reports/{report.id}"}


def export_view(limit, month_in_body=True):
    """Count the per-user `limit` (after the token check above it), parse the month (from
    the query, and the body too), document the 202, 409, 429, 503."""

    def decorate(view):
        view = blp.error_responses(429, 503)(view)
        active = "a report is still active"
        view = blp.alt_response(409, schema=ReportConflictSchema, description=active)(view)
        view = blp.response(202, ReportSchema)(view)
        if month_in_body:
            view = blp.arguments(ExportArgsSchema, required=False)(view)
        return limit(blp.arguments(ExportArgsSchema, location="query")(view))

    return decorate


# GET and POST /export-report count against one limit per user, the library report its own
EXPORT_LIMIT = per_user_limit("EXPORT_RATE_LIMIT", scope="export-report")
LIBRARY_EXPORT_LIMIT = per_user_limit("EXPORT_RATE_LIMIT", scope="library-report")


@blp.route("/export-report")
class ExportReport(MethodView):
    @blp.auth_required()
    @export_view(EXPORT_LIMIT, month_in_body=False)
    def get(self, args):
        """Export a report of your requests (optional month=YYYY-MM)"""
        return export_report(args["month"])

    @blp.auth_required()
    @export_view(EXPORT_LIMIT)
    def post(self, query_args, body_args):
        """Export a report of your requests (month in the body or the query)"""
        return export_report(body_args["month"] or query_args["month"])


@blp.route("/reports/library")
class LibraryReportExport(MethodView):
    @blp.auth_required(admin=True)
    @export_view(LIBRARY_EXPORT_LIMIT)
    def post(self, query_args, body_args):
        """Export the library-wide report (librarians; month in the body or the query)"""
        month = body_args["month"] or query_args["month"]
        return export_report(month, ReportScope.LIBRARY)


@blp.route("/reports")
class Reports(MethodView):
    @blp.auth_required()
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, page_schema(ReportSchema), headers=PAGE_HEADERS)
    @blp.error_responses(400)
    def get(self, args):
        """List your reports, newest first (librarians see everyone's)"""
        if current_user.is_admin:
            return paginate(REPORTS, ALL_REPORTS, args)
        return paginate(REPORTS, OWN_REPORTS, args, {"user_id": current_user.id})


# report ids are UUIDs: anything else is 404 at routing, never a database lookup
@blp.route("/reports/<uuid:report_id>")
class ReportDetail(MethodView):
    @blp.auth_required()
    @blp.response(200, ReportSchema)
    @blp.error_responses(404)
    def get(self, report_id):
        """Show a report's status and progress"""
        return get_report(report_id)


@blp.route("/reports/<uuid:report_id>/download")
class ReportDownload(MethodView):
    @blp.auth_required()
    @blp.arguments(DownloadArgsSchema, location="query")
    @blp.doc(responses={"200": DOWNLOAD_RESPONSE})
    @blp.error_responses(404, 409, 410)
    def get(self, args, report_id):
        """Download a finished report in one of its formats (the report's download_urls)"""
        report = get_report(report_id)
        if report.is_expired:
            abort(410, message=expired_message(report))
        if not report.is_done:
            abort(409, message=f"Report {report_id} is {report.status}, not done yet.")
        body = stream_with_context(stream_file(report, args["format"]))
        return Response(body, headers=download_headers(report, args["format"]),
                        content_type=FORMATS[args["format"]].content_type)  # fmt: skip


def stream_file(report, format):
    """Yield the stored file, every chunk from one snapshot: a purge cannot cut it short."""
    # here, not in the view: the view's transaction ends before the body is sent
    begin_snapshot()
    yield from report.read_chunks(format)


def expired_message(report):
    day = report.expired_at.date().isoformat()
    return f"Report {report.id} expired on {day} and its files were deleted; export a new one."


def download_headers(report, format):
    return {
        "Content-Disposition": f'attachment; filename="report-{report.id}.{format}"',
        "Content-Length": str(report.sizes[format]),
        # the report is user data: a browser that opens it runs no script from it
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    }
