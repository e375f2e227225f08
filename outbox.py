"""The mail outbox: rows committed with the change they tell of, published after the commit,
sent once by a worker, and swept up when the broker or the worker was down."""

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.orm import Session

from mail import TRANSIENT_MAIL_ERRORS, send_mail
from models import BookRequest, OutboxMail, User, db, utcnow

log = logging.getLogger(__name__)

SEND_TASK = "tasks.send_outbox_mail"
# mails one sweep sends at most; the next sweep takes the rest
SWEEP_BATCH = 100


def init_app(app):
    """Publish each mail once the transaction that queued it commits (once per process)."""
    if not event.contains(Session, "after_commit", publish_new_mails):
        event.listen(Session, "after_flush", remember_new_mails)
        event.listen(Session, "after_rollback", forget_new_mails)
        event.listen(Session, "after_commit", publish_new_mails)


def remember_new_mails(session, flush_context):
    new_ids = [obj.id for obj in session.new if isinstance(obj, OutboxMail)]
    if new_ids:
        session.info.setdefault("outbox_ids", []).extend(new_ids)


def forget_new_mails(session):
    session.info.pop("outbox_ids", None)


def publish_new_mails(session):
    """Hand each mail just committed to the broker; a dead broker leaves it to the sweep."""
    for mail_id in session.info.pop("outbox_ids", []):
        publish(mail_id)


def publish(mail_id):
    try:
        current_app.extensions["celery"].send_task(SEND_TASK, args=[mail_id])
    except Exception as exc:  # kombu raises several kinds; every one means "not sent"
        log.warning("mail %s stays queued, the broker is unreachable: %s", mail_id, exc)
        return False
    return True


def claim(mail_id):
    """Take the mail for this delivery; False when another has it or it is already sent."""
    now = utcnow()
    stale = now - timedelta(seconds=current_app.config["OUTBOX_STALE_SECONDS"])
    result = db.session.execute(
        update(OutboxMail)
        .where(
            OutboxMail.id == mail_id,
            or_(
                OutboxMail.status == "pending",
                # claimed by a worker that died before it could record the mail sent
                and_(OutboxMail.status == "sending", OutboxMail.claimed_at < stale),
            ),
        )
        .values(status="sending", claimed_at=now, attempts=OutboxMail.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def finish(mail_id, status, error=None):
    values = {"status": status, "error": error}
    if status == "sent":
        values["sent_at"] = utcnow()
    db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.status == "sending")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def deliver(mail_id):
    """Send one queued mail unless another delivery has it; True when this call sent it.

    A transient failure (mail server down) puts the mail back and re-raises, for a retry.
    """
    if not claim(mail_id):
        return False
    mail = db.session.get(OutboxMail, mail_id)
    user = db.session.get(User, mail.user_id)
    if user.email is None:
        # the unverified address went to someone else before this mail left
        finish(mail_id, "failed", "The account has no email address.")
        return False
    try:
        send_mail(to=user.email, subject=mail.subject, text=mail.body)
    except TRANSIENT_MAIL_ERRORS as exc:
        finish(mail_id, "pending", f"{type(exc).__name__}: {exc}")
        raise
    except Exception as exc:
        # refused outright (a bad address, say): another try would fail the same way
        log.exception("mail %s to %s failed", mail_id, user.email)
        finish(mail_id, "failed", f"{type(exc).__name__}: {exc}")
        return False
    finish(mail_id, "sent")
    log.info("mail %s (%s) sent to %s", mail_id, mail.key, user.email)
    return True


def sweep():
    """Send the mails left pending (broker down at commit) or stuck sending (worker died)."""
    config = current_app.config
    now = utcnow()
    waiting_since = now - timedelta(seconds=config["OUTBOX_RETRY_SECONDS"])
    stale = now - timedelta(seconds=config["OUTBOX_STALE_SECONDS"])
    mail_ids = db.session.scalars(
        select(OutboxMail.id)
        .where(
            or_(
                and_(OutboxMail.status == "pending", OutboxMail.created_at < waiting_since),
                and_(OutboxMail.status == "sending", OutboxMail.claimed_at < stale),
            )
        )
        .order_by(OutboxMail.id)
        .limit(SWEEP_BATCH)
    ).all()
    sent = 0
    for mail_id in mail_ids:
        try:
            sent += deliver(mail_id)
        except TRANSIENT_MAIL_ERRORS as exc:
            log.warning("outbox sweep stopped, the mail server is unreachable: %s", exc)
            break
    if sent:
        log.info("outbox sweep sent %d mail(s)", sent)
    return sent


def queue_due_soon_nudges():
    """Queue a nudge for each loan falling due within DUE_SOON_DAYS, once per due date."""
    config = current_app.config
    now = utcnow()
    due_soon = (
        select(BookRequest)
        .join(User, User.id == BookRequest.user_id)
        .where(
            BookRequest.status == "approved",
            BookRequest.due_date >= now,
            BookRequest.due_date <= now + timedelta(days=config["DUE_SOON_DAYS"]),
            or_(
                BookRequest.nudged_due_date.is_(None),
                BookRequest.nudged_due_date != BookRequest.due_date,
            ),
            User.notify.is_(True),
        )
        .order_by(BookRequest.id)
    )
    queued, last_id = 0, 0
    while loans := db.session.scalars(
        due_soon.where(BookRequest.id > last_id).limit(SWEEP_BATCH)
    ).all():
        for loan in loans:
            queued += queue_nudge(loan)
        last_id = loans[-1].id
    log.info("due-soon nudges queued for %d loan(s)", queued)
    return queued


def queue_nudge(loan):
    """Record the nudge and queue its mail in one transaction; False if one beat us to it."""
    # conditional on the due date read: a concurrent run or a renewal makes this a no-op
    claimed = db.session.execute(
        update(BookRequest)
        .where(
            BookRequest.id == loan.id,
            BookRequest.status == "approved",
            BookRequest.due_date == loan.due_date,
            or_(
                BookRequest.nudged_due_date.is_(None),
                BookRequest.nudged_due_date != BookRequest.due_date,
            ),
        )
        .values(nudged_due_date=BookRequest.due_date)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.session.rollback()
        return False
    key = f"due-soon:{loan.id}:{loan.due_date:%Y%m%d%H%M%S%f}"
    OutboxMail.queue_for_patron(loan.user_id, key, "due_soon", loan=loan)
    db.session.commit()
    return True
