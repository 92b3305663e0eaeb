"""Nothing lost: dead letters for finally failed runs, offsets committed over finished work."""

from dagster import Definitions

from kb_platform.defs.reliability.dead_letter_sensor import dead_letter_on_failure
from kb_platform.defs.reliability.offset_commit_sensor import commit_settled_offsets

defs = Definitions(sensors=[dead_letter_on_failure, commit_settled_offsets])
