"""SQLite store (the default): WAL journal, one connection, one worker thread.

Every call runs on a single dedicated thread, so the event loop never blocks on the
disk and the one connection is never shared between threads. Single-use and rotation
rules are enforced by conditional UPDATEs (`... WHERE used = 0`), so they also hold
when several processes share the file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.models import Client
from gateway.store.base import (
    CODE_REPLAY_MEMORY,
    MAX_GRACE_SECONDS,
    MAX_LISTED_RECORDS,
    AuthorizationCode,
    ClientEntry,
    CodeRedemption,
    Grant,
    PendingConsent,
    RefreshRotation,
    RefreshToken,
    Revocation,
    StoreUnavailable,
    client_from_json,
    client_to_json,
)

T = TypeVar("T")
# Clients registered with an operator credential are never pruned or evicted.
_UNTRUSTED = "COALESCE(json_extract(data, '$.trusted'), 0) = 0"

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, data TEXT NOT NULL, issued_at REAL NOT NULL, last_used REAL
);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL,
    subject TEXT NOT NULL, scope TEXT NOT NULL, resource TEXT NOT NULL,
    issued_at REAL NOT NULL, expires_at REAL NOT NULL, rotated_at REAL,
    successor_hash TEXT, sealed_successor BLOB
);
CREATE INDEX IF NOT EXISTS refresh_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_client ON refresh_tokens (client_id);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS consents (
    id_hash TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS consents_expiry ON consents (expires_at);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
"""

REFRESH_COLUMNS = (
    "token_hash, family, client_id, subject, scope, resource, issued_at, expires_at, "
    "rotated_at, successor_hash, sealed_successor"
)


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oauth-db")
            await self._run(self._connect)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._db = db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, call: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("SqliteStore used before open()")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.OperationalError as exc:
            # Locked, disk full, I/O error: the request may succeed later.
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    # clients

    async def add_client(self, client: Client, *, limit: int) -> bool:
        def insert() -> bool:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                (count,) = self.db.execute("SELECT COUNT(*) FROM clients").fetchone()
                if count >= limit:
                    return False
                self.db.execute(
                    "INSERT INTO clients (client_id, data, issued_at) VALUES (?, ?, ?)",
                    (client.client_id, _client_json(client), client.client_id_issued_at),
                )
                return True

        return await self._run(insert)

    async def get_client(self, client_id: str) -> Client | None:
        row = await self._one("SELECT data FROM clients WHERE client_id = ?", (client_id,))
        return client_from_json(json.loads(row[0])) if row else None

    async def replace_client(self, client: Client) -> None:
        await self._exec(
            "UPDATE clients SET data = ? WHERE client_id = ?",
            (_client_json(client), client.client_id),
        )

    async def delete_client(self, client_id: str) -> bool:
        return await self._run(lambda: self._delete_client(client_id))

    def _delete_client(self, client_id: str) -> bool:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM refresh_tokens WHERE client_id = ?", (client_id,))
            return (
                self.db.execute("DELETE FROM clients WHERE client_id = ?", (client_id,)).rowcount
                > 0
            )

    async def mark_client_used(self, client_id: str, now: float) -> None:
        await self._exec("UPDATE clients SET last_used = ? WHERE client_id = ?", (now, client_id))

    async def client_was_used(self, client_id: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM clients WHERE client_id = ? AND last_used IS NOT NULL", (client_id,)
        )
        return row is not None

    async def prune_unused_clients(self, issued_before: float) -> int:
        return await self._exec(
            f"DELETE FROM clients WHERE last_used IS NULL AND issued_at < ? AND {_UNTRUSTED}",  # noqa: S608
            (issued_before,),
        )

    async def evict_client(self, *, unused_only: bool = False) -> str | None:
        unused = "AND last_used IS NULL " if unused_only else ""

        def evict() -> str | None:
            row = self.db.execute(
                f"SELECT client_id FROM clients WHERE {_UNTRUSTED} {unused}"  # noqa: S608
                "ORDER BY COALESCE(last_used, issued_at) LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._delete_client(row[0])
            return str(row[0])

        return await self._run(evict)

    # codes

    async def save_code(self, code: AuthorizationCode) -> None:
        data = json.dumps({k: v for k, v in vars(code).items() if k != "code_hash"})
        await self._exec(
            "INSERT INTO codes (code_hash, data, expires_at) VALUES (?, ?, ?)",
            (code.code_hash, data, code.expires_at),
        )

    async def redeem_code(self, code_hash: str) -> CodeRedemption | None:
        def redeem() -> CodeRedemption | None:
            marked = self.db.execute(
                "UPDATE codes SET used = 1 WHERE code_hash = ? AND used = 0", (code_hash,)
            ).rowcount
            row = self.db.execute(
                "SELECT data FROM codes WHERE code_hash = ?", (code_hash,)
            ).fetchone()
            if row is None:
                return None
            code = AuthorizationCode(code_hash=code_hash, **json.loads(row[0]))
            return CodeRedemption(code=code, first_use=marked == 1)

        return await self._run(redeem)

    # refresh tokens

    async def save_refresh(self, token: RefreshToken) -> bool:
        def save() -> bool:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                revoked = self.db.execute(
                    "SELECT 1 FROM revocations WHERE kind = 'family' AND value = ? "
                    "AND expires_at > ?",
                    (token.family, token.issued_at),
                ).fetchone()
                if revoked is not None:
                    return False
                self._insert_refresh(token)
                return True

        return await self._run(save)

    def _insert_refresh(self, token: RefreshToken) -> None:
        self.db.execute(
            f"INSERT INTO refresh_tokens ({REFRESH_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            _refresh_row(token),
        )

    async def get_refresh(self, token_hash: str) -> RefreshToken | None:
        return await self._run(lambda: self._select_refresh(token_hash))

    def _select_refresh(self, token_hash: str) -> RefreshToken | None:
        row = self.db.execute(
            f"SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = ?",  # noqa: S608
            (token_hash,),
        ).fetchone()
        return RefreshToken(*row) if row else None

    async def rotate_refresh(
        self, token_hash: str, successor: RefreshToken, sealed: bytes, *, now: float, grace: float
    ) -> RefreshRotation:
        def rotate() -> RefreshRotation:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                token = self._select_refresh(token_hash)
                if token is None:
                    return RefreshRotation("unknown", None)
                if token.rotated_at is None:
                    self.db.execute(
                        "UPDATE refresh_tokens SET rotated_at = ?, successor_hash = ?, "
                        "sealed_successor = ? WHERE token_hash = ? AND rotated_at IS NULL",
                        (now, successor.token_hash, sealed, token_hash),
                    )
                    self._insert_refresh(successor)
                    return RefreshRotation("rotated", token)
                following = self._select_refresh(token.successor_hash or "")
                if (
                    now - token.rotated_at <= grace
                    and token.sealed_successor is not None
                    and following is not None
                    and following.rotated_at is None
                ):
                    return RefreshRotation("grace", token, token.sealed_successor)
                return RefreshRotation("replayed", token)

        return await self._run(rotate)

    async def delete_family(self, family: str) -> None:
        await self._exec("DELETE FROM refresh_tokens WHERE family = ?", (family,))

    # revocations

    async def add_revocation(self, revocation: Revocation) -> None:
        await self._exec(
            "INSERT OR REPLACE INTO revocations (kind, value, expires_at) VALUES (?, ?, ?)",
            (revocation.kind, revocation.value, revocation.expires_at),
        )

    async def list_revocations(self, now: float) -> list[Revocation]:
        def select() -> list[Revocation]:
            rows = self.db.execute(
                "SELECT kind, value, expires_at FROM revocations WHERE expires_at > ?", (now,)
            ).fetchall()
            return [Revocation(kind, value, expires_at) for kind, value, expires_at in rows]

        return await self._run(select)

    # consents

    async def save_consent(self, pending: PendingConsent, *, limit: int) -> None:
        data = json.dumps({k: v for k, v in vars(pending).items() if k != "id_hash"})

        def save() -> None:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(
                    "INSERT INTO consents (id_hash, data, expires_at) VALUES (?, ?, ?)",
                    (pending.id_hash, data, pending.expires_at),
                )
                self.db.execute(
                    "DELETE FROM consents WHERE id_hash IN (SELECT id_hash FROM consents "
                    "ORDER BY expires_at DESC LIMIT -1 OFFSET ?)",
                    (limit,),
                )

        await self._run(save)

    async def take_consent(self, id_hash: str, now: float) -> PendingConsent | None:
        row = await self._one(
            "DELETE FROM consents WHERE id_hash = ? AND expires_at > ? RETURNING data",
            (id_hash, now),
        )
        return PendingConsent(id_hash=id_hash, **json.loads(row[0])) if row else None

    # counters

    async def increment(self, key: str, expires_at: float) -> int:
        row = await self._one(
            "INSERT INTO counters (key, count, expires_at) VALUES (?, 1, ?) "
            "ON CONFLICT (key) DO UPDATE SET count = count + 1 RETURNING count",
            (key, expires_at),
        )
        assert row is not None
        return int(row[0])

    async def prune(self, now: float) -> None:
        def prune() -> None:
            with self.db:
                self.db.execute(
                    "DELETE FROM codes WHERE expires_at < ?", (now - CODE_REPLAY_MEMORY,)
                )
                self.db.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?", (now,))
                self.db.execute(
                    "UPDATE refresh_tokens SET sealed_successor = NULL "
                    "WHERE sealed_successor IS NOT NULL AND rotated_at < ?",
                    (now - MAX_GRACE_SECONDS,),
                )
                self.db.execute("DELETE FROM revocations WHERE expires_at <= ?", (now,))
                self.db.execute("DELETE FROM consents WHERE expires_at <= ?", (now,))
                self.db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
                self.db.execute("DELETE FROM records WHERE expires_at <= ?", (now,))

        await self._run(prune)

    # records (gateway.people)

    async def put_record(
        self,
        kind: str,
        key: str,
        data: dict[str, Any],
        expires_at: float,
        *,
        limit: int | None = None,
    ) -> None:
        def put() -> None:
            with self.db:
                self.db.execute(
                    "INSERT OR REPLACE INTO records (kind, key, data, expires_at) "
                    "VALUES (?, ?, ?, ?)",
                    (kind, key, json.dumps(data), expires_at),
                )
                if limit is not None:
                    self.db.execute(
                        "DELETE FROM records WHERE kind = ? AND key IN (SELECT key FROM "
                        "records WHERE kind = ? ORDER BY expires_at DESC LIMIT -1 OFFSET ?)",
                        (kind, kind, limit),
                    )

        await self._run(put)

    async def get_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        row = await self._one(
            "SELECT data FROM records WHERE kind = ? AND key = ? AND expires_at > ?",
            (kind, key, now),
        )
        return _record(row[0]) if row is not None else None

    async def take_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        def take() -> list[tuple[Any, ...]]:
            return self.db.execute(
                "DELETE FROM records WHERE kind = ? AND key = ? RETURNING data, expires_at",
                (kind, key),
            ).fetchall()

        rows = await self._run(take)
        return _record(rows[0][0]) if rows and rows[0][1] > now else None

    async def delete_record(self, kind: str, key: str) -> bool:
        return await self._exec("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key)) > 0

    async def list_records(
        self, kind: str, prefix: str, now: float
    ) -> list[tuple[str, dict[str, Any]]]:
        def select() -> list[tuple[str, dict[str, Any]]]:
            rows = self.db.execute(
                "SELECT key, data FROM records WHERE kind = ? AND substr(key, 1, ?) = ? "
                "AND expires_at > ? ORDER BY key LIMIT ?",
                (kind, len(prefix), prefix, now, MAX_LISTED_RECORDS),
            ).fetchall()
            return [(str(key), _record(data)) for key, data in rows]

        return await self._run(select)

    # operator views

    async def list_clients(self, *, limit: int) -> list[ClientEntry]:
        def select() -> list[ClientEntry]:
            rows = self.db.execute(
                "SELECT data, last_used FROM clients ORDER BY issued_at, client_id LIMIT ?",
                (limit,),
            ).fetchall()
            return [ClientEntry(client_from_json(json.loads(d)), used) for d, used in rows]

        return await self._run(select)

    async def list_grants(
        self, now: float, *, client_id: str | None, subject: str | None, limit: int
    ) -> list[Grant]:
        def select() -> list[Grant]:
            rows = self.db.execute(
                "SELECT family, client_id, subject, scope, resource, MIN(issued_at), "
                "MAX(expires_at) FROM refresh_tokens WHERE expires_at > ? "
                "AND rotated_at IS NULL AND (? IS NULL OR client_id = ?) "
                "AND (? IS NULL OR subject = ?) GROUP BY family ORDER BY MIN(issued_at) "
                "LIMIT ?",
                (now, client_id, client_id, subject, subject, limit),
            ).fetchall()
            return [Grant(*row) for row in rows]

        return await self._run(select)

    async def _exec(self, sql: str, params: tuple[Any, ...]) -> int:
        def execute() -> int:
            return self.db.execute(sql, params).rowcount

        return await self._run(execute)

    async def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        def fetch() -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = self.db.execute(sql, params).fetchone()
            return row

        return await self._run(fetch)


def _client_json(client: Client) -> str:
    return json.dumps(client_to_json(client))


def _refresh_row(token: RefreshToken) -> tuple[Any, ...]:
    return (
        token.token_hash,
        token.family,
        token.client_id,
        token.subject,
        token.scope,
        token.resource,
        token.issued_at,
        token.expires_at,
        token.rotated_at,
        token.successor_hash,
        token.sealed_successor,
    )


def _record(data: str) -> dict[str, Any]:
    decoded = json.loads(data)
    assert isinstance(decoded, dict)
    return decoded
