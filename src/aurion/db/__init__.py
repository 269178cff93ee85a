"""Database kit: metadata, engine, embedded PostgreSQL, migrations."""
