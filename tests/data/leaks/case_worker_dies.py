"""A test-only case for tests/test_leaks.py: its pytest-xdist worker dies mid-case.

Not collected by default (not named test_*.py); run it by path. It makes what a
worker keeps in TMPDIR while it runs (template images, QEMU's socket directory, the
layer inspector's directory), writes their names to $QRC_LEAK_REPORT, and SIGKILLs its
own worker: nothing of it can clean up; the controller must.
"""

import os
import signal
from pathlib import Path

from cases.conftest import _maker, machines, profile, secondary, topologies  # noqa: F401  (fixtures)
from harness.layer_inspector import inspector
from harness.ops import Start, Write
from harness.tmp import OWNER


def test_worker_killed_mid_case(secondary, qemu_build):  # noqa: F811
    s = secondary()
    s.run(Start(primary=False), Write(0, 65536, 0x11))
    inspector(qemu_build[0])  # the layer inspector's private directory
    base = Path(os.environ["TMPDIR"])
    mine = sorted(
        p.name
        for p in base.iterdir()
        if (p / OWNER).is_file() and (p / OWNER).read_text().split()[0] == str(os.getpid())
    )
    Path(os.environ["QRC_LEAK_REPORT"]).write_text("\n".join(mine) + "\n")
    os.kill(os.getpid(), signal.SIGKILL)
