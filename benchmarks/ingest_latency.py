"""Latency of the sensor path on an idle stack: lone documents and a steady stream.

    .venv/bin/python benchmarks/ingest_latency.py [--lone 10] [--per-minute 6 --minutes 3]
        [--encoder-service] [--corpus ../shared/corpus]

Starts a `dagster dev` of its own (benchmarks/daemon_stack.py) and waits for its warm run
workers, then
1. produces one 1-page PDF at a time (a different one each trial), waits until it is indexed
   and the stack is idle again, and prints message -> indexed p50/p95 over the trials;
2. produces 1-page PDFs at a steady rate and samples the consumer lag in seconds (the age of
   the oldest unsettled message, kb_platform.kafka.lag) every second, printing p50/p95/max.
Then where the runs' time went, phase by phase. Needs Kafka and Elasticsearch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pypdfium2
from daemon_stack import (  # benchmarks/, next to this script
    LagSampler,
    ProduceClock,
    daemon_stack,
    encoder_service_env,
    indexed_at,
    print_phases,
    run_phases,
    stop_encoder_service,
    worker_memory,
)
from machine_load import printed_machine_load  # benchmarks/, next to this script

from kb_platform.config import get_settings
from kb_platform.contracts import IngestMessage, Modality
from kb_platform.index.lifecycle import delete_family
from kb_platform.index.mapping import IndexNames
from kb_platform.resources.elasticsearch import ElasticsearchResource
from kb_platform.resources.kafka import KafkaResource


def one_page_pdfs(corpus: Path) -> list[Path]:
    """The corpus's 1-page PDFs with a text layer (no OCR needed), in a stable order."""
    found = []
    for path in sorted((corpus / "documents").rglob("*.pdf")):
        try:
            pdf = pypdfium2.PdfDocument(path)
        except pypdfium2.PdfiumError:
            continue
        if len(pdf) == 1 and len(pdf[0].get_textpage().get_text_range()) > 300:
            found.append(path)
        pdf.close()
    return found


def message(path: Path) -> bytes:
    return (
        IngestMessage(source_id=str(path), uri=path.resolve().as_uri(), modality=Modality.DOCUMENT)
        .model_dump_json()
        .encode()
    )


def wait_settled(instance, clock: ProduceClock, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = indexed_at(instance)
        if all(key in done for key in clock.produced_at):
            return done
        time.sleep(0.25)
    raise TimeoutError(f"not every message was indexed within {timeout_s:.0f} s")


def percentiles(values: list[float]) -> str:
    return (
        f"p50 {np.percentile(values, 50):.1f} s, p95 {np.percentile(values, 95):.1f} s, "
        f"max {max(values):.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=get_settings().corpus_dir)
    parser.add_argument("--lone", type=int, default=10, help="lone-document trials")
    parser.add_argument("--per-minute", type=float, default=6.0, help="stream rate")
    parser.add_argument("--minutes", type=float, default=3.0, help="stream duration")
    parser.add_argument("--encoder-service", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    name = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="kb-latency-bench-"))
    kafka = KafkaResource(bootstrap_servers=settings.kafka_bootstrap_servers).namespaced(
        f"latency-{name}"
    )
    kafka.create_topics(partitions=1)
    topic = kafka.topics().ingest(Modality.DOCUMENT)
    index_base = f"latency-{name}"
    pdfs = one_page_pdfs(args.corpus)
    encoder_env = encoder_service_env(work) if args.encoder_service else {}
    clock = ProduceClock(kafka)
    try:
        with daemon_stack(kafka, work, index_base, encoder_env) as instance:
            lone: list[float] = []
            for trial in range(args.lone):
                clock.produce(topic, message(pdfs[trial % len(pdfs)]))
                clock.flush()
                done = wait_settled(instance, clock, 120)
                key = max(clock.produced_at, key=lambda k: k[2])
                lone.append(done[key] - clock.produced_at[key])
                time.sleep(3)  # idle again before the next trial
            stream_start = len(clock.produced_at)
            gap_s = 60.0 / args.per_minute
            with LagSampler(kafka, instance) as sampler:
                next_at = time.monotonic()
                for i in range(int(args.minutes * args.per_minute)):
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    clock.produce(topic, message(pdfs[(args.lone + i) % len(pdfs)]))
                    clock.flush()
                    next_at += gap_s
                done = wait_settled(instance, clock, 300)
            streamed = sorted(clock.produced_at)[stream_start:]
            stream = [done[k] - clock.produced_at[k] for k in streamed]
            phases = run_phases(instance, clock.produced_at)
            memory = worker_memory()
    finally:
        if encoder_env:
            stop_encoder_service(work)
        es = ElasticsearchResource(url=settings.elasticsearch_url).make_client()
        delete_family(es, IndexNames(index_base))
        es.close()
    how = "text embeddings from the encoder service" if encoder_env else "MiniLM in the workers"
    print(f"warm run workers, {how}; {len(pdfs)} distinct 1-page PDFs")
    print(f"lone 1-page PDF, message -> indexed over {len(lone)} trials: {percentiles(lone)}")
    print(
        f"stream of {len(stream)} at {args.per_minute:g}/min: message -> indexed "
        f"{percentiles(stream)}"
    )
    print(
        f"consumer lag in seconds, {len(sampler.samples)} samples (1/s): "
        f"{percentiles(sampler.samples)}, mean {statistics.mean(sampler.samples):.1f} s"
    )
    print(f"run workers' resident memory at the end: {memory}")
    print_phases(phases)


if __name__ == "__main__":
    with printed_machine_load():
        main()
