"""Nothing lost: dead letters for finally failed runs, replays with backoff, parking, and
consumer offsets committed over finished work only."""

from dagster import Definitions

from kb_platform.defs.reliability.dead_letter_sensor import dead_letter_on_failure
from kb_platform.defs.reliability.dlq_replay_sensor import dlq_replay
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets

defs = Definitions(sensors=[dead_letter_on_failure, commit_settled_offsets, dlq_replay])
