"""Admin API for client registration (automation): an access token with scope sscard:admin."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
