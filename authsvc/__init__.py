"""sscard authentication service: kiosk card login, tokens and (later) single sign-on.

Layout follows the data flow: `*/endpoints.py` (FastAPI routes, thin) → `*/service.py` (use cases, one
transaction each) → `*/domain.py` or pure modules (rules, no I/O) → `*/repository.py` (SQLAlchemy).
"""
