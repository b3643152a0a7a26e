"""The sweep inside the service (SSCARD_PAYMENT_SWEEP_INTERVAL seconds, 0 = off, the default): for a deployment
without cron. Every worker may run it; they share the work through the sweep's row claims."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from authsvc.runtime import Runtime
from payments.channels.registry import Channels
from payments.recovery.sweep import run

log = logging.getLogger("sscard.payments.recovery")


async def sweep_loop(runtime: Runtime, channels: Callable[[], Channels], stop: asyncio.Event) -> None:
    """`channels` is read on every pass: the application installs its adapters after it is built."""
    interval = runtime.settings.payment_sweep_interval
    while interval and not stop.is_set():
        try:
            report = await asyncio.to_thread(run, runtime, channels())
            log.info("payments sweep: %s", json.dumps(report.as_dict(), separators=(",", ":")))
        except Exception:  # a database or channel hiccup must not end the loop for the worker's lifetime
            log.exception("payments sweep pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
