"""The ingest commands' exit codes, shared by the CLI and its hand-off to a running service."""

EXIT_FILES_FAILED = 1  # some files failed; the rest were synced
EXIT_USAGE = 2  # a user mistake: bad arguments, a refused request
EXIT_STORE = 3  # the store, the embedder or the service could not be reached
