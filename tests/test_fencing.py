"""Fenced builds: a build that was taken over can neither store nor undo anything; what each
write of the owning build records; a report out of attempts; chunks read back in order.

Two builds of one report are played step by step in one process, the first one paused
(simply not called) while the second takes the report over, as a stalled worker would be.
The same story with real workers and SIGSTOP is in tests/test_selfheal.py.
"""

import zlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from models import LostReport, Report, ReportChunk, ReportStatus, db, utcnow


def chunk(report_id, seq, data=b"x"):
    return {"report_id": report_id, "format": "csv", "seq": seq, "data": data}


def stored_chunks(report_id):
    return db.session.scalars(
        select(ReportChunk.data).where(ReportChunk.report_id == report_id).order_by("seq")
    ).all()


@pytest.fixture
def taken_over(app_context, auth):
    """A report whose first build paused long enough for a second build to take it over."""
    user = auth.register()
    report = Report(user_id=user["id"])
    db.session.add(report)
    db.session.commit()
    first = db.session.get(Report, report.id)
    assert first.claim("first-delivery")
    first.record_progress(0.1, [chunk(report.id, 0, b"old")])
    token = (first.task_id, first.attempts)
    # the first build's heartbeat goes stale while it is paused
    db.session.execute(
        update(Report)
        .where(Report.id == report.id)
        .values(heartbeat_at=utcnow() - timedelta(hours=1))
    )
    db.session.commit()
    db.session.expunge_all()
    second = db.session.get(Report, report.id)
    assert second.claim("second-delivery")
    db.session.expunge_all()
    # the first build's copy of the row, as it was when that build last wrote
    first = Report(id=report.id, user_id=user["id"], task_id=token[0], attempts=token[1])
    return first, db.session.get(Report, report.id)


def test_takeover_drops_what_the_first_build_stored(taken_over):
    first, second = taken_over
    assert second.attempts == 2 and second.task_id == "second-delivery"
    assert stored_chunks(second.id) == []


def test_a_build_that_lost_its_report_stores_nothing(taken_over):
    first, second = taken_over
    with pytest.raises(LostReport):
        first.record_progress(0.5, [chunk(first.id, 1)])
    with pytest.raises(LostReport):
        first.finish(10, {"csv": 1}, [chunk(first.id, 2)])
    assert stored_chunks(first.id) == []
    row = db.session.get(Report, first.id)
    db.session.refresh(row)
    assert (row.status, row.progress, row.task_id) == ("running", 0.0, "second-delivery")


def test_a_done_report_never_changes_again(taken_over):
    first, second = taken_over
    second.record_progress(0.5, [chunk(second.id, 0, b"new")])
    second.finish(7, {"csv": 3}, [chunk(second.id, 1, b"end")])
    # the paused build wakes up and tries every write it has
    with pytest.raises(LostReport):
        first.record_progress(0.9, [chunk(first.id, 0, b"old")])
    assert first.fail("The report could not be built.") is False
    first.release()
    row = db.session.get(Report, first.id)
    db.session.refresh(row)
    assert row.status == ReportStatus.DONE and row.error is None
    assert (row.row_count, row.progress, row.attempts) == (7, 1.0, 2)
    assert stored_chunks(first.id) == [b"new", b"end"]
    assert row.give_up() is False
    assert not row.claim("third-delivery")
    assert db.session.scalar(select(func.count()).select_from(ReportChunk)) == 2


def test_the_owner_can_fail_or_release_its_build(taken_over):
    _, second = taken_over
    second.release()
    db.session.refresh(second)
    assert second.status == ReportStatus.QUEUED
    assert second.claim("third-delivery")
    assert second.fail("The report could not be built.") is True
    failed = db.session.get(Report, second.id)
    db.session.refresh(failed)
    assert failed.status == ReportStatus.FAILED and failed.attempts == 3


def fresh(report_id):
    row = db.session.get(Report, report_id)
    db.session.refresh(row)
    return row


def test_progress_is_rounded_capped_and_proves_the_build_alive(taken_over):
    _, second = taken_over
    claimed_beat = fresh(second.id).heartbeat_at
    second.record_progress(0.123456)
    row = fresh(second.id)
    assert row.progress == 0.1235 and row.heartbeat_at > claimed_beat
    second.record_progress(1.7)
    assert fresh(second.id).progress == 1.0


def test_a_released_build_is_queued_again_and_a_failure_keeps_2000_characters(taken_over):
    _, second = taken_over
    claimed_at = fresh(second.id).started_at
    second.release()
    row = fresh(second.id)
    assert row.status == ReportStatus.QUEUED and row.enqueued_at >= claimed_at
    assert row.claim("third-delivery")
    assert row.fail("x" * 3000) is True
    failed = fresh(second.id)
    assert failed.error == "x" * 2000 and failed.finished_at >= failed.started_at


def test_a_report_out_of_attempts_is_never_claimed_and_then_given_up(app, app_context, auth):
    user = auth.register()
    limit = app.config["REPORT_MAX_ATTEMPTS"]
    report = Report(user_id=user["id"], attempts=limit - 1)
    db.session.add(report)
    db.session.commit()
    # one attempt left: nothing to give up yet
    assert report.give_up() is False
    assert report.claim("last-delivery") and report.attempts == limit
    report.release()
    row = fresh(report.id)
    assert not row.claim("one-too-many")
    assert row.give_up() is True
    gave_up = fresh(report.id)
    assert gave_up.status == ReportStatus.FAILED
    assert gave_up.error == f"gave up after {limit} attempts"
    assert gave_up.finished_at is not None
    assert gave_up.give_up() is False


def test_chunks_come_back_in_sequence_whatever_order_they_were_stored_in(app_context, auth):
    user, neighbour = auth.register(), auth.register()
    report, other = Report(user_id=user["id"]), Report(user_id=neighbour["id"])
    db.session.add_all([report, other])
    db.session.commit()
    # another report's file of the same format, stored first
    db.session.add(ReportChunk(report_id=other.id, format="csv", seq=0, data=zlib.compress(b"n")))
    for seq in (2, 0, 1):
        db.session.add(
            ReportChunk(report_id=report.id, format="csv", seq=seq, data=zlib.compress(b"%d" % seq))
        )
    db.session.add(ReportChunk(report_id=report.id, format="html", seq=0, data=zlib.compress(b"h")))
    db.session.commit()
    assert list(report.read_chunks("csv")) == [b"0", b"1", b"2"]
    assert list(ReportChunk.read(report.id, "html")) == [b"h"]


def test_a_redelivered_message_takes_back_its_own_live_build_and_fences_it(app_context, auth):
    """The broker hands a message out again when its worker died: that build is dead."""
    user = auth.register()
    report = Report(user_id=user["id"])
    db.session.add(report)
    db.session.commit()
    assert report.claim("the-task")
    dead = Report(id=report.id, user_id=user["id"], task_id="the-task", attempts=report.attempts)
    db.session.expunge_all()
    live = fresh(report.id)
    # the heartbeat is fresh: only the same task's redelivery may take the build back
    assert not live.claim("another-task", redelivered=True)
    assert not live.claim("the-task")
    assert live.claim("the-task", redelivered=True) and live.attempts == 2
    # the dead build's writes, with the same task id but the old attempt, are refused
    with pytest.raises(LostReport):
        dead.record_progress(0.5, [chunk(report.id, 0)])
    live.finish(0, {"csv": 0})
    # a done report is never taken again, however old its heartbeat or whoever asks
    db.session.execute(
        update(Report)
        .where(Report.id == report.id)
        .values(heartbeat_at=utcnow() - timedelta(hours=1))
    )
    db.session.commit()
    done = fresh(report.id)
    assert not done.claim("the-task", redelivered=True)
    assert not done.claim("a-new-task")
    # nor can its own build change it any more
    assert done.fail("late") is False
    done.release()
    assert fresh(report.id).status == ReportStatus.DONE
