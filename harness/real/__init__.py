"""QEMU's side, beside the model: a topology value made real (topology: `open_live`,
`LiveTopology`) and operations applied to it, answered as observations (side:
`RealSide`). The model's side is harness.model; harness.story compares the two."""

from harness.real.side import COMMIT_STALLED, RealSide
from harness.real.topology import LiveTopology, open_live

__all__ = ["COMMIT_STALLED", "LiveTopology", "RealSide", "open_live"]
