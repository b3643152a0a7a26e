"""Refunds requested by operators, approved by a second operator above a threshold, sent through the order's channel
(issue 4): domain.py (pure policy), service.py (use cases, the channel, applying its word), endpoints.py (routes)."""
