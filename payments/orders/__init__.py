"""Contribution orders: the domain (pure), the state machine, tables, and the ledger entries of each change."""
