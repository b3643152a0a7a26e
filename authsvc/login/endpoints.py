"""The browser login page, its status, and the authenticators' endpoints for pending logins."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
