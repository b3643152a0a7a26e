"""Reconciling one channel's statement of one day: import, match, resolve, keep the report.

    run = reconcile(runtime.sessions, StatementSource.of(adapter), day, lines)
    report(db, run.run_id)

Import and matching are one transaction: a statement that does not parse (StatementError, with its line number) or
fails a check leaves nothing behind. The same file for the same day (same SHA-256) is the same run: importing it again
returns that run, and resumes its resolution if an earlier attempt stopped halfway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import lock, unit_of_work, utcnow
from payments.channels.base import ChannelAdapter, ChannelTrade, RefundStatus, StatementError, StatementLine
from payments.reconciliation import matching, resolution, staging
from payments.reconciliation.models import ReconItem, ReconRun, RunStatus

Parse = Callable[[Iterable[bytes]], Iterator[StatementLine]]


@dataclass(frozen=True)
class StatementSource:
    """What reconciliation needs of a channel: its statement parser and, for automatic resolution, its payment and
    refund queries (None: what they would settle is parked for review)."""

    channel: str
    parse: Parse
    query: Callable[[str], ChannelTrade] | None = None
    query_refund: Callable[[str, str], RefundStatus] | None = None

    @classmethod
    def of(cls, adapter: ChannelAdapter) -> StatementSource:
        return cls(adapter.name, adapter.parse_statement, adapter.query_payment, adapter.query_refund)


@dataclass(frozen=True)
class Reconciled:
    run_id: int
    reused: bool  # the same file was imported before: its run was returned
    lines: int
    stage_seconds: float  # parse and load
    match_seconds: float
    resolve_seconds: float


def find_run(db: Session, channel: str, day: date, digest: str) -> ReconRun | None:
    return db.scalar(
        select(ReconRun).where(ReconRun.channel == channel, ReconRun.day == day, ReconRun.digest == digest)
    )


def latest_run(db: Session, channel: str, day: date) -> ReconRun | None:
    return db.scalar(
        select(ReconRun).where(ReconRun.channel == channel, ReconRun.day == day).order_by(ReconRun.id.desc()).limit(1)
    )


def reconcile(
    sessions: sessionmaker[Session],
    source: StatementSource,
    day: date,
    lines: Iterable[bytes],
    *,
    digest: str | None = None,
    batch: int = staging.BATCH,
) -> Reconciled:
    """Import `lines` (raw statement lines, streamed) as `source`'s statement of `day`, match and resolve. With
    `digest` (the file's SHA-256, computed beforehand) a file imported before is recognised without reading it."""
    channel = source.channel
    if digest is not None:
        with unit_of_work(sessions) as db:
            existing = find_run(db, channel, day, digest)
            if existing is not None:
                return _resume(sessions, source, existing, day)
    started = time.perf_counter()
    hashing = staging.Digest()
    with unit_of_work(sessions) as db:
        lock(db, f"reconciliation:{channel}:{day.isoformat()}")  # one import of a channel's day at a time
        resolution.hold_writer(db)
        staging.create(db)
        count = staging.load(db, source.parse(hashing.feed(lines)), batch=batch)
        found = hashing.hexdigest()
        if digest is not None and found != digest:
            raise StatementError(0, "the file changed while it was read")
        existing = find_run(db, channel, day, found)
        staged = time.perf_counter()
        if existing is not None:
            staging.drop(db)
        else:
            staging.index(db)
            run = ReconRun(channel=channel, day=day, digest=found, lines=count, status=RunStatus.MATCHED, totals={})
            db.add(run)
            db.flush()
            run.totals = matching.match(db, run.id, channel, day)
            staging.drop(db)
            run_id = run.id
    if existing is not None:
        return _resume(sessions, source, existing, day)
    matched = time.perf_counter()
    _finish(sessions, source, run_id, day)
    return Reconciled(run_id, False, count, staged - started, matched - staged, time.perf_counter() - matched)


def _resume(sessions: sessionmaker[Session], source: StatementSource, run: ReconRun, day: date) -> Reconciled:
    started = time.perf_counter()
    if run.status != RunStatus.RESOLVED:
        _finish(sessions, source, run.id, day)
    else:
        resolution.sweep(sessions, source.channel)
    return Reconciled(run.id, True, run.lines, 0.0, 0.0, time.perf_counter() - started)


def _finish(sessions: sessionmaker[Session], source: StatementSource, run_id: int, day: date) -> None:
    queries = resolution.Queries(source.query, source.query_refund)
    resolution.resolve(sessions, run_id, source.channel, day, queries)
    resolution.sweep(sessions, source.channel)  # earlier runs' parked charges whose callbacks came since
    with unit_of_work(sessions) as db:
        resolution.hold_writer(db)
        run = db.get(ReconRun, run_id, with_for_update=True)
        assert run is not None
        if run.status != RunStatus.RESOLVED:
            run.status, run.finished_at = RunStatus.RESOLVED.value, utcnow()


def report(db: Session, run_id: int, *, limit: int = 1000) -> dict[str, Any] | None:
    """The run as JSON-ready data: totals per kind and category, resolutions, and up to `limit` items."""
    run = db.get(ReconRun, run_id)
    if run is None:
        return None
    resolutions: dict[str, int] = {}
    counted = (
        select(ReconItem.kind, ReconItem.category, ReconItem.resolution, func.count())
        .where(ReconItem.run_id == run_id)
        .group_by(ReconItem.kind, ReconItem.category, ReconItem.resolution)
    )
    for kind, category, resolved, count in db.execute(counted):
        resolutions[f"{kind}:{category}:{resolved}"] = count
    items = db.scalars(select(ReconItem).where(ReconItem.run_id == run_id).order_by(ReconItem.id).limit(limit))
    return {
        "run_id": run.id,
        "channel": run.channel,
        "day": run.day.isoformat(),
        "digest": run.digest,
        "lines": run.lines,
        "status": run.status,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "totals": run.totals,
        "resolutions": dict(sorted(resolutions.items())),
        "items": [_item(item) for item in items],
        "items_shown": min(limit, sum(resolutions.values())),
        "items_total": sum(resolutions.values()),
    }


def _item(item: ReconItem) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "category": item.category,
        "line_no": item.line_no,
        "occurrence": item.occurrence,
        "order_no": item.order_no,
        "channel_trade_no": item.channel_trade_no,
        "refund_no": item.refund_no,
        "channel_refund_no": item.channel_refund_no,
        "statement_fen": item.statement_fen,
        "ours_fen": item.ours_fen,
        "resolution": item.resolution,
        "ledger_key": item.ledger_key,
        "note": item.note,
    }
