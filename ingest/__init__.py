"""The `rag-ingest` and `rag-index` commands: thin shells over `rag.sync` and `rag.inventory`."""
