"""PostgreSQL-only backend tests."""
