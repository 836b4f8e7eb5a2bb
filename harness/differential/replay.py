"""Replay a trace file against a QEMU build: the exit code drives `git bisect run`.

    0    QEMU now agrees with the model (the whole trace, final layer checks included)
    1    QEMU still diverges from the model (or misbehaves: dies, hangs; harness.verdicts)
    125  this build cannot run the trace (no binaries, no replication, setup failed)
    8    the trace file is malformed or truncated (harness.errors.TraceError)

A failure of the harness itself while replaying (any exception outside
harness.verdicts' tree) is not a verdict about QEMU: it propagates as it is.

The model runs under the profile of the build being replayed (not the one the
trace was recorded with), so one trace can bisect across releases; or under the
one `--profile NAME` names (harness.judge).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TextIO

from harness.builds import QemuBuild, find_build
from harness.differential.session import Session
from harness.differential.trace import Trace, load_trace
from harness.errors import BISECT_SKIP, HarnessError, TraceError, UsageError
from harness.judge import judging_profile, named_profile
from harness.machine import MachineError, MachineSet
from harness.probe import probe, replication_verdict
from harness.qemu_io import QemuIoError
from harness.tmp import disown, private_dir
from harness.verdicts import QemuMisbehaved
from harness.words import plural

AGREES = 0
DIVERGES = 1


def _line(stream: TextIO, text: str) -> None:
    stream.write(" ".join(text.split()) + "\n")


def replay_main(trace_path: str, qemu_dir: str | None, profile: str | None = None) -> int:
    """Replay `trace_path` on the build at `qemu_dir` (None: iotests' variables, PATH),
    judged by the model profile `profile` (None: the probed version's)."""
    try:
        trace = load_trace(trace_path)
    except TraceError as e:
        _line(sys.stderr, e.one_line())
        return TraceError.exit_code
    if profile is not None:
        try:
            named_profile(profile)
        except UsageError as e:
            _line(sys.stderr, e.one_line())
            return UsageError.exit_code
    try:
        build = find_build(qemu_dir, os.environ)
        found = probe(build)
    except HarnessError as e:
        _line(sys.stderr, f"{e.one_line()} (cannot run the trace: exit {BISECT_SKIP})")
        return BISECT_SKIP
    verdict = replication_verdict(found)
    if verdict is not None:
        _line(sys.stderr, f"qrc: {verdict} (cannot run the trace: exit {BISECT_SKIP})")
        return BISECT_SKIP
    return replay(trace, build, found.version, found.version_tuple, profile)


def replay(
    trace: Trace,
    build: QemuBuild,
    version: str,
    version_tuple: tuple[int, int, int],
    profile_name: str | None = None,
) -> int:
    """Run the trace's operations under the differential policy; AGREES or DIVERGES
    (BISECT_SKIP if the topology cannot even be built)."""
    profile = judging_profile(profile_name, version_tuple)
    workdir = private_dir("qrc-replay-")
    keep = False
    try:
        with MachineSet(workdir) as machines:
            try:
                session = Session(
                    trace.spec,
                    build,
                    profile,
                    machines,
                    workdir,
                    f"QEMU {version}, profile {profile.name} (replay)",
                )
            except HarnessError as e:
                _line(sys.stderr, f"{e.one_line()} (cannot build the topology: exit 125)")
                return BISECT_SKIP
            except (QemuMisbehaved, MachineError, QemuIoError) as e:
                # what QEMU's processes did while the topology was built (a command
                # the harness needs refused, a crash): this build cannot run the trace
                _line(
                    sys.stderr,
                    f"qrc: cannot build the topology on QEMU {version}: "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (exit 125)",
                )
                return BISECT_SKIP
            try:
                for op in trace.operations:
                    session.step(op)
                if trace.pending is not None:
                    session.step(trace.pending)
                session.end()
            except QemuMisbehaved as e:
                keep = True
                disown(workdir)  # the logs are the user's now
                where = session.where or "?"
                same = (
                    " (as recorded)"
                    if where == trace.where
                    else (
                        f" (recorded: {trace.where})"
                        if trace.where
                        else " (recorded: no divergence)"
                    )
                )
                print(f"replay: QEMU {version} diverges from the model at {where}{same}")
                print(str(e))
                print(f"replay: logs kept in {workdir}")
                return DIVERGES
            finally:
                session.close()
        recorded = f"; recorded: {trace.where}" if trace.where else ""
        print(
            f"replay: QEMU {version} agrees with the model "
            f"({plural(len(trace.operations), 'operation')}, profile {profile.name}{recorded})"
        )
        return AGREES
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
