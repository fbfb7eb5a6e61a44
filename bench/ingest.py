"""Ingestion benchmark: `rag-ingest` against LlamaIndex's pipeline, twice configured, one folder.

    python -m bench.ingest --folder ../shared/data/sec-10q [--big-text-mb 200]

Each pipeline runs in its own fresh process with its own empty store:
1. ours: ``rag-ingest FOLDER --json`` (this virtualenv's console script), then the unchanged
   re-run;
2. LlamaIndex's defaults: SimpleDirectoryReader -> SentenceSplitter() -> HuggingFaceEmbedding
   (the same MiniLM) -> QdrantVectorStore in qdrant-client's local mode;
3. the same with the splitter counting MiniLM's word pieces at our index's chunk size and
   overlap, so that nothing is truncated (bench/ingest_llamaindex.py).
A chunk is truncated when what was embedded (for ours, the stored chunk text; for LlamaIndex,
the node's text with its embedded metadata) re-tokenises to more than 256 word pieces, [CLS] and
[SEP] included. Peak RSS is the peak of the sum over the process and all its descendants (our
parse workers), sampled every 50 ms from this process; the largest single process is shown too.
Then a folder holding one ``--big-text-mb`` MB text file and a few small ones goes through
``rag-ingest --json``. One table is printed; the JSON of everything is the last line and is
written to bench/results/ingest.json. LlamaIndex's file reader pins pypdf<7, so its packages
may live in their own folder (``--baseline-deps``), put first on the baselines' PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.measure import measure

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "ingest.json"
INDEX = "bench"
GOAL_RSS_MB = 2500.0  # 2.5 GB
GOAL_SPEEDUP_WINDOWED = 2.0
GOAL_SPEEDUP_DEFAULT = 1.3
# Pointing at another store, index or server would measure something else.
STRIPPED_ENV = ("RAG_DATA_DIR", "RAG_QDRANT_URL", "RAG_QDRANT_API_KEY", "RAG_INDEX")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def rag_ingest() -> str:
    script = Path(sys.executable).with_name("rag-ingest")
    found = str(script) if script.exists() else shutil.which("rag-ingest")
    if found is None:
        raise SystemExit("rag-ingest is not installed in this environment (make install)")
    return found


def stored_texts(data_dir: Path) -> list[str]:
    """The chunk texts our index holds: what the embedder was given."""
    from rag.config import Settings
    from rag.store import open_store

    store = open_store(Settings(data_dir=data_dir, qdrant_url=None))
    try:
        return [str(payload.get("text", "")) for _, payload in store.scan(INDEX, ("text",))]
    finally:
        store.close()


def rates(seconds: float, pages: int, chunks: int) -> dict[str, float]:
    return {"pages_per_s": pages / seconds, "chunks_per_s": chunks / seconds} if seconds else {}


def ours(folder: Path, work: Path, tokenizer: Any) -> dict[str, Any]:
    from bench.ingest_llamaindex import count_truncated

    data = work / "ours-store"
    cmd = [rag_ingest(), str(folder), "--json", "--index", INDEX]
    env = child_env(RAG_DATA_DIR=str(data))
    first = measure(cmd, env, REPO, work / "ours-logs", ok=(0, 1))
    rerun = measure(cmd, env, REPO, work / "ours-rerun-logs", ok=(0, 1))
    report = first.report
    failed = report.get("failed", [])
    return {
        "seconds": report["seconds"],
        "wall_s": first.wall_s,
        "stages": report.get("stages", {}),
        "pages": report.get("pages", 0),
        "chunks": report["chunks_written"],
        **rates(report["seconds"], report.get("pages", 0), report["chunks_written"]),
        "chunks_truncated": count_truncated(stored_texts(data), tokenizer),
        "dropped": [f"{f.get('path')}: {f.get('reason')}" for f in failed],
        "peak_rss_mb": first.peak_rss_mb,
        "peak_single_mb": first.peak_single_mb,
        "exit_code": first.exit_code,
        "report": report,
        "rerun": {
            "seconds": rerun.report["seconds"],
            "wall_s": rerun.wall_s,
            "unchanged": rerun.report.get("unchanged"),
            "chunks_written": rerun.report.get("chunks_written"),
            "peak_rss_mb": rerun.peak_rss_mb,
        },
    }


def llamaindex(
    mode: str, folder: Path, work: Path, model: str, deps: Path | None
) -> dict[str, Any]:
    from rag.indexes import IndexSpec

    chunking = IndexSpec.load("default", REPO / "indexes").chunking
    cmd = [sys.executable, "-m", "bench.ingest_llamaindex", mode, "--folder", str(folder)]
    cmd += ["--work", str(work / f"llamaindex-{mode}"), "--model", model]
    cmd += ["--chunk-tokens", str(chunking.chunk_tokens)]
    cmd += ["--overlap-tokens", str(chunking.overlap_tokens)]
    path = os.pathsep.join(p for p in (str(deps or ""), os.environ.get("PYTHONPATH", "")) if p)
    measured = measure(cmd, child_env(PYTHONPATH=path), REPO, work / f"llamaindex-{mode}-logs")
    result = measured.report
    result.update(rates(result["seconds"], result["pages"], result["chunks"]))
    result["wall_s"] = measured.wall_s
    result["peak_rss_mb"] = measured.peak_rss_mb
    result["peak_single_mb"] = measured.peak_single_mb
    return result


def write_big_folder(folder: Path, mb: int, corpus: Path) -> Path:
    """One ``mb`` MB text file of abstracts (random words without the corpus), 3 small ones."""
    if corpus.is_file():
        with corpus.open(encoding="utf-8") as lines:
            texts = [json.loads(line)["text"] for _, line in zip(range(2000), lines, strict=False)]
    else:
        rng = random.Random(0)
        words = ["the", "of", "revenue", "quarter", "cell", "protein", "market", "risk"]
        texts = [" ".join(rng.choice(words) for _ in range(200)) + "." for _ in range(2000)]
    block = "\n\n".join(texts).encode()
    folder.mkdir(parents=True)
    big = folder / "big.txt"
    with big.open("wb") as out:
        left = mb * 1024 * 1024
        while left > 0:
            left -= out.write(block[:left])
    for i, name in enumerate(("notes.md", "readme.txt", "summary.txt")):
        (folder / name).write_text("\n\n".join(texts[i * 5 : i * 5 + 5]), encoding="utf-8")
    return big


def mentions(value: Any, name: str) -> list[Any]:
    """The entries of a report that name ``name`` (wherever the report lists that file)."""
    if isinstance(value, dict):
        if any(isinstance(v, str) and name in v for v in value.values()):
            return [value]
        return [m for v in value.values() for m in mentions(v, name)]
    if isinstance(value, list):
        return [m for v in value for m in mentions(v, name)]
    return [value] if isinstance(value, str) and name in value else []


def big_text(mb: int, work: Path, corpus: Path, max_file_mb: float | None) -> dict[str, Any]:
    big = write_big_folder(work / "big-folder", mb, corpus)
    extra = {"RAG_DATA_DIR": str(work / "big-store")}
    if max_file_mb is not None:
        extra["RAG_MAX_FILE_MB"] = str(max_file_mb)
    cmd = [rag_ingest(), str(big.parent), "--json", "--index", INDEX]
    measured = measure(cmd, child_env(**extra), REPO, work / "big-logs", ok=(0, 1))
    report = measured.report
    return {
        "big_file_mb": mb,
        "seconds": report["seconds"],
        "wall_s": measured.wall_s,
        "big_file": mentions(report, big.name) or "ingested (not among skipped or failed)",
        "chunks": report.get("chunks_written"),
        "exit_code": measured.exit_code,
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_single_mb": measured.peak_single_mb,
        "report": report,
    }


def write_scan(source: Path, pages: int, target: Path) -> Path:
    """An image-only PDF of the first ``pages`` pages of ``source`` at 200 dpi: what a scanner
    makes of a printed filing (no text layer, office quality)."""
    import io

    import pypdfium2
    from fpdf import FPDF

    document = pypdfium2.PdfDocument(str(source))
    scan = FPDF(unit="pt")
    try:
        for number in range(min(pages, len(document))):
            page = document[number]
            width, height = page.get_size()
            image = page.render(scale=200 / 72, grayscale=True).to_pil()
            page.close()
            picture = io.BytesIO()
            image.save(picture, format="PNG")
            scan.add_page(format=(width, height))
            scan.image(picture, x=0, y=0, w=width, h=height)
    finally:
        document.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    scan.output(str(target))
    return target


def ocr_run(folder: Path, pages: int, work: Path) -> dict[str, Any]:
    """``rag-ingest`` of a scanned filing: OCR pages a second (one worker, tesseract)."""
    source = sorted(folder.glob("*.pdf"))[0]
    scan = write_scan(source, pages, work / "scan-folder" / "scanned.pdf")
    cmd = [rag_ingest(), str(scan.parent), "--json", "--index", INDEX]
    env = child_env(RAG_DATA_DIR=str(work / "scan-store"))
    measured = measure(cmd, env, REPO, work / "scan-logs", ok=(0, 1))
    report = measured.report
    parse_s = report.get("stages", {}).get("parse", 0.0)
    return {
        "source": source.name,
        "pages": report.get("pages", 0),
        "parse_s": parse_s,
        "ocr_pages_per_s": report.get("pages", 0) / parse_s if parse_s else None,
        "seconds": report["seconds"],
        "chunks": report.get("chunks_written"),
        "exit_code": measured.exit_code,
        "skipped": report.get("skipped_files"),
        "peak_rss_mb": measured.peak_rss_mb,
    }


STAGE_ORDER = ("scan", "read", "parse", "chunk", "embed", "write")
COLUMNS = (
    ("ours", "ours"),
    ("llamaindex_default", "LI defaults"),
    ("llamaindex_windowed", "LI windowed"),
)


def goals(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for each goal of issue 8 that this run measured."""
    ours_ = result["ours"]
    checks = [
        ("0 files dropped", str(len(ours_["dropped"])), not ours_["dropped"]),
        ("0 chunks truncated", str(ours_["chunks_truncated"]), ours_["chunks_truncated"] == 0),
        (
            f"peak RSS <= {GOAL_RSS_MB:.0f} MB",
            f"{ours_['peak_rss_mb']:.0f} MB",
            ours_["peak_rss_mb"] <= GOAL_RSS_MB,
        ),
    ]
    for key, label, goal in (
        ("llamaindex_windowed", "LI windowed", GOAL_SPEEDUP_WINDOWED),
        ("llamaindex_default", "LI defaults", GOAL_SPEEDUP_DEFAULT),
    ):
        if key in result:
            speedup = result[key]["speedup_of_ours"]
            checks.append((f">= {goal:g}x faster than {label}", f"{speedup:.2f}x", speedup >= goal))
    if "big_text" in result:
        big = result["big_text"]["peak_rss_mb"]
        checks.append(
            (
                f"{result['big_text']['big_file_mb']} MB file: peak RSS <= {GOAL_RSS_MB:.0f} MB",
                f"{big:.0f} MB",
                big <= GOAL_RSS_MB,
            )
        )
    return checks


def _times(ratio: float | None) -> str | None:
    return None if ratio is None else f"{ratio:.2f}x"


def table(result: dict[str, Any]) -> str:
    runs = [(label, result[key]) for key, label in COLUMNS if key in result]
    stages = [s for s in STAGE_ORDER if any(s in r["stages"] for _, r in runs)]
    stages += sorted({s for _, r in runs for s in r["stages"]} - set(stages))

    def cell(value: Any) -> str:
        if value is None or value == "":
            return "-"
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    rows: list[tuple[str, list[Any], str]] = [
        (f"{stage} s", [r["stages"].get(stage) for _, r in runs], "") for stage in stages
    ]
    rows += [
        ("total s", [r["seconds"] for _, r in runs], ""),
        ("process wall s (with start-up)", [r["wall_s"] for _, r in runs], ""),
        ("pages", [r["pages"] for _, r in runs], ""),
        ("pages/s", [r.get("pages_per_s") for _, r in runs], ""),
        ("chunks", [r["chunks"] for _, r in runs], ""),
        ("chunks/s", [r.get("chunks_per_s") for _, r in runs], ""),
        ("chunks truncated (>256 pieces)", [r["chunks_truncated"] for _, r in runs], "0"),
        ("files dropped/failed", [len(r["dropped"]) for _, r in runs], "0"),
        ("peak RSS, process tree MB", [r["peak_rss_mb"] for _, r in runs], "<= 2500"),
        ("peak RSS, largest process MB", [r["peak_single_mb"] for _, r in runs], ""),
        (
            "ours is faster by",
            [_times(r.get("speedup_of_ours")) for _, r in runs],
            ">= 2x / >= 1.3x",
        ),
        ("ours is faster by, wall", [_times(r.get("wall_speedup_of_ours")) for _, r in runs], ""),
    ]
    header = f"{'':32}" + "".join(f"{label:>14}" for label, _ in runs) + "   goal"
    lines = [header, "-" * len(header)]
    lines += [
        f"{name:32}" + "".join(f"{cell(v):>14}" for v in values) + (f"   {goal}" if goal else "")
        for name, values, goal in rows
    ]
    lines.append(
        "(ours: read, parse and chunk are summed over the worker processes, which run beside"
        " embed and write;\n total: the run as timed inside the process, without start-up"
        " and model loading)"
    )
    rerun = result["ours"]["rerun"]
    lines.append(
        f"\nours, unchanged re-run: {rerun['seconds']:.2f} s ({rerun['wall_s']:.1f} s wall), "
        f"{rerun['unchanged']} unchanged, {rerun['chunks_written']} chunks written"
    )
    for failure in result["ours"]["dropped"]:
        lines.append(f"  ours failed: {failure}")
    if "big_text" in result:
        big = result["big_text"]
        lines.append(
            f"{big['big_file_mb']} MB text file + 3 small: {big['seconds']:.1f} s "
            f"({big['wall_s']:.1f} s wall), {big['chunks']} chunks, exit {big['exit_code']}, "
            f"peak RSS {big['peak_rss_mb']:.0f} MB (largest process {big['peak_single_mb']:.0f})"
        )
        lines.append(f"  big file: {json.dumps(big['big_file'])}")
    if "ocr" in result:
        ocr = result["ocr"]
        rate = ocr["ocr_pages_per_s"]
        lines.append(
            f"OCR of a {ocr['pages']}-page scan of {ocr['source']} (200 dpi, image only): "
            f"parse {ocr['parse_s']:.1f} s = {rate or 0:.2f} pages/s, {ocr['chunks']} chunks, "
            f"exit {ocr['exit_code']}, peak RSS {ocr['peak_rss_mb']:.0f} MB"
        )
    lines.append("\ngoals:")
    lines += [
        f"  [{'met' if met else 'NOT MET':>7}] {goal}: {got}" for goal, got, met in goals(result)
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--big-text-mb", type=int, default=200, help="0: no big-file run")
    parser.add_argument(
        "--big-text-max-file-mb",
        type=float,
        help="RAG_MAX_FILE_MB for the big-file run (default: the product's default)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=REPO.parent / "shared" / "data" / "scifact" / "corpus.jsonl",
        help="JSONL of abstracts the big text file repeats (random words when missing)",
    )
    parser.add_argument(
        "--baseline-deps",
        type=Path,
        default=REPO / ".bench-deps",
        help="folder of LlamaIndex's packages, put first on the baselines' PYTHONPATH",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--ocr-pages", type=int, default=20, help="pages of the scanned-filing run (0: none)"
    )
    args = parser.parse_args()
    # A TERM unwinds like Ctrl-C: the running command's process tree is killed, work removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.folder.is_dir():
        raise SystemExit(f"no such folder: {args.folder} (the SEC filings live in ../shared/data)")
    from transformers import AutoTokenizer

    from bench.ingest_llamaindex import WINDOW
    from rag.embed import resolve_model
    from rag.indexes import DEFAULT_EMBED_MODEL

    model = resolve_model(DEFAULT_EMBED_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(model)
    folder = args.folder.resolve()
    deps = args.baseline_deps if args.baseline_deps.is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        result: dict[str, Any] = {"folder": str(folder), "window": WINDOW}
        result["ours"] = ours(folder, work, tokenizer)
        if not args.skip_baseline:
            for mode in ("default", "windowed"):
                run = llamaindex(mode, folder, work, model, deps)
                run["speedup_of_ours"] = run["seconds"] / result["ours"]["seconds"]
                run["wall_speedup_of_ours"] = run["wall_s"] / result["ours"]["wall_s"]
                result[f"llamaindex_{mode}"] = run
        if args.big_text_mb > 0:
            result["big_text"] = big_text(
                args.big_text_mb, work, args.corpus, args.big_text_max_file_mb
            )
        if args.ocr_pages > 0:
            result["ocr"] = ocr_run(folder, args.ocr_pages, work)
        result["goals"] = [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals(result)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
