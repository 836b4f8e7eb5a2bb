"""Random differential runs: the model and real QEMU in lock-step (harness.differential).

One test per group of topologies (secondary-only with six geometries, the same over a
blkdebug filter that makes failover commits fail, primary-only with NBD link loss, two
replication nodes in one QEMU, the full COLO pair over three geometries) and per QEMU
build. Every operation's answer is compared with the model's and, after each one that can
change what a guest sees, every guest view of the topology is read back whole (the disks
are 4 MiB). The CI profile is bounded and seeded (seed 0): at most 34 examples (30 and 530
steps at seed 0), at least 426 steps per QEMU version. A divergence is shrunk by
hypothesis and written as a trace file (its path is in the failure; `qrc replay TRACE`
re-runs it).

Environment: QRC_DIFFERENTIAL_PROFILE=nightly (or HYPOTHESIS_PROFILE=qrc-differential-
nightly) for the long profile, QRC_DIFFERENTIAL_SEED=N (or --hypothesis-seed N),
QRC_DIFFERENTIAL_EXAMPLES / QRC_DIFFERENTIAL_STEPS to resize, QRC_DIFFERENTIAL_SHRINK_SECONDS
to bound shrinking (ci 12 s, nightly 300 s), QRC_ARTIFACTS=DIR to keep
traces in DIR/differential/ (default: the test's tmp dir).
"""

from __future__ import annotations

import dataclasses
import zlib

import pytest

from harness.differential.runner import run_groups
from harness.differential.settings import CI, Options
from harness.differential.specs import Group, ci_groups
from harness.observe import QMP_OK
from harness.ops import PRIMARY, PrimaryRead, Start, Write, WriteZeroes

pytestmark = [pytest.mark.differential]


def _options(request: pytest.FixtureRequest) -> Options:
    try:
        opts = Options.from_env()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    seed = request.config.getoption("hypothesis_seed", default=None)
    if opts.seed is None and seed is not None:
        text = str(seed)
        number = int(text) if text.isdigit() else zlib.crc32(text.encode())
        opts = dataclasses.replace(opts, seed=number)
    return opts


@pytest.mark.parametrize("group", ci_groups(), ids=lambda g: g.name)
def test_differential(qemu_build, profile, tmp_path, request, record_property, group: Group):
    build, found = qemu_build
    opts = _options(request)
    traces = opts.artifacts or tmp_path / "traces"
    (res,) = run_groups(
        build,
        found.version,
        profile,
        tmp_path,
        [group],
        options=opts,
        trace_dir=traces,
    )
    record_property("differential", res.summary())
    print(res.summary())
    print("operations:", dict(sorted(res.kinds.items())))
    if res.failure is not None:
        pytest.fail(f"{res.summary()}\n{res.failure}", pytrace=False)
    if opts.profile == CI and opts.examples is None and opts.steps is None:
        assert res.steps >= group.min_steps, res.summary()


# ---- what the runner found in QEMU


@pytest.mark.quick
@pytest.mark.primary
def test_primary_unaligned_write_zeroes_zeroes_its_bytes(primary, profile, xfail_bug):
    """Found by the differential runner. The model predicts the bug (the whole padded
    sectors undefined), so the random runs agree with QEMU; this states what is right."""
    xfail_bug(profile.unaligned_zeroes_garbage)
    s = primary()
    s.expect(Start(primary=True, machine=PRIMARY), QMP_OK)
    wrong = []
    for i, size in enumerate((0x7C70, 0x200, 0x1000, 0x7C70, 0x200, 0x1000, 0x10000, 0x200)):
        base = 0x40000 + i * 0x20000
        # a data write leaves its bytes in a freed buffer the pad buffer may reuse
        s.run(Write(base - size, size, 0x5A))
        s.do(WriteZeroes(base + 0x10, 0x100))
        got = s.topo.export_io.read(base + 0x10, 0x100)
        if got.data != ((base + 0x10, 0x100, 0),):
            wrong.append(f"write -z {base + 0x10:#x} 0x100 left {got.describe()}")
        s.do(PrimaryRead(base, 0x200))
    assert not wrong, "; ".join(wrong)
