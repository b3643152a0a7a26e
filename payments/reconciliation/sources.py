"""Where a command finds a channel's statement parser and query: the running channel adapters when the channel is
configured (payments/channels/setup.py), otherwise the channel's parser alone (every discrepancy is then parked for
review, nothing is resolved by query)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from payments.reconciliation.service import Parse, StatementSource

log = logging.getLogger("sscard.payments.reconciliation")

# The statement parsers, by channel (module, function): pure functions of the raw lines.
PARSERS = {
    "wechatpay": ("payments.channels.wechatpay_bill", "parse"),
    "alipay": ("payments.channels.alipay_bill", "parse"),
    "bank": ("payments.channels.bank", "parse_statement"),
}


class UnknownChannel(ValueError):
    pass


def parser_for(channel: str) -> Parse:
    if channel not in PARSERS:
        raise UnknownChannel(f"no statement format for channel {channel!r} (known: {', '.join(sorted(PARSERS))})")
    module, name = PARSERS[channel]
    parse: Parse = getattr(importlib.import_module(module), name)
    return parse


@contextmanager
def source_for(runtime: Any, channel: str) -> Iterator[tuple[StatementSource, Any]]:
    """(the source, the configured adapter or None), with the adapter's HTTP clients closed afterwards."""
    parse = parser_for(channel)
    try:
        from keys.channel_keys import ChannelKeyring
        from payments.channels.setup import build_channels
    except ImportError:  # a deployment without the channels' set-up: the statement alone
        log.warning("payment channels are not set up: discrepancies are parked without asking the channel")
        yield StatementSource(channel, parse), None
        return
    keyring = ChannelKeyring(runtime.sessions, runtime.sealer, cache_seconds=runtime.settings.key_cache_seconds)
    built = build_channels(runtime.settings, keyring)
    try:
        adapter = built.channels.get(channel)
        if adapter is None:
            log.warning("channel %s is not configured: discrepancies are parked without asking the channel", channel)
            yield StatementSource(channel, parse), None
        else:
            yield StatementSource.of(adapter), adapter
    finally:
        built.close()
