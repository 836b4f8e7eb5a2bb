"""A quorum node (block/quorum.c) as COLO uses one: vote-threshold 1, read-pattern fifo.

The primary's guest disk is a quorum over its local disk (children.0) and, hot-added
with `x-blockdev-change`, the primary replication node over NBD (children.1). The
secondary may put a quorum over its replication node too (COLO-FT; top-id names it).

- write (quorum_co_pwritev): every child is written; the request succeeds when at least
  vote-threshold children succeed, else it fails with the children's error. A primary
  replication child swallows its NBD errors (replication_return_value) but refuses
  writes with EIO outside RUNNING; with threshold 1 the local disk's success carries the
  vote either way (QEMU emits QUORUM_REPORT_BAD for the failing child).
- read (read_fifo_child): children in order until one succeeds; the last error if none
  does. The primary replication child always refuses reads, so the local disk answers.
- x-blockdev-change (quorum_add_child / quorum_del_child): a new child is named
  `children.<next index>`; a delete is refused when it would leave fewer children than
  the threshold; deleting the newest index gives that index back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.model.disks import Disk, view, write_layer
from harness.model.messages import Texts
from harness.model.replication import ReplicationNode
from harness.observe import EIO

Child = Disk | ReplicationNode


@dataclass(eq=False)
class QuorumChild:
    name: str  # children.N
    node: Child


@dataclass(eq=False)
class QuorumNode:
    """The model of one quorum node: its children in order, the vote threshold."""

    name: str
    machine: str
    threshold: int = 1
    children: list[QuorumChild] = field(default_factory=list)
    next_index: int = 0

    # ---- graph changes (x-blockdev-change)

    def add_child(self, node: Child) -> str:
        """Attach `node` as the next child; its child name."""
        child = QuorumChild(f"children.{self.next_index}", node)
        self.next_index += 1
        self.children.append(child)
        return child.name

    def child(self, name: str) -> QuorumChild | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    def remove_child(self, name: str, texts: Texts) -> str | None:
        """Detach child `name`; QEMU's error text (in the profile's `texts`), or None."""
        c = self.child(name)
        if c is None:
            return texts.quorum_no_child(self.name, name)
        if len(self.children) <= self.threshold:
            return texts.quorum_below_threshold(self.threshold)
        if name == f"children.{self.next_index - 1}":
            self.next_index -= 1
        self.children.remove(c)
        return None

    # ---- guest I/O

    def read(self, start: int, end: int) -> list[tuple[int, int, int]] | str:
        """fifo: the first child that reads successfully answers."""
        err = EIO
        for c in self.children:
            n = c.node
            if isinstance(n, Disk):
                return view(n.chain(), start, end)
            res = n.read(start, end)
            if not isinstance(res, str):
                return res
            err = res
        return err

    def write(self, start: int, end: int, val: int) -> str | None:
        """Every child in order; success when at least `threshold` children succeed."""
        ok = 0
        errors: list[str] = []
        for c in self.children:
            n = c.node
            if isinstance(n, Disk):
                write_layer(n.chain(), 0, start, end, val)
                ok += 1
                continue
            err = n.write(start, end, val)
            if err is None:
                ok += 1
            else:
                errors.append(err)
        if ok >= self.threshold:
            return None
        return errors[0] if errors else EIO

    def flush(self) -> str | None:
        for c in self.children:
            if isinstance(c.node, ReplicationNode):
                c.node.flush()
        return None

    def replication_children(self) -> list[ReplicationNode]:
        return [c.node for c in self.children if isinstance(c.node, ReplicationNode)]
