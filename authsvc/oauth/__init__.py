"""OAuth 2.0: a module per RFC (PKCE, PAR, DPoP, client authentication, introspection, revocation, step-up)."""
