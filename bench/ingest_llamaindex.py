"""The LlamaIndex side of the ingestion benchmark, run by bench/ingest.py in its own process.

    python -m bench.ingest_llamaindex {default,windowed} --folder F --work W --model PATH

``default``: SimpleDirectoryReader -> SentenceSplitter() (1024 tiktoken tokens, 200 overlap) ->
HuggingFaceEmbedding -> QdrantVectorStore in qdrant-client's local mode, all at their defaults.
``windowed``: the same, with the splitter counting MiniLM's own word pieces at our index's chunk
size and overlap, so that no chunk passes the embedder's window. The stages are the calls
``IngestionPipeline`` makes, made one by one so that each can be timed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from rag.ingest import SUFFIX_TYPES

WINDOW = 256  # all-MiniLM-L6-v2's max_seq_length: word pieces it reads, [CLS] and [SEP] included


def count_truncated(texts: list[str], tokenizer: Any, batch: int = 256) -> int:
    """How many of ``texts`` the embedder cut short: more than WINDOW word pieces with specials."""
    over = 0
    for start in range(0, len(texts), batch):
        ids = tokenizer(texts[start : start + batch], add_special_tokens=True, verbose=False)
        over += sum(1 for row in ids["input_ids"] if len(row) > WINDOW)
    return over


def run(
    mode: str, folder: Path, work: Path, model: str, chunk: int, overlap: int
) -> dict[str, Any]:
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    tokenizer = AutoTokenizer.from_pretrained(model)
    if mode == "default":
        splitter = SentenceSplitter()
    else:

        def word_pieces(text: str) -> list[int]:
            ids: list[int] = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            return ids

        splitter = SentenceSplitter(chunk_size=chunk, chunk_overlap=overlap, tokenizer=word_pieces)
    embed = HuggingFaceEmbedding(model_name=model, device="cpu")
    client = QdrantClient(path=str(work / "qdrant"))
    store = QdrantVectorStore(client=client, collection_name="bench")

    started = time.perf_counter()
    # The file types our ingestion reads, so that both sides see the same files.
    reader = SimpleDirectoryReader(str(folder), recursive=True, required_exts=sorted(SUFFIX_TYPES))
    documents = reader.load_data()
    parsed = time.perf_counter()
    nodes = splitter(documents)
    chunked = time.perf_counter()
    nodes = embed(nodes)
    embedded = time.perf_counter()
    store.add(nodes)
    written = time.perf_counter()
    client.close()

    loaded = {str(d.metadata.get("file_path")) for d in documents}
    dropped = [str(p) for p in reader.input_files if str(p) not in loaded]
    embedded_texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    return {
        "seconds": written - started,
        "stages": {
            "parse": parsed - started,
            "chunk": chunked - parsed,
            "embed": embedded - chunked,
            "write": written - embedded,
        },
        "pages": len(documents),  # PDFReader: one document per page; other files: one each
        "chunks": len(nodes),
        "chunks_truncated": count_truncated(embedded_texts, tokenizer),
        "dropped": dropped,
        "splitter": {
            "chunk_size": splitter.chunk_size,
            "chunk_overlap": splitter.chunk_overlap,
            "counts": "tiktoken (LlamaIndex default)"
            if mode == "default"
            else "MiniLM word pieces",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["default", "windowed"])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", required=True, help="the embedder's local folder")
    parser.add_argument("--chunk-tokens", type=int, default=200)
    parser.add_argument("--overlap-tokens", type=int, default=32)
    args = parser.parse_args()
    result = run(
        args.mode, args.folder, args.work, args.model, args.chunk_tokens, args.overlap_tokens
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
