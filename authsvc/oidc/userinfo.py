"""The userinfo endpoint (OpenID Connect Core §5.3): claims by scope."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
