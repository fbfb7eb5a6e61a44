"""Question answering over private documents: the library behind `rag-ingest` and `rag-api`."""
