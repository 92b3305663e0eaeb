"""Processing throughput on the shared corpus: text-layer extraction, OCR, transcription.

    .venv/bin/python benchmarks/processing.py [--corpus ../shared/corpus] [--ocr-pages 12]

Prints one table: pages per second for PDF text-layer extraction (with page renders), pages per
second for OCR (orientation detection + recognition, one Tesseract thread per page, pages in
parallel on every core), and the real-time factor of audio transcription (espeak-ng speech).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine_load import printed_machine_load  # benchmarks/, next to this script
from PIL import Image

from kb_platform.audio.transcription import audio_duration_s, transcribe, whisper_model
from kb_platform.errors import KbError
from kb_platform.extraction import extract
from kb_platform.extraction.limits import Limits
from kb_platform.extraction.sniffing import sniff_mime
from kb_platform.ocr.tesseract import recognize

SPEECH = (
    "The knowledge base ingests documents from Kafka. Each document is split into pages, "
    "pages without a text layer are read by Tesseract, and the text is cut into chunks "
    "that are embedded and indexed in Elasticsearch for hybrid retrieval."
)


def bench_text_layer(corpus: Path) -> tuple[int, float, int]:
    pages = 0
    elapsed = 0.0
    files = 0
    for path in sorted((corpus / "documents").rglob("*.pdf")):
        content = path.read_bytes()
        started = time.perf_counter()
        try:
            result = extract(content, sniff_mime(content), limits=Limits())
        except KbError:
            continue
        elapsed += time.perf_counter() - started
        pages += sum(not p.needs_ocr for p in result)
        files += 1
    return pages, elapsed, files


def bench_ocr(corpus: Path, count: int) -> tuple[int, float]:
    folder = corpus / "ocr" / "tesseract"
    names = [
        "phototest.tif",
        "phototest-rotated-L.png",
        "phototest-rotated-180.png",
        "phototest-rotated-R.png",
    ]
    images = [Image.open(folder / names[i % len(names)]).copy() for i in range(count)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(recognize, images))
    return count, time.perf_counter() - started


def bench_audio(repeats: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), SPEECH], check=True)
        content = wav.read_bytes()
    whisper_model()  # load once, outside the timing
    duration = audio_duration_s(content) * repeats
    started = time.perf_counter()
    for _ in range(repeats):
        transcribe(content, doc_id="bench", max_duration_s=3600)
    return duration, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(__file__).resolve().parents[1].parent / "shared" / "corpus",
    )
    parser.add_argument("--ocr-pages", type=int, default=12)
    parser.add_argument("--audio-repeats", type=int, default=3)
    args = parser.parse_args()

    pages, seconds, files = bench_text_layer(args.corpus)
    ocr_pages, ocr_seconds = bench_ocr(args.corpus, args.ocr_pages)
    audio_s, transcribe_s = bench_audio(args.audio_repeats)
    rows = [
        (
            "PDF text-layer extraction, pages/s",
            f"{pages / seconds:.1f}",
            f"{pages} pages of {files} PDFs in {seconds:.1f}s (100 dpi renders included)",
        ),
        (
            "OCR (orientation + recognition), pages/s",
            f"{ocr_pages / ocr_seconds:.2f}",
            f"{ocr_pages} phototest pages, 4 orientations, in {ocr_seconds:.1f}s",
        ),
        (
            "audio transcription, real-time factor",
            f"{transcribe_s / audio_s:.3f}",
            f"{audio_s:.1f}s of speech in {transcribe_s:.1f}s (tiny.en, int8)",
        ),
    ]
    print(f"machine: {os.cpu_count()} cores")
    print(f"| {'measure':<42} | {'value':>8} | detail")
    print(f"|{'-' * 44}|{'-' * 10}|-------")
    for name, value, detail in rows:
        print(f"| {name:<42} | {value:>8} | {detail}")


if __name__ == "__main__":
    with printed_machine_load():
        main()
