"""``clip_rollout``: after a checkpoint is promoted, every document's image embeddings are made
again with it (one run per document), and once all of them succeeded the index rolls to a new
version built from the stored embeddings, behind the same aliases. The index never mixes vectors
of two checkpoints behind the read alias."""

import json

from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from kb_platform.resources.clip import ClipResource

VERSION_TAG = "kb/clip-version"

reembed_images = define_asset_job(
    "reembed_images",
    selection=AssetSelection.assets("image_embeddings"),
    description="One document's CLIP vectors made again with the promoted checkpoint.",
)
roll_index_version = define_asset_job(
    "roll_index_version",
    selection=AssetSelection.assets("search_index_version"),
    description="A new index version from every stored embedding; the aliases move to it.",
)


def _succeeded_partitions(context: SensorEvaluationContext, version: str) -> tuple[set, int, int]:
    records = context.instance.get_run_records(
        RunsFilter(job_name=reembed_images.name, tags={VERSION_TAG: version})
    )
    done = {
        r.dagster_run.tags.get("dagster/partition")
        for r in records
        if r.dagster_run.status is DagsterRunStatus.SUCCESS
    }
    failed = {
        r.dagster_run.tags.get("dagster/partition")
        for r in records
        if r.dagster_run.status is DagsterRunStatus.FAILURE
    } - done
    running = sum(not r.dagster_run.is_finished for r in records)
    return done, len(failed), running


@sensor(
    jobs=[reembed_images, roll_index_version],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Re-embeds every document with a newly promoted CLIP checkpoint, then rolls the "
    "index to a new version.",
)
def clip_rollout(context: SensorEvaluationContext, clip: ClipResource) -> SensorResult | SkipReason:
    current = clip.promoted()
    if current is None:
        return SkipReason("no CLIP checkpoint promoted")
    state = json.loads(context.cursor) if context.cursor else {}
    if state.get("version") != current.version:
        partitions = context.instance.get_dynamic_partitions("documents")
        requests = [
            RunRequest(
                run_key=f"clip:{current.version}:{doc_id}",
                job_name=reembed_images.name,
                partition_key=doc_id,
                tags={VERSION_TAG: current.version},
            )
            for doc_id in partitions
        ]
        cursor = {"version": current.version, "documents": len(partitions), "rolled": False}
        return SensorResult(run_requests=requests, cursor=json.dumps(cursor))
    if state.get("rolled"):
        return SkipReason(f"{current.version} is rolled out")
    done, failed, running = _succeeded_partitions(context, current.version)
    if running or len(done) + failed < state["documents"]:
        return SkipReason(f"re-embedding: {len(done)} of {state['documents']} documents done")
    if failed:
        return SkipReason(
            f"{failed} documents failed to re-embed with {current.version}; re-run them "
            "(reembed_images) before the index can roll"
        )
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"clip-rollout:{current.version}",
                job_name=roll_index_version.name,
                tags={VERSION_TAG: current.version},
            )
        ],
        cursor=json.dumps({**state, "rolled": True}),
    )
