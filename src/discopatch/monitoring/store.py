"""Persistent history of monitored streams through SQLAlchemy 2: a SQLite file by default, PostgreSQL by URL.

Five tables: ``dp_streams`` (one row per stream with its JSON drift state and image counter), ``dp_images`` (every
scored image: per-stream sequence number, time, source id, score, p-value, flag, error, optional PNG thumbnail),
``dp_explanations`` (per image with a thumbnail: the patch contributions behind its score, for its heat map),
``dp_alerts`` and ``dp_requests`` (per stream and idempotency key: the payload's digest, the image ids and the
response). :meth:`Store.record` writes a batch of images, the stream's new state, its alerts and its key in **one**
transaction, so after a crash the state always matches the rows - which is what lets a restarted server resume a
stream exactly, and a client retry a request whose answer it never got without storing its images twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UnavailableError
from .choices import DEFAULT_DB_URL
from .tables import (
    ALERT_FIELDS,
    IMAGE_FIELDS,
    AlertRow,
    Base,
    ExplanationRow,
    ImageRow,
    RequestRow,
    StreamRow,
    alert_row,
    image_row,
)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets the dashboard read while a writer commits; synchronous=FULL makes a commit survive power loss.

    pysqlite's own BEGIN is switched off so that :func:`_sqlite_begin` can open write transactions with
    ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes fails at once with "database is locked"
    when another connection committed in between, and busy_timeout does not help there.
    """
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("dp_write") else "BEGIN")


def make_db_engine(url: str | os.PathLike[str]) -> Engine:
    """An engine for ``url``; a bare file path means a SQLite file. psycopg 3 is used for ``postgresql://``."""
    url = os.fspath(url)
    if "://" not in url:
        url = f"sqlite:///{url}"
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite":
        engine = create_engine(u, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(u, pool_pre_ping=True)


def _in_memory(engine: Engine) -> bool:
    """True for SQLite URLs without a file: ``sqlite://``, ``sqlite:///:memory:``, ``file::memory:`` or mode=memory."""
    u = engine.url
    if u.get_backend_name() != "sqlite":
        return False
    database = u.database or ""
    return database in ("", ":memory:") or ":memory:" in database or u.query.get("mode") == "memory"


class StreamNotFound(KeyError):
    """No stream of that name has been recorded."""


class StreamConflict(RuntimeError):
    """Another writer (a second server or ``monitor`` on the same database) recorded images in the stream since this
    process loaded its state; nothing was written, and the caller must reload the state and try again."""


@dataclass(frozen=True)
class StoredRequest:
    """A request recorded under an idempotency key: the caller gives the key, the payload digest and the response
    body (without image ids); ``image_ids`` (``(id, seq)`` per image) and ``created`` are filled in when read back."""

    key: str
    fingerprint: str
    response: dict[str, Any] = field(default_factory=dict)
    image_ids: list[tuple[int, int]] = field(default_factory=list)
    created: float | None = None


class AlreadyRecorded(Exception):
    """The stream already holds a request with this idempotency key; nothing was written."""

    def __init__(self, request: StoredRequest) -> None:
        super().__init__(f"idempotency key {request.key!r} was already recorded")
        self.request = request


class StoreUnavailable(UnavailableError):
    """The database cannot be opened or set up; the message is one line that names it and the cause (a usage
    error at start-up, exit 2: the ``--db`` given cannot be used; still a ``RuntimeError``)."""


def db_error_cause(e: BaseException) -> str:
    """The driver's own first line (``unable to open database file``), without SQLAlchemy's SQL and links."""
    orig = getattr(e, "orig", None) or e
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class Store:
    """Repository over the five tables; thread-safe (one session per call)."""

    def __init__(self, url: str | os.PathLike[str] = DEFAULT_DB_URL) -> None:
        try:
            self.engine = make_db_engine(url)
        except (SQLAlchemyError, ValueError, ImportError) as e:
            raise StoreUnavailable(f"invalid database URL ({db_error_cause(e)})") from None
        if _in_memory(self.engine):
            self.engine.dispose()
            raise StoreUnavailable(
                "an in-memory SQLite database cannot hold the history: each connection would get its own empty "
                "database and every write would fail; give a file (--db monitor.db) or a PostgreSQL URL"
            )
        self.url = self.engine.url.render_as_string(hide_password=True)
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as e:
            self.engine.dispose()
            raise StoreUnavailable(f"database {self.url} is not usable ({db_error_cause(e)})") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self.engine.execution_options(dp_write=True), expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def probe(self, write: bool = False) -> None:
        """Check the database now (raises SQLAlchemyError): ``SELECT 1``, or with ``write`` a stream and an image
        inserted in a write transaction and rolled back, which fails as a real write would (read-only file, missing
        table, full disk, no write lock) and leaves nothing behind."""
        if not write:
            with self._session() as s:
                s.execute(select(1))
            return
        with self._session(write=True) as s:
            try:
                now = time.time()
                st = StreamRow(name="/readiness-probe", created=now, updated=now, n_images=0, state={})
                s.add(st)
                s.flush()
                s.add(ImageRow(stream_id=st.id, seq=1, time=now))
                s.flush()
            finally:
                s.rollback()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        with (self._write_sessions if write else self._sessions)() as s:
            yield s

    def _stream(self, s: Session, name: str, *, lock: bool = False) -> StreamRow:
        q = select(StreamRow).where(StreamRow.name == name)
        row = s.scalars(q.with_for_update() if lock else q).one_or_none()
        if row is None:
            raise StreamNotFound(name)
        return row

    # ------------------------------------------------------------------ writing
    def ensure_stream(self, name: str) -> None:
        """Create the stream if it does not exist (tolerates a concurrent creator)."""
        with self._session() as s:
            if s.scalars(select(StreamRow.id).where(StreamRow.name == name)).first() is not None:
                return
        with self._session(write=True) as s:
            now = time.time()
            s.add(StreamRow(name=name, created=now, updated=now, n_images=0, state={}))
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                if s.scalars(select(StreamRow.id).where(StreamRow.name == name)).first() is None:
                    raise

    def record(
        self,
        name: str,
        rows: Sequence[dict[str, Any]],
        state: dict[str, Any],
        alerts: Sequence[dict[str, Any]] = (),
        *,
        expected_n: int | None = None,
        request: StoredRequest | None = None,
    ) -> list[tuple[int, int]]:
        """Append images and alerts and replace the stream's state, atomically; returns ``(id, seq)`` per image.

        The stream row is locked (``SELECT ... FOR UPDATE`` where supported), so sequence numbers stay dense even
        if two writers share a stream. ``expected_n`` is the image count the new ``state`` was computed from: if
        another writer has recorded images since, :class:`StreamConflict` is raised and nothing is written, so a
        state computed without those images never replaces one that counts them.

        ``request`` (key, payload digest and response body) is stored with the images; if the stream already holds
        its key, :class:`AlreadyRecorded` is raised with the stored one and nothing is written. The check runs under
        the stream lock, so two writers retrying one request cannot both record it.
        """
        self.ensure_stream(name)
        with self._session(write=True) as s, s.begin():
            st = self._stream(s, name, lock=True)
            if request is not None:
                done = self._request(s, st.id, request.key)
                if done is not None:
                    raise AlreadyRecorded(done)
            if expected_n is not None and st.n_images != expected_n:
                raise StreamConflict(
                    f"stream {name} has {st.n_images} images, this writer expected {expected_n}: another writer"
                )
            first = st.n_images + 1
            objs = [image_row(st.id, first + i, r) for i, r in enumerate(rows)]
            s.add_all(objs)
            last = first + len(rows) - 1
            s.add_all(alert_row(st.id, last, a) for a in alerts)
            st.n_images = last
            st.state = dict(state)
            st.updated = time.time()
            s.flush()
            ids = [(o.id, o.seq) for o in objs]
            s.add_all(
                ExplanationRow(image_id=o.id, data=r["explanation"]) for o, r in zip(objs, rows) if r.get("explanation")
            )
            if request is not None:
                s.add(
                    RequestRow(
                        stream_id=st.id,
                        key=request.key,
                        fingerprint=request.fingerprint,
                        created=st.updated,
                        image_ids=[list(i) for i in ids],
                        response=request.response,
                    )
                )
            return ids

    @staticmethod
    def _request(s: Session, stream_id: int, key: str) -> StoredRequest | None:
        row = s.scalars(select(RequestRow).where(RequestRow.stream_id == stream_id, RequestRow.key == key)).first()
        if row is None:
            return None
        ids = [(int(i), int(q)) for i, q in row.image_ids]
        return StoredRequest(row.key, row.fingerprint, dict(row.response), ids, row.created)

    # ------------------------------------------------------------------ reading
    def stream_info(self, name: str) -> dict[str, Any]:
        with self._session() as s:
            st = self._stream(s, name)
            return {"name": st.name, "created": st.created, "updated": st.updated, "n_images": st.n_images}

    def streams(self) -> list[dict[str, Any]]:
        with self._session() as s:
            rows = s.scalars(select(StreamRow).order_by(StreamRow.name)).all()
            return [{"name": r.name, "created": r.created, "updated": r.updated, "n_images": r.n_images} for r in rows]

    def stream_page(self, limit: int, after: str | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` streams by name (after ``after``), each with its image and alert counts, in one query."""
        alerts = select(func.count()).where(AlertRow.stream_id == StreamRow.id).scalar_subquery()
        q = select(StreamRow.name, StreamRow.updated, StreamRow.n_images, alerts.label("n_alerts"))
        if after is not None:
            q = q.where(StreamRow.name > after)
        with self._session() as s:
            rows = s.execute(q.order_by(StreamRow.name).limit(limit)).all()
            return [dict(r._mapping) for r in rows]

    def load_stream(
        self, name: str, window_size: int | None, window_seconds: float | None
    ) -> tuple[dict[str, Any], list[tuple[float, float]]]:
        """The stream's saved drift state and the scored ``(time, score)`` rows of its last window, oldest first."""
        state, window, _ = self.load_stream_version(name, window_size, window_seconds)
        return state, window

    def load_stream_version(
        self, name: str, window_size: int | None, window_seconds: float | None
    ) -> tuple[dict[str, Any], list[tuple[float, float]], int]:
        """:meth:`load_stream` plus the image count they belong to, read in one transaction (``record``'s
        ``expected_n``)."""
        # one transaction: a snapshot on SQLite (WAL), the stream row locked against writers on PostgreSQL
        with self._session() as s, s.begin():
            try:
                st = self._stream(s, name, lock=True)
            except StreamNotFound:
                return {}, [], 0
            q = (
                select(ImageRow.time, ImageRow.score)
                .where(ImageRow.stream_id == st.id, ImageRow.score.is_not(None))
                .order_by(ImageRow.seq.desc())
            )
            last_time = (st.state or {}).get("last_time")
            if window_seconds is not None and last_time is not None:
                q = q.where(ImageRow.time >= float(last_time) - window_seconds)
            if window_size is not None:
                q = q.limit(window_size)
            rows = [(float(t), float(sc)) for t, sc in s.execute(q).all() if sc is not None]  # NULLs excluded above
            return dict(st.state or {}), rows[::-1], int(st.n_images)

    def images(
        self, name: str, limit: int = 100, *, flagged: bool | None = None, after_seq: int | None = None
    ) -> list[dict[str, Any]]:
        """The latest ``limit`` images (oldest first); ``flagged`` filters on ``is_ood``; adds ``has_thumbnail`` and
        ``has_explanation``."""
        with self._session() as s:
            st = self._stream(s, name)
            explained = select(ExplanationRow.image_id).where(ExplanationRow.image_id == ImageRow.id).exists()
            q = select(
                *(getattr(ImageRow, f) for f in IMAGE_FIELDS),
                ImageRow.thumbnail.is_not(None).label("has_thumbnail"),
                explained.label("has_explanation"),
            ).where(ImageRow.stream_id == st.id)
            if flagged is not None:
                q = q.where(ImageRow.is_ood.is_(flagged))
            if after_seq is not None:
                q = q.where(ImageRow.seq > after_seq)
            q = q.order_by(ImageRow.seq.desc()).limit(limit)
            return [dict(r._mapping) for r in s.execute(q).all()][::-1]

    def request(self, name: str, key: str) -> StoredRequest | None:
        """The request recorded in stream ``name`` under idempotency ``key``, if any."""
        with self._session() as s:
            try:
                st = self._stream(s, name)
            except StreamNotFound:
                return None
            return self._request(s, st.id, key)

    def explanation(self, image_id: int) -> dict[str, Any] | None:
        """The stored explanation of an image (``Explanation.to_dict()``), or None."""
        with self._session() as s:
            data = s.scalars(select(ExplanationRow.data).where(ExplanationRow.image_id == image_id)).first()
            return None if data is None else dict(data)

    def thumbnail(self, image_id: int) -> bytes | None:
        with self._session() as s:
            return s.scalars(select(ImageRow.thumbnail).where(ImageRow.id == image_id)).first()

    def alerts(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest ``limit`` alerts, newest first."""
        with self._session() as s:
            st = self._stream(s, name)
            q = select(AlertRow).where(AlertRow.stream_id == st.id).order_by(AlertRow.id.desc()).limit(limit)
            return [{f: getattr(a, f) for f in ALERT_FIELDS} for a in s.scalars(q).all()]

    def count_alerts(self, name: str) -> int:
        with self._session() as s:
            st = self._stream(s, name)
            return int(s.scalar(select(func.count()).where(AlertRow.stream_id == st.id)) or 0)

    def sources(self, name: str) -> set[str]:
        """Every source id recorded in the stream (to skip files that were already scored)."""
        with self._session() as s:
            try:
                st = self._stream(s, name)
            except StreamNotFound:
                return set()
            q = select(ImageRow.source_id).where(ImageRow.stream_id == st.id, ImageRow.source_id.is_not(None))
            return {sid for sid in s.scalars(q).all() if sid is not None}  # NULLs excluded above
