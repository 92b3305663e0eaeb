"""Pruning the model store's snapshots: the newest `keep` ready ones stay, whatever failed or is
still being cut around them."""

import pytest

from kb_platform.backup.volume_snapshots import Snapshot, to_prune


def _snaps(readiness: str) -> list[Snapshot]:
    """Newest first: 'r' ready, 'n' not (yet) ready."""
    return [
        Snapshot(f"s{i}", f"2026-12-{30 - i:02d}T03:00:00Z", c == "r")
        for i, c in enumerate(readiness)
    ]


def _names(snapshots: list[Snapshot]) -> list[str]:
    return [s.name for s in snapshots]


def test_all_after_the_keep_th_ready_one_go() -> None:
    assert _names(to_prune(_snaps("rrrrr"), keep=3)) == ["s3", "s4"]


def test_snapshots_being_cut_or_failed_do_not_count_against_keep() -> None:
    # s0 is being cut, s2 failed: the three ready ones are s1, s3, s4; s5 goes
    assert _names(to_prune(_snaps("nrnrrr"), keep=3)) == ["s5"]


def test_nothing_goes_while_fewer_than_keep_are_ready() -> None:
    assert to_prune(_snaps("nnrn"), keep=2) == []


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_must_be_positive(keep: int) -> None:
    with pytest.raises(ValueError, match="keep"):
        to_prune(_snaps("rr"), keep=keep)
