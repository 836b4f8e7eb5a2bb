"""Conformance harness for QEMU's block replication filter (block/replication.c).

Layout, one job per module:
  builds, probe        which QEMU binaries, and what they can do
  process, qmp         spawning and reaping any binary; one synchronous QMP connection
  machine              a QEMU process with its QMP transcript, deadlines and run state
  qemu_io              guest I/O over HMP qemu-io: the commands, their output parsed
  qemu_io_process      one interactive qemu-io kept open on pipes
  nbd_client           primary I/O over NBD (a qemu_io_process on the export)
  images               declarative chain recipes and the qemu-img builder
  topology             secondary-only, primary-only and COLO pair graphs
  ops, observe         the operations vocabulary and observation values
  model                the pure-Python reference model of the filter
  real                 applies operations to real QEMU
  story                a case as a story: both sides, step by step
  verdicts             what QEMU did that the model does not allow: one tree
  environment          a full disk, no file descriptors: the environment's, no verdict
  cli                  the `qrc` command: parser, exit codes, one short pair a command
  bisect               `qrc bisect`: one step and its verdict
"""

from pathlib import Path


def project_root() -> Path:
    """The checkout this package lives in (where cases/, images/ and .qemu/ are)."""
    return Path(__file__).resolve().parent.parent
