"""The uplink protocol's rules (ingest.uplink) without a stream or a database."""

from __future__ import annotations

from voltcloud.ingest.uplink import CURSOR_FLUSH_S, UplinkCursor, Verdict, push_is_replay
from voltcloud.platform.errors import FailedPrecondition


def run(protocol: UplinkCursor, seqs: list[int]) -> list[Verdict]:
    """Admits seqs in arrival order the way the stream does: applied when NEXT, stopped at a gap."""
    verdicts = []
    for seq in seqs:
        verdict = protocol.admit(seq)
        verdicts.append(verdict)
        if verdict is Verdict.GAP:
            break
        if verdict is Verdict.NEXT:
            protocol.applied(seq)
    return verdicts


def test_resume_starts_from_the_higher_of_stored_cursor_and_gateway_ack() -> None:
    assert UplinkCursor.resume(stored=5, last_acked=3, now=0.0).cursor == 5
    resumed = UplinkCursor.resume(stored=5, last_acked=9, now=0.0)
    assert (resumed.cursor, resumed.persisted) == (9, 5)  # the unpersisted ack still counts


def test_contiguous_seqs_are_applied_and_replays_are_dropped_and_counted() -> None:
    protocol = UplinkCursor.resume(stored=2, last_acked=0, now=0.0)
    assert run(protocol, [1, 2, 3, 4, 3]) == [
        Verdict.DUPLICATE, Verdict.DUPLICATE, Verdict.NEXT, Verdict.NEXT, Verdict.DUPLICATE,
    ]  # fmt: skip
    assert (protocol.cursor, protocol.duplicates) == (4, 3)


def test_a_gap_stops_the_group_and_names_where_to_replay_from() -> None:
    protocol = UplinkCursor()
    assert run(protocol, [1, 3, 4]) == [Verdict.NEXT, Verdict.GAP]
    assert protocol.cursor == 1
    error = protocol.gap(3)
    assert isinstance(error, FailedPrecondition)
    assert "expected 2, got 3" in str(error) and "acked seq 1" in str(error)


def test_a_group_is_acked_when_it_moved_the_cursor_or_after_replays() -> None:
    protocol = UplinkCursor()
    assert not protocol.ack_due(0)
    run(protocol, [1, 2])
    assert protocol.ack_due(0) and not protocol.ack_due(2)
    run(protocol, [2])
    assert protocol.ack_due(2)  # a replaying gateway learns where the platform is


def test_progress_is_flushed_lazily_unless_forced() -> None:
    protocol = UplinkCursor.resume(stored=0, last_acked=0, now=100.0)
    assert not protocol.flush_due(100.0 + 10 * CURSOR_FLUSH_S, force=True)  # nothing new
    run(protocol, [1])
    assert not protocol.flush_due(100.0 + CURSOR_FLUSH_S / 2)
    assert protocol.flush_due(100.0 + CURSOR_FLUSH_S / 2, force=True)
    assert protocol.flush_due(100.0 + CURSOR_FLUSH_S)
    protocol.persisted_up_to(1, 200.0)
    assert not protocol.flush_due(300.0, force=True) and protocol.flushed_at == 200.0
    protocol.persisted_up_to(1)
    assert protocol.flushed_at == 200.0  # a progress write without a time leaves the flush clock alone


def test_a_unary_push_is_a_replay_only_when_sequenced_at_or_below_the_cursor() -> None:
    assert push_is_replay(3, 3) and push_is_replay(1, 3)
    assert not push_is_replay(4, 3)
    assert not push_is_replay(0, 3)  # unsequenced
