"""Alembic migrations of the store, shipped inside the package (``env.py``, ``versions/``).

They run through ``indexer.store`` (``open_store`` upgrades under a lock; ``tuwen db upgrade``),
never through a repo-relative ``alembic.ini``, so an installed wheel migrates as a checkout does.
To write a new revision: ``alembic.command.revision(indexer.store.alembic_config(url), message=...,
autogenerate=True)`` against a store at head, then read and trim what it wrote.
"""
