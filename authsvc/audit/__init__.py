"""Audit events: every authentication attempt, who (masked), where, outcome and reason."""
