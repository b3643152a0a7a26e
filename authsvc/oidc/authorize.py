"""The authorization endpoint (RFC 6749 §4.1, OpenID Connect Core §3.1.2, PAR, FAPI 2.0)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
