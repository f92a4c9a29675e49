"""The FastAPI retrieval service. Imports models and indexer, never training."""
