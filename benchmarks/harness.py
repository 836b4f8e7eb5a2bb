"""Per-operation cost of the harness's QEMU paths, per installed build, as JSON.

Figures are measured in one run and compared as ratios (10.0 / 7.2, and each
path against a bare QMP round trip), so a slower machine moves them together.
Run: .venv/bin/python benchmarks/harness.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.builds import QemuBuild, known_builds  # noqa: E402
from harness.machine import MachineSet  # noqa: E402
from harness.nbd_client import NbdSession  # noqa: E402
from harness.qemu_io import GuestIO  # noqa: E402

K = 1024
N = 300


def per_op(fn: Callable[[int], object], n: int = N) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t) / n)
    return best


def measure(build: QemuBuild) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="qrcbench-") as d, MachineSet(Path(d)) as ms:
        img = Path(d) / "d.qcow2"
        create = [*build.command(build.img), "create", "-q", "-f", "qcow2", str(img), "64M"]
        subprocess.run(create, check=True, env={**__import__("os").environ, **build.env()})
        m = ms.launch(build, "m")
        m.qmp_ok(
            "blockdev-add",
            **{
                "driver": "qcow2",
                "node-name": "d",
                "file": {"driver": "file", "filename": str(img)},
            },
        )
        sock = m.sock_path("nbd.sock")
        m.qmp_ok("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
        m.qmp_ok(
            "block-export-add",
            **{"type": "nbd", "id": "e", "node-name": "d", "writable": True, "name": "d"},
        )
        io = GuestIO(m, "d")
        with NbdSession(build, sock, "d") as nbd:
            t0 = time.perf_counter()
            launch = ms.launch(build, "probe-launch")
            launch_s = time.perf_counter() - t0
            launch.shutdown()
            return {
                "qmp_round_trip_ms": per_op(lambda i: m.qmp("query-status")) * 1e3,
                "hmp_write_64k_ms": per_op(lambda i: io.write((i % 16) * 64 * K, 64 * K, 1)) * 1e3,
                "hmp_read_64k_ms": per_op(lambda i: io.read(0, 64 * K, ((0, 64 * K, 1),))) * 1e3,
                "nbd_write_64k_ms": per_op(lambda i: nbd.write((i % 16) * 64 * K, 64 * K, 2)) * 1e3,
                "launch_ms": launch_s * 1e3,
            }


def main() -> None:
    results = {}
    for b in known_builds(ROOT):
        version = subprocess.run(
            [*b.command(b.system), "--version"],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, **b.env()},
        ).stdout.split()[3]
        r = measure(b)
        r["hmp_write_over_qmp"] = r["hmp_write_64k_ms"] / r["qmp_round_trip_ms"]
        r["nbd_write_over_hmp_write"] = r["nbd_write_64k_ms"] / r["hmp_write_64k_ms"]
        results[version] = r
    vs = sorted(results, key=lambda v: tuple(int(x) for x in v.split(".")))
    if len(vs) == 2:
        a, b2 = results[vs[0]], results[vs[1]]
        results["ratio_" + vs[1] + "_over_" + vs[0]] = {
            k: b2[k] / a[k] for k in a if k.endswith("_ms")
        }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
