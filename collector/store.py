"""The one adapter between agentwatch and ClickHouse.

Embedded by default (chDB: the ClickHouse engine in this process, data under ``data_dir``), or a
ClickHouse server through clickhouse-connect when ``AGENTWATCH_CLICKHOUSE_URL`` is set. Both run the
same SQL text with ``{name:Type}`` bound parameters and take inserts as Arrow IPC streams; nothing
outside this module knows which one it talks to.
"""

from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import pyarrow as pa

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "agentwatch"
T = TypeVar("T")

# The read queries declare CTEs they read several times ``AS MATERIALIZED`` (collector/rollups.py). ClickHouse
# parses that from 26.3 and honours it only with this setting on (else it inlines the CTE at every reference):
# measured on bench/queries.py at 1M spans, -25 to -40 % on the task list, loops, cost anomalies and drift. It is
# experimental upstream, so it is turned on where we test it: the embedded engine (chDB, ClickHouse 26.9) and
# servers from that version on; 26.3-26.8 run the same SQL with the CTEs inlined (same results, slower).
MIN_SERVER_VERSION = (26, 3)
MATERIALIZED_CTE_SETTING = "enable_materialized_cte"
MATERIALIZED_CTE_FROM = (26, 9)


def server_settings(version: str, where: str) -> dict[str, Any]:
    """The session settings for a ClickHouse server of ``version`` (``'26.9.2.1'``); a StoreError if too old."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError as e:
        raise StoreError(f"cannot read the version {version!r} of ClickHouse at {where}") from e
    if (major, minor) < MIN_SERVER_VERSION:
        need = ".".join(map(str, MIN_SERVER_VERSION))
        raise StoreError(
            f"ClickHouse at {where} is {version}; agentwatch needs {need} or newer (materialized CTEs in its read "
            "queries). docker-compose.yml pins a version that works."
        )
    return {MATERIALIZED_CTE_SETTING: 1} if (major, minor) >= MATERIALIZED_CTE_FROM else {}


_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="agentwatch-read")


def parallel(*reads: Callable[[], T]) -> list[T]:
    """Run independent reads side by side (the embedded store has a pool of read connections, a server a client
    per thread); their results in order, or the first read's error."""
    if len(reads) == 1:
        return [reads[0]()]
    futures = [_POOL.submit(fn) for fn in reads[1:]]
    first = reads[0]()
    return [first, *(f.result() for f in futures)]


class StoreError(RuntimeError):
    """The store could not run a statement (down, full, or the statement is wrong)."""


class Store(ABC):
    """What the collector needs from ClickHouse, nothing more."""

    database: str

    @abstractmethod
    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT ... SELECT)."""

    @abstractmethod
    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        """Run a SELECT and return its result as an Arrow table."""

    @abstractmethod
    def insert_arrow(self, table: str, columns: list[str], ipc_stream: bytes, *, dedup_token: str | None = None) -> int:
        """Insert an Arrow IPC stream into ``table``; returns rows written. ``dedup_token`` makes a
        repeated insert of the same block a no-op (replay after a crash)."""

    @abstractmethod
    def close(self) -> None: ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.query_arrow(sql, params).to_pylist()

    def memory(self) -> int | None:
        """Bytes the engine accounts for, where it runs in this process (the embedded store): all it has allocated
        and holds now (inserts, queries, merges, caches). None for a server (its memory is not ours)."""
        return None

    def ping(self) -> bool:
        try:
            self.query_arrow("SELECT 1 AS ok")
            return True
        except Exception:  # noqa: BLE001 - readiness is a yes/no question
            return False


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _bindable(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """chDB reads bound String values in the escaped (TSV) form: escape them, so that a backslash, a tab or a
    newline in a parameter arrives as itself (the value stays bound either way: this is not about injection)."""
    if not params:
        return params
    return {k: v.translate(_ESCAPES) if isinstance(v, str) else v for k, v in params.items()}


def _insert_sql(table: str, columns: list[str], dedup_token: str | None) -> str:
    cols = ", ".join(f"`{c}`" for c in columns)
    settings = ""
    if dedup_token:
        # tokens are ours (segment ids), never user input; keep them to a safe alphabet anyway
        safe = "".join(ch for ch in dedup_token if ch.isalnum() or ch in "-_.")
        settings = f" SETTINGS insert_deduplication_token = '{safe}'"
    return f"INSERT INTO {table} ({cols}){settings}"


READERS = 3  # read connections of the embedded store


class ChdbStore(Store):
    """chDB, in process. chDB locks its data directory: this process owns it.

    Writes use one connection and reads a small pool (``readers``), so that a streaming insert never blocks the
    read API and concurrent reads (the dashboard's panels, the alert engine, a detector's independent queries)
    run side by side; each connection is used by one thread at a time.
    """

    def __init__(self, data_dir: Path, *, database: str = DEFAULT_DATABASE, readers: int = READERS) -> None:
        import chdb

        self.database = database
        self.path = Path(data_dir) / "clickhouse"
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._write = chdb.connect(str(self.path))
            readers_ = [chdb.connect(str(self.path)) for _ in range(max(1, readers))]
        except Exception as e:  # chDB refuses a directory another process holds
            raise StoreError(
                f"cannot open the embedded store at {self.path}: another agentwatch process holds it (chDB locks "
                "its directory). Stop that process, use its HTTP API, or pass another --data-dir."
            ) from e
        self._write_lock = threading.Lock()
        for conn in (self._write, *readers_):
            conn.query(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            conn.query(f"USE `{database}`")
        for conn in readers_:
            conn.query(f"SET {MATERIALIZED_CTE_SETTING} = 1")
        self._readers: queue.SimpleQueue = queue.SimpleQueue()  # idle read connections
        for conn in readers_:
            self._readers.put(conn)
        self._all_readers = readers_

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._write_lock:
            try:
                self._write.query(sql, "CSV", params=_bindable(params))
            except Exception as e:
                raise StoreError(str(e)) from e

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        conn = self._readers.get()
        try:
            return conn.query(sql, "ArrowTable", params=_bindable(params))
        except Exception as e:
            raise StoreError(str(e)) from e
        finally:
            self._readers.put(conn)

    def insert_arrow(self, table: str, columns: list[str], ipc_stream: bytes, *, dedup_token: str | None = None) -> int:
        with self._write_lock:
            try:
                with self._write.send_insert(_insert_sql(table, columns, dedup_token), "ArrowStream") as ins:
                    ins.append(ipc_stream)
                    return int(ins.finish().rows_written)
            except Exception as e:
                raise StoreError(str(e)) from e

    def memory(self) -> int | None:
        rows = self.query("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'")
        return int(rows[0]["value"]) if rows else None

    def close(self) -> None:
        for conn in (*self._all_readers, self._write):
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                log.debug("closing a chDB connection failed", exc_info=True)


class ClickHouseServerStore(Store):
    """A ClickHouse server through clickhouse-connect (HTTP), e.g. ``http://user:pass@host:8123/agentwatch``."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        u = urlparse(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise StoreError(f"AGENTWATCH_CLICKHOUSE_URL must look like http://user:pass@host:8123/db, got {url!r}")
        self.database = (u.path or "/").strip("/") or DEFAULT_DATABASE
        kwargs: dict[str, Any] = dict(
            host=u.hostname,
            port=u.port or (8443 if u.scheme == "https" else 8123),
            username=unquote(u.username or "default"),
            password=unquote(u.password or ""),
            secure=u.scheme == "https",
        )
        try:
            admin = clickhouse_connect.get_client(**kwargs)
            version = str(admin.server_version)
            admin.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            admin.close()
        except Exception as e:
            raise StoreError(f"cannot reach ClickHouse at {u.hostname}:{kwargs['port']}: {e}") from e
        settings = server_settings(version, f"{u.hostname}:{kwargs['port']}")
        self._client_kwargs = {**kwargs, "database": self.database, "settings": settings}
        self._local = threading.local()
        self._clients: list[Any] = []  # every thread's, to close them all (the read pool's threads too)
        self._clients_lock = threading.Lock()

    def _client(self):
        # clickhouse-connect clients are not thread-safe for concurrent queries: one per thread
        client = getattr(self._local, "client", None)
        if client is None:
            import clickhouse_connect

            client = clickhouse_connect.get_client(**self._client_kwargs)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        try:
            self._client().command(sql, parameters=params)
        except Exception as e:
            raise StoreError(str(e)) from e

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        try:
            return self._client().query_arrow(sql, parameters=params)
        except Exception as e:
            raise StoreError(str(e)) from e

    def insert_arrow(self, table: str, columns: list[str], ipc_stream: bytes, *, dedup_token: str | None = None) -> int:
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        try:
            summary = self._client().raw_insert(
                table, column_names=columns, insert_block=ipc_stream, settings=settings, fmt="ArrowStream"
            )
        except Exception as e:
            raise StoreError(str(e)) from e
        return int(summary.written_rows or 0)

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                log.debug("closing a ClickHouse client failed", exc_info=True)


def open_store(*, data_dir: Path, clickhouse_url: str | None) -> Store:
    """The embedded store unless a ClickHouse server URL is configured."""
    if clickhouse_url:
        return ClickHouseServerStore(clickhouse_url)
    return ChdbStore(data_dir)
