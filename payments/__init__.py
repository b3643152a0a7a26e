"""Contribution payments: orders, channel adapters, callbacks, the double-entry ledger, refunds, reconciliation."""
