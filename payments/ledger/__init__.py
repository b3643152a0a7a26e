"""The double-entry ledger: every fen that moves is a balanced, immutable journal entry (docs/payments.md)."""
