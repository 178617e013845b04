"""The uplink protocol of one gateway stream, without I/O: sequence numbers, acks, de-duplication, the cursor.

A gateway numbers its messages 1, 2, 3, ... and deletes what the platform acked. On (re)connection the
platform resumes from the higher of its stored cursor and the gateway's last ack, so the gateway replays what
follows. In arrival order, a message with seq <= cursor is a duplicate (dropped, still acked); seq == cursor + 1
is the next one (applied); anything higher is a gap, which ends the stream so the gateway replays from the
ack. `persisted` is how far the progress is in the database; telemetry-only progress is written lazily
(`flush_due`). The servicer (`service.UplinkStream`) does the I/O and asks this module what to do.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from voltcloud.platform.errors import FailedPrecondition

CURSOR_FLUSH_S = 1.0  # telemetry-only progress is persisted at most this late


class Verdict(enum.Enum):
    NEXT = "next"
    DUPLICATE = "duplicate"
    GAP = "gap"


@dataclass
class UplinkCursor:
    cursor: int = 0  # highest contiguous seq applied (and acked once the group is done)
    persisted: int = 0  # highest seq whose progress is in the database
    flushed_at: float = 0.0  # monotonic time of the last write of the progress
    duplicates: int = 0

    @classmethod
    def resume(cls, stored: int, last_acked: int, now: float) -> UplinkCursor:
        """A gateway deletes what was acked; an ack given but not yet persisted (telemetry-only progress) is
        still authoritative, so the stream starts from the higher of the two."""
        return cls(cursor=max(stored, last_acked), persisted=stored, flushed_at=now)

    def admit(self, seq: int) -> Verdict:
        """What to do with the next message of the stream, in arrival order (duplicates are counted)."""
        if seq <= self.cursor:
            self.duplicates += 1
            return Verdict.DUPLICATE
        return Verdict.NEXT if seq == self.cursor + 1 else Verdict.GAP

    def applied(self, seq: int) -> None:
        """The message `seq` (admitted as NEXT) was handled: applied, queued for the group's commit or rejected."""
        self.cursor = seq

    def gap(self, seq: int) -> FailedPrecondition:
        return FailedPrecondition(f"seq: expected {self.cursor + 1}, got {seq}; replay from acked seq {self.cursor}")

    def ack_due(self, cursor_before_group: int) -> bool:
        """A group is acked when it moved the cursor, and, once the gateway has replayed, after every group
        (so a gateway that only replays still learns where the platform is)."""
        return self.cursor != cursor_before_group or self.duplicates > 0

    def flush_due(self, now: float, *, force: bool = False) -> bool:
        """Whether the in-memory progress should be written now (`force`: at the stream's end)."""
        if self.cursor <= self.persisted:
            return False
        return force or now - self.flushed_at >= CURSOR_FLUSH_S

    def persisted_up_to(self, seq: int, now: float | None = None) -> None:
        """The progress up to `seq` is in the database; `now` restarts the lazy-flush clock."""
        self.persisted = seq
        if now is not None:
            self.flushed_at = now


def push_is_replay(seq: int, stored: int) -> bool:
    """A unary push carrying a seq at or below the stored cursor was applied before; seq 0 is unsequenced."""
    return seq != 0 and seq <= stored
