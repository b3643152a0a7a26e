"""SSO sessions: one per browser sign-in, shared by every portal the browser signs in to."""
