"""Answers kept for requests sent with an `Idempotency-Key` (the service is server/idempotency.py).

One row per (API key, Idempotency-Key). The first request INSERTs it as `running`: the unique
index decides the race, across any number of gateway processes. The claim carries a lease its
process keeps renewing; a `running` row whose lease ran out belongs to a process that died, and
the next request with that key takes it over. When the answer is final the row becomes `done`
with the answer's status, headers and body, kept until `expires_at`; a retryable failure
deletes the row instead, so the key can be served anew.

Bodies larger than `INLINE_MAX` (images) are files in a directory, not database rows; the row
names the file and records its size.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from sqlalchemy import BigInteger, Engine, Index, Integer, LargeBinary, String, Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from bananagate.store.schema import REQUEST_ID_MAX_LENGTH, SHA256_HEX_LENGTH, Base, UTCDateTime

RUNNING = "running"
DONE = "done"
# Bodies up to this size stay in the row (errors, text-only answers); larger ones go to a file.
INLINE_MAX = 16 * 1024
SWEEP_BATCH = 500
_FILE_NAME_LENGTH = 37  # 32 hex + ".json"


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("ix_idempotency_keys_key_id_key_hash", "key_id", "key_hash", unique=True),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer())
    # SHA-256 of the header value: fixed width for the index, and no client text in the table.
    key_hash: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH))
    # SHA-256 over route, model and body: a different request under the same key is refused.
    fingerprint: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH))
    state: Mapped[str] = mapped_column(String(8))
    owner: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[int | None] = mapped_column(Integer())
    headers: Mapped[str | None] = mapped_column(Text())  # JSON object
    body: Mapped[bytes | None] = mapped_column(LargeBinary())
    body_file: Mapped[str | None] = mapped_column(String(64))
    body_size: Mapped[int | None] = mapped_column(BigInteger())


@dataclass(frozen=True, slots=True)
class Claim:
    """This request owns the key: it runs, then completes or releases the claim."""

    id: int
    owner: str


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """Someone else's claim on the key: still running, or done with its answer."""

    id: int
    fingerprint: str
    state: str
    request_id: str
    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None
    body_file: str | None = None
    body_size: int | None = None


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


class IdempotencyRepository:
    """Synchronous and thread-safe, like the other repositories."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def claim(
        self,
        key_id: int,
        key_hash: str,
        fingerprint: str,
        request_id: str,
        lease_seconds: float,
        *,
        now: datetime | None = None,
    ) -> Claim | KeptAnswer:
        """Claim the key, or return the claim that holds it (expired rows are cleared first)."""
        owner = secrets.token_hex(16)
        for _ in range(5):  # each lap resolves one race (a row deleted or taken over meanwhile)
            current = _now(now)
            lease = current + timedelta(seconds=lease_seconds)
            try:
                with self._sessions() as session, session.begin():
                    record = IdempotencyRecord(
                        key_id=key_id,
                        key_hash=key_hash,
                        fingerprint=fingerprint,
                        state=RUNNING,
                        owner=owner,
                        request_id=request_id[:REQUEST_ID_MAX_LENGTH],
                        created_at=current,
                        lease_until=lease,
                    )
                    session.add(record)
                    session.flush()
                    return Claim(record.id, owner)
            except IntegrityError:
                pass
            with self._sessions() as session:
                row = session.scalars(
                    select(IdempotencyRecord).where(
                        IdempotencyRecord.key_id == key_id, IdempotencyRecord.key_hash == key_hash
                    )
                ).first()
            if row is None:
                continue
            if row.state == DONE and row.expires_at is not None and row.expires_at <= current:
                self._delete_expired(row.id, current)
                continue
            if row.fingerprint == fingerprint and row.state == RUNNING and row.lease_until <= current:
                if self._take_over(row.id, owner, request_id, lease, current):
                    return Claim(row.id, owner)
                continue
            return _kept(row)
        raise RuntimeError("could not claim the idempotency key (too much contention)")

    def _delete_expired(self, record_id: int, now: datetime) -> None:
        with self._sessions() as session, session.begin():
            session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.id == record_id, IdempotencyRecord.expires_at <= now
                )
            )

    def _take_over(self, record_id: int, owner: str, request_id: str, lease: datetime, now: datetime) -> bool:
        """The claim of a process that stopped renewing it becomes ours (at most one taker wins)."""
        with self._sessions() as session, session.begin():
            result = session.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.id == record_id,
                    IdempotencyRecord.state == RUNNING,
                    IdempotencyRecord.lease_until <= now,
                )
                .values(owner=owner, request_id=request_id[:REQUEST_ID_MAX_LENGTH], lease_until=lease)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def get(self, record_id: int) -> KeptAnswer | None:
        with self._sessions() as session:
            row = session.get(IdempotencyRecord, record_id)
            return None if row is None else _kept(row)

    def complete(
        self,
        claim: Claim,
        *,
        status: int,
        headers: dict[str, str],
        body: bytes | None,
        body_file: str | None,
        body_size: int,
        retention_seconds: float,
        now: datetime | None = None,
    ) -> bool:
        """Keep the answer; False if the claim was lost (taken over after a missed renewal)."""
        expires = _now(now) + timedelta(seconds=retention_seconds)
        with self._sessions() as session, session.begin():
            result = session.execute(
                update(IdempotencyRecord)
                .where(
                    IdempotencyRecord.id == claim.id,
                    IdempotencyRecord.owner == claim.owner,
                    IdempotencyRecord.state == RUNNING,
                )
                .values(
                    state=DONE,
                    status=status,
                    headers=orjson.dumps(headers).decode(),
                    body=body,
                    body_file=body_file,
                    body_size=body_size,
                    expires_at=expires,
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def release(self, claim: Claim) -> bool:
        """Give the key up (the answer is not kept); False if it was no longer ours."""
        with self._sessions() as session, session.begin():
            result = session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.id == claim.id,
                    IdempotencyRecord.owner == claim.owner,
                    IdempotencyRecord.state == RUNNING,
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def renew(self, claims: list[Claim], lease_seconds: float, *, now: datetime | None = None) -> int:
        """Push the leases of live claims forward (their process's heartbeat)."""
        if not claims:
            return 0
        lease = _now(now) + timedelta(seconds=lease_seconds)
        renewed = 0
        with self._sessions() as session, session.begin():
            for claim in claims:
                result = session.execute(
                    update(IdempotencyRecord)
                    .where(
                        IdempotencyRecord.id == claim.id,
                        IdempotencyRecord.owner == claim.owner,
                        IdempotencyRecord.state == RUNNING,
                    )
                    .values(lease_until=lease)
                )
                renewed += int(result.rowcount)  # type: ignore[attr-defined]
        return renewed

    def sweep(self, *, now: datetime | None = None) -> list[str]:
        """Delete answers past their retention; the body files they named (for the caller to delete)."""
        now = _now(now)
        files: list[str] = []
        while True:
            with self._sessions() as session:
                expired = session.execute(
                    select(IdempotencyRecord.id, IdempotencyRecord.body_file)
                    .where(IdempotencyRecord.expires_at <= now)
                    .limit(SWEEP_BATCH)
                ).all()
            if not expired:
                return files
            with self._sessions() as session, session.begin():
                session.execute(
                    delete(IdempotencyRecord).where(
                        IdempotencyRecord.id.in_([row_id for row_id, _ in expired]),
                        IdempotencyRecord.expires_at <= now,
                    )
                )
            files.extend(name for _, name in expired if name)
            if len(expired) < SWEEP_BATCH:
                return files


def _kept(row: IdempotencyRecord) -> KeptAnswer:
    return KeptAnswer(
        id=row.id,
        fingerprint=row.fingerprint,
        state=row.state,
        request_id=row.request_id,
        status=row.status,
        headers=orjson.loads(row.headers) if row.headers else None,
        body=row.body,
        body_file=row.body_file,
        body_size=row.body_size,
    )


class AnswerFiles:
    """Large kept bodies, one file each under `root` (share it between hosts behind one balancer)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, body: bytes) -> str:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = secrets.token_hex(16) + ".json"
        tmp = self.root / f".{name}.tmp"
        with open(tmp, "xb") as handle:
            handle.write(body)
        os.replace(tmp, self.root / name)
        return name

    def read(self, name: str, size: int | None) -> bytes | None:
        """The body, or None when the file is missing or not the size that was stored."""
        if len(name) != _FILE_NAME_LENGTH or "/" in name or name.startswith("."):
            return None
        try:
            body = (self.root / name).read_bytes()
        except OSError:
            return None
        if size is not None and len(body) != size:
            return None
        return body

    def delete(self, names: list[str]) -> None:
        for name in names:
            if len(name) == _FILE_NAME_LENGTH and "/" not in name:
                with contextlib.suppress(OSError):
                    (self.root / name).unlink()

    def sweep(self, older_than_seconds: float) -> int:
        """Delete files no row can still name (older than the retention, plus any stray temp file)."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed
