"""Kiosk card login (docs/kiosk-api.md): signed kiosk requests, challenges, card verification, tokens."""
