"""Reconciliation of the channels' daily statements against our orders, refunds and ledger (issue 4).

A statement is streamed into a staging table and matched with set-based SQL (`matching.py`); each discrepancy is
kept as an item of the run and then resolved (`resolution.py`): back-filled after the channel confirms it, recognised
as money the callbacks inbox already holds in suspense, or parked in suspense with a balanced ledger entry for review.
`service.reconcile` runs it all; `service.report` reads a run back. See docs/payments.md, "Reconciliation".
"""
