"""OAuth endpoints: /par, /token, /introspect, /revoke (thin routes over the per-RFC modules)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
