"""Outgoing mail through the configured backend: console, file (instance/outbox) or SMTP."""

import logging
import os
import smtplib
import uuid
from email.message import EmailMessage

from flask import current_app

log = logging.getLogger(__name__)

# failures worth another try later: the server is down, busy or dropped the line
TRANSIENT_MAIL_ERRORS = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError)


def absolute_url(path):
    """`path` on the service's public address, so that a link in a mail can be clicked."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path


def build_message(to, subject, text, html=None, attachments=()):
    """Return an EmailMessage with a text part, an optional HTML part and attachments."""
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4()}@library>"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, data, mimetype in attachments:
        maintype, subtype = mimetype.split("/", 1)
        # text attachments are UTF-8: without the charset a mail client guesses, often wrong
        params = {"charset": "utf-8"} if maintype == "text" else {}
        message.add_attachment(
            data, maintype=maintype, subtype=subtype, filename=filename, params=params
        )
    return message


def send_mail(to, subject, text, html=None, attachments=()):
    """Send one message through MAIL_BACKEND."""
    message = build_message(to, subject, text, html, attachments)
    backend = current_app.config["MAIL_BACKEND"]
    if backend == "smtp":
        send_smtp(message)
    elif backend == "file":
        write_to_outbox(message)
    elif backend == "console":
        print_to_console(message, text, attachments)
    else:
        raise ValueError(f"Unknown MAIL_BACKEND {backend!r}: use console, file or smtp.")


def send_smtp(message):
    config = current_app.config
    with smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=15) as smtp:
        if config["MAIL_USE_TLS"]:
            smtp.starttls()
        if config["MAIL_USERNAME"]:
            smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"] or "")
        smtp.send_message(message)


def write_to_outbox(message):
    outbox = current_app.config["MAIL_OUTBOX"]
    # mail holds personal data and links that log in: readable by the owner only
    os.makedirs(outbox, mode=0o700, exist_ok=True)
    path = os.path.join(outbox, f"{uuid.uuid4()}.eml")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as eml:
        eml.write(message.as_bytes())
    log.info("mail to %s written to %s", message["To"], path)


def print_to_console(message, text, attachments):
    # the worker terminal shows the mail, without pages of base64 attachments
    names = ", ".join(f"{name} ({len(data)} bytes)" for name, data, _ in attachments) or "none"
    rule = "-" * 72
    log.info(
        "mail (MAIL_BACKEND=console)\n%s\nFrom: %s\nTo: %s\nSubject: %s\nAttachments: %s\n\n%s\n%s",
        rule,
        message["From"],
        message["To"],
        message["Subject"],
        names,
        text,
        rule,
    )
