"""SQLite persistence through SQLAlchemy 2.0, migrated by Alembic."""
