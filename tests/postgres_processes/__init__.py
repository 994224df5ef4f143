"""End-to-end PostgreSQL tests with real worker processes (``app.py`` is the worker program)."""
