"""Outgoing mail: the message as built, and each backend (SMTP, file, console) delivering it."""

import email
import logging
import re
import uuid
from email import policy

import pytest

from mail import build_message, send_mail

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


def test_file_backend_writes_one_eml_to_the_outbox(mail_config, tmp_path, caplog):
    outbox = tmp_path / "outbox" / "nested"
    mail_config.update(MAIL_BACKEND="file", MAIL_OUTBOX=str(outbox))
    with caplog.at_level(logging.INFO, logger="mail"):
        send_mail("file@example.org", "To a file", "hello", attachments=[ATTACHMENT])
    [path] = outbox.iterdir()
    assert path.suffix == ".eml"
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert (message["To"], message["Subject"]) == ("file@example.org", "To a file")
    assert [a.get_filename() for a in message.iter_attachments()] == ["report-all.csv"]
    assert f"mail to file@example.org written to {path}" in caplog.text


def test_console_backend_logs_the_mail_without_attachment_bodies(mail_config, caplog):
    mail_config.update(MAIL_BACKEND="console", MAIL_DEFAULT_SENDER="library@example.org")
    with caplog.at_level(logging.INFO, logger="mail"):
        send_mail("console@example.org", "On screen", "the words", attachments=[ATTACHMENT])
    logged = caplog.text
    attached = f"Attachments: report-all.csv ({len(ATTACHMENT[1])} bytes)"
    for line in ("From: library@example.org", "To: console@example.org", "Subject: On screen",
                 attached, "the words"):  # fmt: skip
        assert line in logged
    assert "1,Dune" not in logged


def test_console_backend_says_when_nothing_is_attached(mail_config, caplog):
    mail_config["MAIL_BACKEND"] = "console"
    with caplog.at_level(logging.INFO, logger="mail"):
        send_mail("console@example.org", "Bare", "text only")
    assert "Attachments: none" in caplog.text


def test_unknown_backend_is_a_clear_error(mail_config):
    mail_config["MAIL_BACKEND"] = "pigeon"
    with pytest.raises(
        ValueError, match="Unknown MAIL_BACKEND 'pigeon': use console, file or smtp"
    ):
        send_mail("x@example.org", "never", "sent")
