"""When the sweep asks a channel again (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta

# Doubling from one minute up to half an hour: a payer who is still scanning is asked about again soon, a channel
# that is down is not hammered.
FIRST_DELAY = timedelta(minutes=1)
MAX_DELAY = timedelta(minutes=30)
# A claimed order is due again after this if the sweeper that claimed it died before deciding.
LEASE = timedelta(minutes=10)


def delay(attempts: int) -> timedelta:
    """The wait after `attempts` unanswered or inconclusive checks (0 for the first)."""
    if attempts < 0:
        raise ValueError("attempts cannot be negative")
    # Capped before the power grows: an order retried for days must not overflow timedelta.
    return min(FIRST_DELAY * 2 ** min(attempts, 16), MAX_DELAY)


def next_check(now: datetime, attempts: int, expires_at: datetime | None) -> datetime:
    """The next check: after the back-off, but never after the expiry (None: none), so that an unpaid order is closed
    on time."""
    due = now + delay(attempts)
    return min(due, expires_at) if expires_at is not None and now < expires_at else due
