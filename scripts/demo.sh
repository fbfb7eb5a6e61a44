#!/usr/bin/env bash
# `make demo`: ingest the project's own docs, start rag-api on embedded defaults (Qdrant Edge
# and its own vLLM engine), ask two questions through POST /ask, then stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export RAG_DATA_DIR="${RAG_DATA_DIR:-$PWD/.demo/data}"
export RAG_INDEX=demo
export RAG_API_PORT="${RAG_API_PORT:-8765}"
export RAG_ENGINE_PORT="${RAG_ENGINE_PORT:-8766}"
export RAG_API_URL="http://127.0.0.1:$RAG_API_PORT"
export HF_HUB_OFFLINE=1
# The CPU demo model has 135M parameters: keep its answers short (it still tends to repeat).
export RAG_LLM_REPETITION_PENALTY="${RAG_LLM_REPETITION_PENALTY:-1.3}"
unset RAG_QDRANT_URL RAG_LLM_URL

echo "== ingesting docs/ and README.md into index '$RAG_INDEX' ($RAG_DATA_DIR)"
"$BIN/rag-ingest" docs README.md

echo "== creating an API key for the demo (shown once; the service keeps only its hash)"
"$BIN/rag-keys" revoke demo > /dev/null 2>&1 || true
RAG_API_KEY=$("$BIN/rag-keys" create demo --all-indexes)
export RAG_API_KEY
echo "key: ${RAG_API_KEY:0:17}… (rag-ask reads RAG_API_KEY; curl sends it as a Bearer token)"

echo "== starting rag-api on $RAG_API_URL (it starts its own engine: 1-3 minutes on a CPU)"
"$BIN/rag-api" > .demo/api.log 2>&1 &
api_pid=$!
stop_api() {
  if kill -0 "$api_pid" 2>/dev/null; then
    kill -TERM "$api_pid"
    wait "$api_pid" || true
  fi
}
trap stop_api EXIT

for _ in $(seq 1 600); do
  if curl -sf -H "Authorization: Bearer $RAG_API_KEY" "$RAG_API_URL/readyz" > /dev/null; then
    break
  fi
  if ! kill -0 "$api_pid" 2>/dev/null; then
    echo "rag-api exited:"; tail -n 30 .demo/api.log; exit 1
  fi
  sleep 1
done
curl -sf -H "Authorization: Bearer $RAG_API_KEY" "$RAG_API_URL/readyz" > /dev/null \
  || { echo "not ready after 10 minutes"; exit 1; }
echo "without the key: HTTP $(curl -s -o /dev/null -w '%{http_code}' "$RAG_API_URL/ask" \
  -H 'Content-Type: application/json' -d '{"question": "hello"}')"

for question in \
  "What happens to files that disappeared from an ingested folder?" \
  "Which HTTP status does /ask return when the engine is unavailable?"; do
  echo
  echo "== Q: $question"
  "$BIN/rag-ask" "$question" --top-k 4 --max-tokens 96
done

echo
echo "== stopping rag-api and its engine"
stop_api
trap - EXIT
if pgrep -f "vllm.entrypoints.openai.api_server.*--port $RAG_ENGINE_PORT" > /dev/null; then
  echo "an engine process is still running"; exit 1
fi
echo "stopped; nothing left running"
