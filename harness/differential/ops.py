"""The operations the random runner draws beyond harness.ops: the faults that happen at a
moment (harness.faults), which register with harness.ops as operation kinds on import."""

from harness.faults import CHILD, LinkDown

__all__ = ["CHILD", "LinkDown"]
