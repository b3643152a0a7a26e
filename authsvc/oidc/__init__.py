"""OpenID Connect provider metadata (OpenID Connect Discovery 1.0) and the JWKS (RFC 7517)."""
