"""Nothing lost: dead letters for finally failed runs, replays with backoff, parking,
consumer offsets committed over finished work only, and the audit trail of it all."""

from dagster import Definitions

from kb_platform.defs.reliability.audit_sensor import audit_run_outcomes
from kb_platform.defs.reliability.dead_letter_sensor import dead_letter_on_failure
from kb_platform.defs.reliability.dlq_replay_sensor import dlq_replay
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets
from kb_platform.defs.reliability.orphaned_runs_sensor import adopt_orphaned_runs

defs = Definitions(
    sensors=[
        dead_letter_on_failure,
        adopt_orphaned_runs,
        commit_settled_offsets,
        dlq_replay,
        audit_run_outcomes,
    ]
)
