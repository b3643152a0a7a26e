"""Tokens: the assurance policy (acr, amr) and issuing ID and access tokens as JWTs."""
