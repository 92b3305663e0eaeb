"""``adopt_orphaned_runs``: failed document runs that nothing settled are settled by the code
location that reads the ingest topics (the ingest lease holder), whichever location ran them.

A run whose retries remain is requested again (the attempt Dagster's retry daemon could not
make); an outage's run is requested again as the failure sensor would; anything else is
dead-lettered. Only the lease holder sweeps, so during a blue/green
switch one location acts, and the other takes over once the lease passes to it.
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from kb_platform.defs.reliability.failed_runs import (
    dead_letter,
    request_adopted,
    request_after_outage,
    retries_remain,
)
from kb_platform.kafka import ingest_lease
from kb_platform.kafka.orphaned_runs import orphaned_runs
from kb_platform.resources.kafka import KafkaResource
from kb_platform.resources.processing import ProcessingResource
from kb_platform.runs import JOB, failed_for_an_outage


@sensor(
    job_name=JOB,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Settles failed document runs nobody settled (a removed location's, an unmade "
    "retry's): requests them again or dead-letters them.",
)
def adopt_orphaned_runs(
    context: SensorEvaluationContext, kafka: KafkaResource, processing: ProcessingResource
) -> SensorResult | SkipReason:
    holder = ingest_lease.holder_of(context)
    if not ingest_lease.holds(context.instance, holder):
        return SkipReason(f"{holder} does not hold the ingest lease: the holder sweeps")
    consumer = kafka.consumer(kafka.consumer_group)
    try:
        runs = orphaned_runs(
            context.instance, consumer, kafka.topics().all_ingest(), processing.orphaned_run_grace_s
        )
    finally:
        consumer.close()
    if not runs:
        return SkipReason("no failed run waits unsettled")
    requests: list[RunRequest] = []
    for run in runs:
        if failed_for_an_outage(context.instance, run.run_id):
            requests.append(request_after_outage(run, context.log))
        elif retries_remain(context.instance, run):
            requests.append(request_adopted(run, context.log))
        else:
            dead_letter(context.instance, kafka, run, context.log)
    return SensorResult(run_requests=requests)
