"""Offline stages that talk through files and the store: ingest → index → export."""
