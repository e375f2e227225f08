"""Stored report files: each one a series of compressed chunks, read back one at a time."""

import zlib

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, select
from sqlalchemy.orm import Mapped, mapped_column

from models.base import db


class ReportChunk(db.Model):
    """One compressed piece of a stored report file, so no host needs the whole file."""

    __tablename__ = "report_chunk"

    report_id: Mapped[str] = mapped_column(
        ForeignKey("report.id", ondelete="CASCADE"), primary_key=True
    )
    format: Mapped[str] = mapped_column(String(4), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    @staticmethod
    def read(report_id, format):
        """Yield the report's stored file of `format` decompressed, one chunk at a time."""
        last_seq = -1
        while True:
            # one chunk per query keeps memory flat however large the report is
            chunk = db.session.execute(
                select(ReportChunk.seq, ReportChunk.data)
                .where(
                    ReportChunk.report_id == report_id,
                    ReportChunk.format == format,
                    ReportChunk.seq > last_seq,
                )
                .order_by(ReportChunk.seq)
                .limit(1)
            ).first()
            if chunk is None:
                return
            last_seq = chunk.seq
            yield zlib.decompress(chunk.data)
