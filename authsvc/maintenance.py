"""Housekeeping: delete the OpenID Connect provider's durable rows once nothing can need them (`authsvc purge`).

Nothing in the request path ever deletes an SSO session, a grant, a refresh token or a back-channel logout
delivery; at national scale those tables would grow without bound. An operator schedules `authsvc purge` (cron, a
systemd timer) rather than the service running it: the schedule, and the database load, stay the operator's call.

What goes, once it has been dead for longer than `keep`:

- an SSO session ended or expired before the cutoff, with its `sso_session_clients` rows. Nothing reads a dead
  session again: a browser's cookie finds no live session either way, and a code of that session is refused at
  the token endpoint whether its row says "ended" or is gone.
- a grant revoked or expired before the cutoff, with all its refresh tokens. A dead grant's tokens are refused
  anyway; its revocation keeps reaching its access tokens through the shared store, not through the row.
- a logout delivery delivered or given up (`failed`) before the cutoff. A pending delivery is never deleted,
  however old: it is a logout a portal has not heard of yet.
- a liveness session (a face check, authsvc/liveness/) whose time ended before the cutoff, whatever its state: its
  login is long gone, and a verdict for it now could only be recorded as late. One that still comes is answered
  `session_unknown`, which stops the vendor's retries too.

What stays: live sessions, live grants and every refresh token of a live grant, spent or not. A spent token is
what reuse detection needs (RFC 9700 §4.14.2): presenting it again revokes the grant, because it may be a stolen
copy. Deleted, the same presentation would only be "unknown refresh token" and the thief's successor token would
live on. A grant's lifetime is absolute (rotation never extends it), so its chain of spent tokens is bounded by it
and goes with the grant.

Bounded batches: each statement deletes at most `batch` rows, chosen by primary key (`DELETE ... WHERE id IN
(SELECT id ... LIMIT n)`, or a list of at most `batch` keys), and each batch is its own transaction, so that on
PostgreSQL no lock is held for long and on SQLite (one writer) the service's requests wait at most one batch. The
rows are found through an index on the column that makes them dead, scanned in that column's order, so every batch
reads about `batch` index entries, not the table: `ORDER BY` the indexed column keeps PostgreSQL off a bitmap scan
of every dead row for each batch. A purge interrupted midway leaves nothing half done that the next run will not
finish: children go before their parent, in the parent's batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, delete, or_, select
from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.liveness.models import LivenessSession
from authsvc.oauth.models import OAuthGrant, RefreshToken
from authsvc.sessions.models import DeliveryStatus, LogoutDelivery, SsoSession, SsoSessionClient

EVENT = "maintenance_purge"

_SESSIONS: Table = SsoSession.__table__  # type: ignore[assignment]
_SESSION_CLIENTS: Table = SsoSessionClient.__table__  # type: ignore[assignment]
_GRANTS: Table = OAuthGrant.__table__  # type: ignore[assignment]
_TOKENS: Table = RefreshToken.__table__  # type: ignore[assignment]
_DELIVERIES: Table = LogoutDelivery.__table__  # type: ignore[assignment]
_LIVENESS: Table = LivenessSession.__table__  # type: ignore[assignment]


@dataclass
class PurgeReport:
    sessions: int = 0
    session_clients: int = 0
    grants: int = 0
    refresh_tokens: int = 0
    logout_deliveries: int = 0
    liveness_sessions: int = 0

    def counts(self) -> dict[str, int]:
        return asdict(self)


def purge(db: Session, *, now: datetime, keep: timedelta, batch: int) -> PurgeReport:
    """Delete what has been dead for longer than `keep` at `now` (see the module docstring), `batch` rows per
    statement, committing after each batch; then record one audit event with the counts, and commit it.

    `db` must have no pending work of the caller's: it is committed batch by batch."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if keep < timedelta(0):
        # A negative keep puts the cutoff in the future: "expired before the cutoff" would take live sessions.
        raise ValueError("keep must not be negative")
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cutoff = now - keep
    report = PurgeReport()

    # Sessions: expiry catches most of them (an ended session expires at most SSCARD_SESSION_TTL after its end);
    # a second pass by ended_at takes those that ended before the cutoff but expire after it. A session dead before
    # the cutoff stays dead: ended_at is set once, and only a live session's expiry is ever extended.
    for column in (_SESSIONS.c.expires_at, _SESSIONS.c.ended_at):
        parents, children = _purge_with_children(
            db, _SESSIONS, column, cutoff, _SESSION_CLIENTS, _SESSION_CLIENTS.c.session_id, batch
        )
        report.sessions += parents
        report.session_clients += children

    # Grants: `revoked_at` and `expires_at` never move once the grant is dead (revocation sets revoked_at once; the
    # expiry is absolute), so a grant found dead here cannot come back to life between the batch's statements.
    for column in (_GRANTS.c.expires_at, _GRANTS.c.revoked_at):
        parents, children = _purge_with_children(db, _GRANTS, column, cutoff, _TOKENS, _TOKENS.c.grant_id, batch)
        report.grants += parents
        report.refresh_tokens += children

    report.logout_deliveries = _purge_deliveries(db, cutoff, batch)
    expiry = _LIVENESS.c.expires_at
    report.liveness_sessions = _purge_rows(db, _LIVENESS, expiry < cutoff, expiry, batch)

    audit.record(
        db,
        event=EVENT,
        outcome="success",
        detail={**report.counts(), "cutoff": cutoff.isoformat(), "batch": batch},
    )
    db.commit()
    return report


def _purge_with_children(
    db: Session,
    parent: Table,
    column: Column[Any],
    cutoff: datetime,
    child: Table,
    child_fk: Column[Any],
    batch: int,
) -> tuple[int, int]:
    """Delete the rows of `parent` whose `column` (a time that ends its life) is before `cutoff`, `batch` at a time
    in the order of `column` (its index), each batch's children first."""
    dead = column < cutoff  # NULL (not ended, not revoked) is never before anything
    parents = children = 0
    while True:
        ids = list(db.scalars(select(parent.c.id).where(dead).order_by(column).limit(batch)))
        if not ids:
            return parents, children
        # The batch's statements go by these keys alone. Repeating `dead` in them would be no safer (a row dead
        # before the cutoff stays dead, see purge()) and is slower: PostgreSQL then ANDs the keys with a bitmap of
        # the whole dead range of the time index, for every batch.
        chosen = parent.c.id.in_(ids)
        while True:
            doomed = select(child.c.id).where(child_fk.in_(ids)).limit(batch)
            deleted = _rowcount(db.execute(delete(child).where(child.c.id.in_(doomed))))
            db.commit()
            children += deleted
            if deleted < batch:
                break
        deleted = _rowcount(db.execute(delete(parent).where(chosen)))
        db.commit()
        parents += deleted
        if deleted == 0 or len(ids) < batch:
            # Nothing deleted: another purge run took these rows first; it finishes the rest, and we never spin.
            return parents, children


def _purge_deliveries(db: Session, cutoff: datetime, batch: int) -> int:
    d = _DELIVERIES.c
    # A settled row's next_attempt_at is the end of the lease its last attempt was claimed with: within seconds of
    # when it was delivered or given up (there is no given-up timestamp), and indexed. delivered_at, where there is
    # one, must be before the cutoff too. Pending rows are never chosen, however old.
    dead = (
        d.status.in_((DeliveryStatus.DELIVERED, DeliveryStatus.FAILED))
        & (d.next_attempt_at < cutoff)
        & or_(d.delivered_at.is_(None), d.delivered_at < cutoff)
    )
    return _purge_rows(db, _DELIVERIES, dead, d.next_attempt_at, batch)


def _purge_rows(db: Session, table: Table, dead: ColumnElement[bool], order: Column[Any], batch: int) -> int:
    """Delete the rows of a table without children that are `dead`, `batch` at a time in the order of `order`
    (the indexed column that makes them dead), each batch its own transaction."""
    total = 0
    while True:
        doomed = select(table.c.id).where(dead).order_by(order).limit(batch)
        deleted = _rowcount(db.execute(delete(table).where(table.c.id.in_(doomed))))
        db.commit()
        total += deleted
        if deleted < batch:
            return total


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
