"""Outgoing mail: the message as built, and each backend (SMTP, file, console) delivering it."""

import email
import logging
import re
import smtplib
import ssl
import stat
import subprocess
import uuid
from email import policy

import pytest
from aiosmtpd.smtp import AuthResult

from mail import absolute_url, build_message, send_mail
from tests.servers import start_smtp

ATTACHMENT = ("report-all.csv", b"id,book_name\r\n1,Dune\r\n", "text/csv")


@pytest.fixture
def mail_config(app):
    """Let a test switch the mail settings; they are put back afterwards."""
    saved = dict(app.config)
    with app.app_context():
        yield app.config
    app.config.clear()
    app.config.update(saved)


def test_message_has_every_header_part_and_attachment(mail_config):
    mail_config["MAIL_DEFAULT_SENDER"] = "library@example.org"
    message = build_message(
        "reader@example.org", "Your report", "plain words", "<p>html words</p>", [ATTACHMENT]
    )
    assert message["From"] == "library@example.org"
    assert message["To"] == "reader@example.org"
    assert message["Subject"] == "Your report"
    assert re.fullmatch(r"<[0-9a-f-]{36}@library>", message["Message-ID"])
    assert message.get_body(preferencelist=("plain",)).get_content() == "plain words\n"
    assert message.get_body(preferencelist=("html",)).get_content() == "<p>html words</p>\n"
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "report-all.csv"
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_content().encode() == ATTACHMENT[1]


def test_text_attachments_say_utf_8_and_binary_ones_stay_bytes(mail_config):
    png = b"\x89PNG\r\n\x1a\n\x00"
    message = build_message(
        "reader@example.org",
        "Files",
        "see attached",
        attachments=[ATTACHMENT, ("chart.png", png, "image/png")],
    )
    text, image = message.iter_attachments()
    assert (text.get_content_type(), text.get_content_charset()) == ("text/csv", "utf-8")
    assert (image.get_content_type(), image.get_content_charset()) == ("image/png", None)
    assert (image.get_filename(), image.get_content()) == ("chart.png", png)


def test_message_without_html_or_attachments_is_plain_text(mail_config):
    message = build_message("reader@example.org", "Overdue", "bring it back")
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "bring it back\n"
    assert list(message.iter_attachments()) == []


def test_smtp_backend_delivers_to_the_server(mail_config, smtp_server):
    _, sink = smtp_server
    mail_config["MAIL_BACKEND"] = "smtp"
    # the SMTP server lives for the whole session: an address of this test's own
    address = f"smtp-{uuid.uuid4().hex[:8]}@example.org"
    send_mail(address, "By SMTP", "hello", "<b>hello</b>", [ATTACHMENT])
    [received] = [m for m in sink.messages if m["To"] == address]
    assert received["Subject"] == "By SMTP"
    assert received.get_body(preferencelist=("html",)).get_content().rstrip() == "<b>hello</b>"
    assert [a.get_filename() for a in received.iter_attachments()] == ["report-all.csv"]


def test_smtp_mail_spells_its_headers_and_content_types_as_mail_software_writes_them(
    mail_config, smtp_server
):
    # header names and MIME types are case-insensitive to a parser, but a reader of the raw
    # message (or a strict filter) sees them as sent: the sink's parse keeps their spelling
    _, sink = smtp_server
    mail_config.update(MAIL_BACKEND="smtp", MAIL_DEFAULT_SENDER="library@example.org")
    address = f"spelled-{uuid.uuid4().hex[:8]}@example.org"
    chart = ("chart.png", b"\x89PNG", "image/png")
    send_mail(address, "Spelled", "hello", "<b>hello</b>", [ATTACHMENT, chart])
    [received] = [m for m in sink.messages if m["To"] == address]
    assert received.keys() == [
        "From",
        "To",
        "Subject",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
    ]
    leaves = [str(part["Content-Type"]) for part in received.walk() if not part.is_multipart()]
    assert leaves == [
        'text/plain; charset="utf-8"',
        'text/html; charset="utf-8"',
        'text/csv; charset="utf-8"',
        "image/png",
    ]


def test_file_backend_writes_one_eml_to_the_outbox(mail_config, tmp_path, caplog):
    outbox = tmp_path / "outbox" / "nested"
    mail_config.update(MAIL_BACKEND="file", MAIL_OUTBOX=str(outbox))
    with caplog.at_level(logging.INFO, logger="mail"):
        send_mail("file@example.org", "To a file", "hello", attachments=[ATTACHMENT])
    [path] = outbox.iterdir()
    assert path.suffix == ".eml"
    # mail holds personal data and login links: the owner's only
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert (message["To"], message["Subject"]) == ("file@example.org", "To a file")
    assert [a.get_filename() for a in message.iter_attachments()] == ["report-all.csv"]
    logged = [record.getMessage() for record in caplog.records if record.name == "mail"]
    assert logged == [f"mail to file@example.org written to {path}"]
    # the next mail goes into the same folder, beside the first
    send_mail("file@example.org", "Again", "hello")
    assert len(list(outbox.iterdir())) == 2


def test_console_backend_logs_the_mail_without_attachment_bodies(mail_config, caplog):
    mail_config.update(MAIL_BACKEND="console", MAIL_DEFAULT_SENDER="library@example.org")
    chart = ("chart.png", b"\x89PNG", "image/png")
    with caplog.at_level(logging.INFO, logger="mail"):
        send_mail("console@example.org", "On screen", "the words", attachments=[ATTACHMENT, chart])
    [logged] = [record.getMessage() for record in caplog.records if record.name == "mail"]
    rule = "-" * 72
    assert logged.split("\n") == [
        "mail (MAIL_BACKEND=console)",
        rule,
        "From: library@example.org",
        "To: console@example.org",
        "Subject: On screen",
        f"Attachments: report-all.csv ({len(ATTACHMENT[1])} bytes), chart.png (4 bytes)",
        "",
        "the words",
        rule,
    ]


def test_console_backend_says_when_nothing_is_attached(mail_config, caplog):
    mail_config["MAIL_BACKEND"] = "console"
    with caplog.at_level(logging.INFO, logger="mail"):
        send_mail("console@example.org", "Bare", "text only")
    assert "\nAttachments: none\n" in caplog.text


def test_unknown_backend_is_a_clear_error(mail_config):
    mail_config["MAIL_BACKEND"] = "pigeon"
    with pytest.raises(
        ValueError, match="Unknown MAIL_BACKEND 'pigeon': use console, file or smtp"
    ):
        send_mail("x@example.org", "never", "sent")


def test_links_in_mail_join_the_public_address_with_one_slash(mail_config):
    for base in ("http://library.test:8080", "http://library.test:8080/"):
        mail_config["PUBLIC_BASE_URL"] = base
        assert absolute_url("/reports/7") == "http://library.test:8080/reports/7"


class Logins:
    """An aiosmtpd authenticator that accepts anyone and remembers how each logged in."""

    def __init__(self):
        self.seen = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.seen.append(
            (auth_data.login.decode(), auth_data.password.decode(), session.ssl is not None)
        )
        return AuthResult(success=True)


@pytest.fixture
def tls_smtp_server(tmp_path):
    """An SMTP server that takes mail only after STARTTLS, and logs in whoever asks."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins = Logins()
    controller, sink = start_smtp(
        tls_context=context, require_starttls=True, authenticator=logins, auth_require_tls=True
    )
    yield controller, sink, logins
    controller.stop()


@pytest.mark.parametrize(
    "username, password, login",
    [("mailer", "s3cret", [("mailer", "s3cret", True)]), ("mailer", None, [("mailer", "", True)]),
     (None, None, [])],
)  # fmt: skip
def test_smtp_backend_starts_tls_then_logs_in_when_configured(
    mail_config, tls_smtp_server, username, password, login
):
    controller, sink, logins = tls_smtp_server
    mail_config.update(
        MAIL_BACKEND="smtp",
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=controller.port,
        MAIL_USE_TLS=True,
        MAIL_USERNAME=username,
        MAIL_PASSWORD=password,
    )
    send_mail("tls@example.org", "Over TLS", "hello")
    assert [m["Subject"] for m in sink.messages] == ["Over TLS"]
    assert logins.seen == login


def test_mail_sink_hangs_up_on_clients_still_connected_when_stopped(tls_smtp_server):
    # a connection left open would be closed by the garbage collector, with a ResourceWarning,
    # during whichever test runs then
    plain, _ = start_smtp()
    tls, _, _ = tls_smtp_server
    with (
        smtplib.SMTP("127.0.0.1", plain.port, timeout=15) as plain_client,
        smtplib.SMTP("127.0.0.1", tls.port, timeout=15) as tls_client,
    ):
        tls_client.starttls()
        for client in (plain_client, tls_client):
            client.ehlo()
        plain.stop()
        tls.stop()
        assert (plain.connections, tls.connections) == (set(), set())
        for client in (plain_client, tls_client):
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
