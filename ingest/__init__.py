"""The `rag-ingest`, `rag-index`, `rag-keys` and `rag-eval` commands: thin shells over `rag`."""
