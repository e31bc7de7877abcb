"""The monitoring database's tables (SQLAlchemy 2 declarative): streams, images, explanations, alerts, requests.

:mod:`discopatch.monitoring.store` reads and writes them; they live apart so the schema - which ``create_all``
creates on open, never migrating columns - reads in one place. :func:`image_row` and :func:`alert_row` turn the
recorder's dicts into rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..row_layout import VALUE_COLUMNS

#: BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
_Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class StreamRow(Base):
    __tablename__ = "dp_streams"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created: Mapped[float] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)
    n_images: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ImageRow(Base):
    __tablename__ = "dp_images"
    __table_args__ = (
        UniqueConstraint("stream_id", "seq", name="uq_dp_images_stream_seq"),
        Index("ix_dp_images_stream_source", "stream_id", "source_id"),
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("dp_streams.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)  # 1, 2, ... per stream, errors included
    time: Mapped[float] = mapped_column(Double)  # epoch seconds
    source_id: Mapped[str | None] = mapped_column(String(1024))
    score: Mapped[float | None] = mapped_column(Double)
    p_value: Mapped[float | None] = mapped_column(Double)
    is_ood: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class AlertRow(Base):
    __tablename__ = "dp_alerts"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("dp_streams.id", ondelete="CASCADE"), index=True)
    time: Mapped[float] = mapped_column(Double)
    seq: Mapped[int] = mapped_column(BigInteger)  # seq of the last image of the batch that raised it
    kind: Mapped[str] = mapped_column(String(32))  # "drift" or "recovered"
    tests: Mapped[list[str]] = mapped_column(JSON)
    p_val: Mapped[float | None] = mapped_column(Double)
    alarm_rate: Mapped[float | None] = mapped_column(Double)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class RequestRow(Base):
    """A recorded request that carried an idempotency key: enough to answer a retry without recording again."""

    __tablename__ = "dp_requests"
    __table_args__ = (UniqueConstraint("stream_id", "key", name="uq_dp_requests_stream_key"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("dp_streams.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 (hex) of the payload
    created: Mapped[float] = mapped_column(Double)
    image_ids: Mapped[list[list[int]]] = mapped_column(JSON)  # [id, seq] per image
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the response body without the image ids


class ExplanationRow(Base):
    """D's per-patch contributions behind a kept image's score (its heat map); a table of its own, so databases
    written before it existed gain it on open (``create_all``) without a migration."""

    __tablename__ = "dp_explanations"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("dp_images.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # Explanation.to_dict(): corners, contributions, views


#: The per-image values of the row layout that an image row keeps: all but ``d_score``, which tables written before
#: it was in the layout lack (``create_all`` adds tables, never columns).
STORED_VALUES = tuple(c for c in VALUE_COLUMNS if c != "d_score")
IMAGE_FIELDS = ("id", "seq", "time", "source_id", *STORED_VALUES)
ALERT_FIELDS = ("id", "time", "seq", "kind", "tests", "p_val", "alarm_rate", "detail")


def image_row(stream_id: int, seq: int, r: dict[str, Any]) -> ImageRow:
    """One scored image (a recorder row: ``time`` and the stored values; the rest optional) as the ``seq``-th of its
    stream."""
    return ImageRow(
        stream_id=stream_id,
        seq=seq,
        time=float(r["time"]),
        source_id=r.get("source_id"),
        score=r.get("score"),
        p_value=r.get("p_value"),
        is_ood=r.get("is_ood"),
        error=r.get("error"),
        thumbnail=r.get("thumbnail"),
    )


def alert_row(stream_id: int, last_seq: int, a: dict[str, Any]) -> AlertRow:
    """One alert; without a ``seq`` of its own it belongs to ``last_seq``, the last image of the batch raising it."""
    return AlertRow(
        stream_id=stream_id,
        time=float(a["time"]),
        seq=int(a.get("seq") or last_seq),
        kind=a["kind"],
        tests=list(a.get("tests", [])),
        p_val=a.get("p_val"),
        alarm_rate=a.get("alarm_rate"),
        detail=a.get("detail", {}),
    )
