"""One CPU per worker: a worker and the processes it starts share one CPU.

A case is a ping-pong: the harness sends a request, QEMU (or qemu-io) answers, the
harness reads it; at most one of them runs at a time. On two CPUs each hand-off
can land on the other CPU, which must first be woken: on a virtual machine that is
a trip through the hypervisor. Measured here (benchmarks/differential.py, one
worker, 2 vCPUs), the same lock-step run took a fifth less wall time with the worker
and its QEMU, qemu-io and NBD sessions on one CPU. So each xdist worker pins itself
(and with it every process it starts afterwards) to CPU `index` mod the CPUs it may
use; a serial run (-n 0) is left alone, so it can still use a second CPU for QEMU's
own threads. QRC_PIN=0 turns this off.
"""

from __future__ import annotations

import os

ENV = "QRC_PIN"


def pin(index: int) -> int | None:
    """Pin this process to one of the CPUs it may use (`index` mod their number); that
    CPU, or None when there is one CPU only, pinning is off or not possible."""
    if os.environ.get(ENV, "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        cpu = cpus[index % len(cpus)]
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return cpu


def worker_index(worker_id: str) -> int | None:
    """3 for xdist's "gw3"; None for anything else."""
    digits = worker_id.removeprefix("gw")
    return int(digits) if digits.isdigit() and digits != worker_id else None
