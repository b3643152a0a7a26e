"""Signing in from a browser: pending logins, the login page, and the authenticators that complete them."""
