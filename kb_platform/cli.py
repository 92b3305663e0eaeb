"""``kb-platform``: the operator's command line."""

from __future__ import annotations

import collections
import logging
import mimetypes
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kb_platform.config import REPO_ROOT, get_settings
from kb_platform.contracts import IngestMessage, Modality
from kb_platform.training.commands import train

if TYPE_CHECKING:  # dagster loads only in the commands that need it
    from kb_platform.resources.kafka import KafkaResource
    from kb_platform.runs import RunOutcome

IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
SERVICES: tuple[str, ...] = ("postgres", "kafka", "elasticsearch", "dagster")
# Started when named: runs use the encoder service only where KB_ENCODER_URL is set;
# monitoring is Prometheus, Alertmanager and the exporters (deploy/prometheus).
OPTIONAL_SERVICES: tuple[str, ...] = ("encoder", "rag", "redis", "monitoring")
LOCAL_DEPLOY = REPO_ROOT / "deploy" / "local"


def _run_service_script(service: str, action: str) -> int:
    script = LOCAL_DEPLOY / service / f"{service}.sh"
    if not script.is_file():
        raise click.ClickException(
            f"{script} not found: `services` manages the local stack of a source checkout"
        )
    return subprocess.call(["bash", str(script), action])


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(verbose: bool) -> None:
    """Operate the kb-platform knowledge base."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Libraries that log every request or migration check at INFO.
    for noisy in ("alembic", "elastic_transport", "httpx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.command()
@click.argument("action", type=click.Choice(["up", "down", "status", "install"]))
@click.argument("names", nargs=-1, type=click.Choice(SERVICES + OPTIONAL_SERVICES))
def services(action: str, names: tuple[str, ...]) -> None:
    """Start, stop or inspect the local PostgreSQL, Kafka, Elasticsearch and Dagster UI (and,
    when named, the encoder and RAG services and the monitoring stack)."""
    selected = names or SERVICES
    # Stop in reverse order of start so dependents go first.
    ordered = reversed(selected) if action == "down" else selected
    failures = [name for name in ordered if _run_service_script(name, action) != 0]
    if failures:
        verb = "not running" if action == "status" else f"failed to {action}"
        click.echo(f"{verb}: {', '.join(failures)}", err=True)
        sys.exit(3 if action == "status" else 1)


def _declared_modality(path: Path) -> Modality:
    """A first guess from the name; raw_documents decides from the content itself."""
    mime = mimetypes.guess_type(path.name)[0] or ""
    for prefix, modality in (("image/", Modality.IMAGE), ("audio/", Modality.AUDIO)):
        if mime.startswith(prefix):
            return modality
    return Modality.TEXT if mime == "text/plain" else Modality.DOCUMENT


def _echo_outcomes(outcomes: list[RunOutcome]) -> None:
    """One line: how many runs ended in success, in each typed error, or unfinished."""
    summary = collections.Counter(o.error_class or o.status for o in outcomes)
    click.echo(f"outcomes: {dict(sorted(summary.items()))}")


def _files(paths: tuple[Path, ...]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        found += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return found


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--dagster-host", default="127.0.0.1", show_default=True)
@click.option("--dagster-port", default=3000, show_default=True)
@click.option("--wait/--no-wait", default=False, help="wait for the runs and print outcomes")
@click.option("--timeout", default=3600.0, show_default=True, help="seconds to wait for runs")
@click.option(
    "--in-process",
    is_flag=True,
    help="run the documents one after another in this process (models load once) instead of "
    "one run process each through the Dagster daemon; the runs are recorded all the same",
)
def ingest(
    paths: tuple[Path, ...],
    dagster_host: str,
    dagster_port: int,
    wait: bool,
    timeout: float,
    in_process: bool,
) -> None:
    """Admit files (or folders) and run the processing job once per document, without Kafka."""
    from dagster import DagsterInstance
    from dagster_graphql import DagsterGraphQLClient

    from kb_platform.errors import KbError
    from kb_platform.intake import admit
    from kb_platform.resources import build_resources
    from kb_platform.runs import launch, register_partitions, run_in_process, wait_for

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    settings = get_settings()
    store = build_resources(settings)["blob_store"]
    log = logging.getLogger("kb_platform.ingest")
    admitted: dict[str, Path] = {}
    rejected: collections.Counter[str] = collections.Counter()
    for path in _files(paths):
        message = IngestMessage(
            source_id=str(path), uri=path.resolve().as_uri(), modality=_declared_modality(path)
        )
        try:
            doc_id = admit(
                message, store, allowed_roots=settings.allowed_roots, max_bytes=settings.max_bytes
            )
        except KbError as exc:
            log.warning("not admitted: %s: %s", exc.error_class, exc)
            rejected[exc.error_class] += 1
            continue
        admitted.setdefault(doc_id, path)
    click.echo(
        f"admitted {len(admitted)} documents, rejected {sum(rejected.values())} {dict(rejected)}"
    )
    if not admitted:
        sys.exit(1 if rejected else 0)
    with DagsterInstance.get() as instance:
        register_partitions(instance, list(admitted))
        if in_process:
            outcomes = run_in_process(instance, list(admitted))
            _echo_outcomes(outcomes)
            return
        client = DagsterGraphQLClient(dagster_host, port_number=dagster_port)
        runs = {
            doc_id: launch(client, doc_id, {"kb/source": path.name[:60]})
            for doc_id, path in admitted.items()
        }
        click.echo(
            f"launched {len(runs)} runs of process_documents on http://{dagster_host}:{dagster_port}"
        )
        if not wait:
            return
        outcomes = wait_for(instance, runs, timeout)
    _echo_outcomes(outcomes)
    if any(o.status == "UNFINISHED" for o in outcomes):
        sys.exit(1)


@main.command()
@click.argument("query")
@click.option("--mode", type=click.Choice(["bm25", "knn", "hybrid"]), default="hybrid")
@click.option("-k", "--top", default=5, show_default=True, help="number of chunks")
@click.option("--modality", multiple=True, help="only chunks of this modality (repeatable)")
def search(query: str, mode: str, top: int, modality: tuple[str, ...]) -> None:
    """Search the knowledge base (the read alias) and print the best chunks with provenance."""
    from elasticsearch import NotFoundError

    from kb_platform.index.retriever import Filters, Retriever
    from kb_platform.models.registry import text_encoder
    from kb_platform.resources import build_resources

    settings = get_settings()
    resource = build_resources(settings)["elasticsearch"]
    es = resource.make_client()
    encoder = text_encoder()
    retriever = Retriever.from_settings(
        es, lambda q: encoder.encode([q])[0], resource.names.read_alias
    )
    try:
        hits = retriever.search(query, mode=mode, k=top, filters=Filters(modality=modality))
    except NotFoundError as exc:
        raise click.ClickException(
            f"no index behind {resource.names.read_alias}: ingest documents first"
        ) from exc
    for rank, hit in enumerate(hits, start=1):
        where = f"page {hit.source['page']}" if hit.source.get("page") else ""
        snippet = " ".join(str(hit.source.get("text", "")).split())[:160]
        click.echo(f"{rank}. [{hit.score:.4f}] {hit.source.get('title')} {where} ({hit.doc_id})")
        click.echo(f"   {snippet}")
    es.close()


@main.command()
@click.argument("question")
@click.option("-k", "--top", default=4, show_default=True, help="sources for the answer")
def ask(question: str, top: int) -> None:
    """Ask the RAG service (KB_RAG_URL): its /search hits for the question, then its /ask
    answer with the sources it cites."""
    from kb_platform.serving.client import RagClient, RagServiceError

    settings = get_settings()
    try:
        client = RagClient(settings.rag_url, settings.rag_api_key_file)
        found = client.search(question, k=top)
        answered = client.ask(question, k=top)
    except RagServiceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"/search ({found['mode']}, {found['took_ms']:.0f} ms):")
    for rank, hit in enumerate(found["hits"], start=1):
        title = hit["provenance"].get("title") or hit["doc_id"]
        where = f" page {hit['page']}" if hit.get("page") else ""
        snippet = " ".join(str(hit.get("text") or "").split())[:140]
        click.echo(f"  {rank}. [{hit['score']:.4f}] {title}{where}: {snippet}")
    click.echo(f"/ask ({answered['generator']}, {answered['took_ms']:.0f} ms):")
    click.echo(f"  {answered['answer']}")
    for citation in answered["citations"]:
        where = f" page {citation['page']}" if citation.get("page") else ""
        click.echo(f"  [{citation['number']}] {citation.get('title') or citation['doc_id']}{where}")


@main.command()
@click.option("--failed", "only_failed", is_flag=True, required=True, help="only failed documents")
@click.option("--dagster-host", default="127.0.0.1", show_default=True)
@click.option("--dagster-port", default=3000, show_default=True)
@click.option("--in-process", is_flag=True, help="run them here, one after another")
def reprocess(only_failed: bool, dagster_host: str, dagster_port: int, in_process: bool) -> None:
    """Run the processing job again for exactly the documents whose last run failed."""
    from dagster import DagsterInstance
    from dagster_graphql import DagsterGraphQLClient

    from kb_platform.runs import failed_partitions, launch, run_in_process

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    with DagsterInstance.get() as instance:
        doc_ids = failed_partitions(instance)
        click.echo(f"{len(doc_ids)} failed documents")
        if not doc_ids:
            return
        if in_process:
            outcomes = run_in_process(instance, doc_ids)
            _echo_outcomes(outcomes)
            return
    client = DagsterGraphQLClient(dagster_host, port_number=dagster_port)
    for doc_id in doc_ids:
        launch(client, doc_id, {"kb/reprocess": "failed"})
    click.echo(f"launched {len(doc_ids)} runs")


@main.command()
@click.option(
    "--doc",
    "doc_id",
    help="print this document's audit trail (a doc_id, or a source "
    "topic:partition:offset for a message that never got one) instead",
)
def audit(doc_id: str | None) -> None:
    """Account for every offset of every ingest partition; exits 1 if any is unaccounted."""
    from dagster import DagsterInstance

    from kb_platform.kafka.audit import audit as audit_partitions
    from kb_platform.kafka.audit import format_report
    from kb_platform.resources import build_resources

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    kafka = build_resources(get_settings())["kafka"]
    if doc_id:
        _echo_trail(kafka, doc_id)
        return
    consumer = kafka.consumer(kafka.consumer_group)
    try:
        with DagsterInstance.get() as instance:
            report = audit_partitions(consumer, instance, kafka.topics().all_ingest())
    finally:
        consumer.close()
    click.echo(format_report(report))
    unaccounted = sum(row.unaccounted for row in report)
    click.echo(f"unaccounted: {unaccounted}")
    if unaccounted:
        sys.exit(1)


def _echo_trail(kafka: KafkaResource, doc_id: str) -> None:
    from kb_platform.kafka.audit_trail import format_trail, trail
    from kb_platform.kafka.ingest_reader import READER_CONFIG

    consumer = kafka.consumer(f"{kafka.consumer_group}-audit", **READER_CONFIG)
    try:
        records = trail(consumer, kafka.topics().audit, doc_id)
    finally:
        consumer.close()
    if not records:
        raise click.ClickException(f"no audit records for {doc_id} on {kafka.topics().audit}")
    click.echo(format_trail(records))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--follow",
    is_flag=True,
    help="then show the sensors' progress until every message is settled",
)
@click.option("--interval", default=10.0, show_default=True, help="--follow: seconds a line")
@click.option("--timeout", default=3 * 3600.0, show_default=True, help="--follow: give up after")
def produce(paths: tuple[Path, ...], follow: bool, interval: float, timeout: float) -> None:
    """Produce an ingest message (file:// reference) for each file to kb.ingest.<modality>."""
    import getpass
    import socket
    import uuid

    from kb_platform.kafka.audit_trail import REQUEST_HEADER, SENDER_HEADER
    from kb_platform.resources import build_resources

    kafka = build_resources(get_settings())["kafka"]
    producer = kafka.producer()
    produced: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    failed: list[str] = []

    def delivered(error: object, msg: object) -> None:
        if error is not None:
            failed.append(str(error))
        else:
            produced[(msg.topic(), msg.partition())].append(msg.offset())  # type: ignore[attr-defined]

    # Who sent it, for the audit trail; a request id per message, for its runs' logs and calls.
    sender = [(SENDER_HEADER, f"kb-platform produce ({getpass.getuser()}@{socket.gethostname()})")]
    for path in _files(paths):
        modality = _declared_modality(path)
        message = IngestMessage(source_id=str(path), uri=path.resolve().as_uri(), modality=modality)
        producer.produce(
            kafka.topics().ingest(modality),
            key=str(path).encode(),
            value=message.model_dump_json().encode(),
            headers=[*sender, (REQUEST_HEADER, uuid.uuid4().hex)],
            on_delivery=delivered,
        )
        producer.poll(0)
    if producer.flush(60) or failed:
        raise click.ClickException(
            f"the broker did not confirm every message ({len(failed)} failed: {failed[:3]})"
        )
    counts: collections.Counter[str] = collections.Counter()
    for (topic, _), offsets in produced.items():
        counts[topic] += len(offsets)
    click.echo(f"produced {dict(counts)}")
    if follow:
        _follow(kafka, dict(produced), interval, timeout)


def _follow(kafka: KafkaResource, produced: dict, interval: float, timeout: float) -> None:
    import time

    from dagster import DagsterInstance

    from kb_platform.kafka.lag import lag_seconds
    from kb_platform.kafka.progress import eta_s, progress_line, snapshot

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    consumer = kafka.consumer(kafka.consumer_group)
    started = time.monotonic()
    try:
        with DagsterInstance.get() as instance:
            first = now = snapshot(instance, produced)
            while True:
                elapsed = time.monotonic() - started
                rate = (now.settled - first.settled) / elapsed if elapsed > 0 else 0.0
                eta = eta_s(rate, now.total - now.settled)
                lag = lag_seconds(consumer, instance, kafka.topics().all_ingest())
                click.echo(progress_line(now, elapsed, lag, eta, rate))
                if now.done:
                    return
                if elapsed > timeout:
                    raise click.ClickException(
                        f"{now.total - now.settled} messages still unsettled after {timeout:.0f} s"
                        " (is the Dagster daemon up? `kb-platform services status`)"
                    )
                time.sleep(interval)
                now = snapshot(instance, produced)
    finally:
        consumer.close()


@main.command()
@click.option("--partitions", default=None, type=int, help="partitions of each new topic")
def topics(partitions: int | None) -> None:
    """Create the ingest and dead-letter topics that do not exist yet."""
    from kb_platform.resources import build_resources

    names, created = build_resources(get_settings())["kafka"].create_topics(partitions)
    click.echo(f"topics: {len(names)} ({len(created)} created)")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9108, show_default=True)
def exporter(host: str, port: int) -> None:
    """Serve the pipeline and Kafka metrics on /metrics for Prometheus until stopped."""
    import signal
    import threading

    from dagster import DagsterInstance

    from kb_platform.observability.exporter import build_exporter, serve
    from kb_platform.resources import build_resources

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with DagsterInstance.get() as instance:
        resources = build_resources(get_settings())
        exporter = build_exporter(instance, resources["kafka"], resources["processing"])
        serve(exporter, host, port, stop)


@main.command()
@click.option("--list", "list_only", is_flag=True, help="list the backups instead")
@click.option("--keep-last", type=int, default=None, help="default: KB_BACKUP_KEEP_LAST")
@click.option("--keep-days", type=float, default=None, help="default: KB_BACKUP_KEEP_DAYS")
def backup(list_only: bool, keep_last: int | None, keep_days: float | None) -> None:
    """Back up the chunk indices (an Elasticsearch snapshot), the Dagster instance database,
    the object store and the ingest group's committed offsets into a new folder under
    KB_BACKUP_DIR, then delete backups past the retention policy."""
    from kb_platform.backup import catalog, take
    from kb_platform.backup.stack import from_settings

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    settings = get_settings()
    root = settings.backup_root
    if list_only:
        for entry in catalog.entries(root):
            record = entry.manifest
            size = f"{record.bytes / 1e6:.1f} MB" if record else "-"
            status = record.status if record else "no manifest"
            click.echo(f"{entry.id}  {status:<11} {size:>10}  {entry.folder}")
        return
    stack = from_settings(settings)
    try:
        record, deleted = take.backup(
            stack,
            root,
            keep_last if keep_last is not None else settings.backup_keep_last,
            keep_days if keep_days is not None else settings.backup_keep_days,
        )
    except _backup_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        stack.close()
    for line in take.summary(record, deleted):
        click.echo(line)


@main.command()
@click.argument("backup_id", default="latest")
@click.option("--force", is_flag=True, help="replace a target that holds state already")
def restore(backup_id: str, force: bool) -> None:
    """Restore a backup (an id from `backup --list`, or latest) into this stack, with its
    Dagster daemon stopped: Elasticsearch, the instance database, the object store, then the
    committed offsets. Refuses a target that holds state unless --force."""
    from kb_platform.backup import restore as restoring
    from kb_platform.backup.stack import from_settings

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / ".dagster_home"))
    settings = get_settings()
    stack = from_settings(settings)
    try:
        restored_id, done = restoring.restore(stack, settings.backup_root, backup_id, force)
    except _backup_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        stack.close()
    for line in restoring.summary(restored_id, done):
        click.echo(line)


def _backup_errors() -> tuple[type[Exception], ...]:
    from confluent_kafka import KafkaException
    from elasticsearch import ApiError

    from kb_platform.backup.catalog import BackupNotFound
    from kb_platform.backup.es_snapshots import SnapshotFailed
    from kb_platform.backup.kafka_offsets import GroupActive
    from kb_platform.backup.manifest import BackupCorrupt
    from kb_platform.backup.restore import TargetNotEmpty

    return (
        BackupCorrupt,
        BackupNotFound,
        GroupActive,
        SnapshotFailed,
        TargetNotEmpty,
        ApiError,
        KafkaException,
        RuntimeError,
        ValueError,
    )


@main.group("model-store")
def model_store() -> None:
    """The model store's volume on Kubernetes."""


@model_store.command("snapshot")
@click.option("--claim", required=True, help="the PersistentVolumeClaim to snapshot")
@click.option("--class", "snapshot_class", required=True, help="the VolumeSnapshotClass")
@click.option("--keep", default=7, show_default=True, help="ready snapshots kept after pruning")
@click.option("--namespace", default=None, help="default: the pod's own namespace")
@click.option("--kubeconfig", default=None, help="default: the pod's service account")
def model_store_snapshot(
    claim: str, snapshot_class: str, keep: int, namespace: str | None, kubeconfig: str | None
) -> None:
    """Take a VolumeSnapshot of the claim, then delete all but the newest --keep ready ones."""
    from datetime import UTC, datetime

    from kubernetes import client, config

    from kb_platform.backup import volume_snapshots

    if keep < 1:
        raise click.BadParameter("must be at least 1", param_hint="--keep")
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    namespace = namespace or Path(IN_CLUSTER_NAMESPACE).read_text().strip()
    api = client.CustomObjectsApi()
    name = volume_snapshots.take(api, namespace, claim, snapshot_class, datetime.now(UTC))
    deleted = volume_snapshots.prune(api, namespace, claim, keep)
    click.echo(f"snapshot {name} requested; {len(deleted)} old snapshot(s) deleted")


main.add_command(train)


if __name__ == "__main__":
    main()
