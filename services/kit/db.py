"""Database helpers shared by the services: pipelined statements and a write transaction that owns
its BEGIN/COMMIT when it can (so a hot write holds its row locks for as few round trips as possible)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import InterfaceError, OperationalError, connection, transaction

from services.kit.logs import get_logger

log = get_logger(__name__)


def execute(sql: str, params: list[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run one statement on Django's connection (in its current transaction) with server-side binding, and
    return its rows (none for a statement that returns none).

    Unlike Django's cursor (psycopg's client-side ``ClientCursor``), parameters are not quoted into the SQL
    text in Python — for arrays of thousands of values that quoting costs more than the statement — and
    psycopg prepares a statement it sees repeatedly. Errors are Django's database exceptions.
    """
    connection.ensure_connection()
    started = time.monotonic()
    with connection.wrap_database_errors:
        cursor = psycopg.Cursor(connection.connection)
        try:
            cursor.execute(sql, params)
            rows = cursor.fetchall() if cursor.description is not None else []
        finally:
            cursor.close()
    if connection.queries_logged:
        elapsed = f"{time.monotonic() - started:.3f}"
        connection.queries_log.append({"sql": f"{sql} -- params {params!r} (server-side binding)", "time": elapsed})
    return rows


class Pipeline:
    """Statements sent to PostgreSQL together and answered in one network round trip (psycopg pipeline mode).

    The server still runs them one after another, each with its own snapshot, so a statement placed after
    a lock sees what the lock holder committed. ``add`` returns a handle; rows are read after ``run``.
    Errors surface from ``run`` as Django's database exceptions (so retries and rollbacks work as usual),
    and the statements are logged like any other query when Django logs queries (``DEBUG``).
    """

    def __init__(self) -> None:
        self._statements: list[tuple[str, list[Any]]] = []
        self._cursors: list[Any] = []

    def add(self, sql: str, params: list[Any]) -> int:
        self._statements.append((sql, params))
        return len(self._statements) - 1

    def run(self) -> None:
        if not self._statements:
            return
        connection.ensure_connection()
        pg = connection.connection
        started = time.monotonic()
        with connection.wrap_database_errors, pg.pipeline():
            for sql, params in self._statements:
                # Server-side binding (not Django's client-side ClientCursor): no quoting of every parameter
                # in Python, and psycopg prepares statements it sees repeatedly (a transfer's shapes repeat).
                cursor = psycopg.Cursor(pg)
                cursor.execute(sql, params)
                self._cursors.append(cursor)
        if connection.queries_logged:
            elapsed = f"{time.monotonic() - started:.3f}"
            for sql, params in self._statements:
                connection.queries_log.append({"sql": f"{sql} -- params {params!r} (pipelined)", "time": elapsed})

    def rows(self, handle: int) -> list[tuple[Any, ...]]:
        with connection.wrap_database_errors:
            return self._cursors[handle].fetchall()


class WriteTransaction:
    """The database transaction of one write.

    Outside any atomic block, this code owns the transaction: ``BEGIN`` travels in the first pipeline
    and ``COMMIT`` in the last, so the account locks are held for a single round trip (the writes and
    their commit). Inside an atomic block (a caller's, a test's) it is Django's ``atomic()`` (a
    savepoint) and ``begin``/``commit`` add nothing. Any exception rolls the transaction back.
    """

    def __init__(self) -> None:
        self.own = False
        self.open = False
        self._atomic: Any = None
        self._after_commit: list[Callable[[], None]] = []

    def on_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the transaction has committed (Django's ``on_commit`` when inside an atomic block)."""
        if self.own:
            self._after_commit.append(fn)
        else:
            transaction.on_commit(fn)

    def __enter__(self) -> WriteTransaction:
        self.own = not connection.in_atomic_block
        if self.own:
            connection.close_if_health_check_failed()
            connection.ensure_connection()
        else:
            self._atomic = transaction.atomic()
            self._atomic.__enter__()
        return self

    def begin(self, pipeline: Pipeline) -> None:
        if self.own:
            pipeline.add("BEGIN", [])
            self.open = True

    def commit(self, pipeline: Pipeline) -> None:
        if self.own and self.open:
            pipeline.add("COMMIT", [])
            self.open = False

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if not self.own:
            self._atomic.__exit__(exc_type, exc, tb)
            return
        pg = connection.connection
        if exc is None:
            if pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with connection.wrap_database_errors:
                    pg.execute("COMMIT")
            for fn in self._after_commit:
                try:
                    fn()
                except Exception:  # like Django's robust on_commit: the commit stands, the hook's failure is logged
                    log.exception("db.after_commit_failed", hook=getattr(fn, "__qualname__", repr(fn)))
            return
        # Roll back whatever is open; a broken connection is Django's to discard, the original error wins.
        try:
            if pg is not None and not pg.closed and pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                pg.execute("ROLLBACK")
        except psycopg.Error:
            connection.close()


# SQLSTATE classes that say the database is away or busy, not that a statement's data is bad: connection
# exception, transaction rollback (serialisation failure, deadlock), insufficient resources, operator
# intervention (shutdown, cancel), system error.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def database_transient(exc: BaseException) -> bool:
    """Whether ``exc``, raised while writing a batch, says the database is away or busy — retry the whole batch
    later — rather than that some item of it is bad (the batch can then be split to find it): a lost
    connection, a serialisation failure or deadlock, too few resources, the server shutting down; or the
    database not answering ``SELECT 1`` right after. Call it outside the failed transaction."""
    state = str(getattr(exc.__cause__, "sqlstate", None) or getattr(exc, "sqlstate", None) or "")
    if isinstance(exc, InterfaceError | psycopg.InterfaceError) or state[:2] in _TRANSIENT_CLASSES:
        return True
    if isinstance(exc, OperationalError | psycopg.OperationalError) and not state:
        return True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return True
    return False
