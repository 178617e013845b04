"""Parser of tests/data/gbt32960/frames.txt: entries with their check, header summary and block summaries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

FRAMES = Path(__file__).resolve().parents[1] / "data" / "gbt32960" / "frames.txt"


@dataclass
class Vector:
    number: int
    check: str
    raw: bytes
    header: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.check.startswith("INVALID")

    @property
    def invalid_reason(self) -> str:
        return self.check.removeprefix("INVALID:").strip()


def load_vectors(path: Path = FRAMES) -> list[Vector]:
    vectors: list[Vector] = []
    current: dict[str, object] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^\[(\d+)\]", line):
            current = {"number": int(m.group(1)), "details": []}
        elif line.startswith("    check: "):
            current["check"] = line.removeprefix("    check: ")
        elif line.startswith("    header: "):
            current["header"] = line.removeprefix("    header: ")
        elif line.startswith("      "):
            details = current["details"]
            assert isinstance(details, list)
            details.append(line.strip())
        elif line.startswith("    hex: "):
            current["raw"] = bytes.fromhex(line.removeprefix("    hex: "))
            vectors.append(Vector(**current))  # type: ignore[arg-type]
    return vectors
