"""Operations only the differential runner uses (registered with harness.ops, so traces
carrying them decode with harness.ops.from_json once this module is imported)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from harness.ops import Op

# The qemu-storage-daemon serving the primary's child in the primary topology.
CHILD = "child"


@dataclass(frozen=True, slots=True)
class LinkDown(Op):
    """The primary's NBD link to the secondary goes down: the export it connects to is
    removed with `block-export-del mode=hard` (the server drops the connection)."""

    machine: str = CHILD
    export: str = "export"
    mode: str = "hard"
    kind: ClassVar[str] = "link_down"

    def describe(self) -> str:
        return (
            f"{self.machine}: block-export-del id={self.export} mode={self.mode}"
            " (the primary's NBD link goes down)"
        )
