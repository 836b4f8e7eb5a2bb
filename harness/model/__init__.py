"""The pure-Python reference model of QEMU's replication filter.

extents  sorted range maps (cost grows with extents, not disk size)
disks    image layers, copy-on-write, the chain view, make-empty
profiles behaviour per QEMU release: its texts, switches and known bugs
messages QEMU's exact error texts (Texts: one release's, `profile.texts`)
replication  one replication node: stages and callbacks
system   a topology: machines, the *_all QMP layer, apply(op) -> observation
"""

from harness.model.profiles import PROFILES, Profile, profile_for
from harness.model.system import Model

__all__ = ["PROFILES", "Model", "Profile", "profile_for"]
