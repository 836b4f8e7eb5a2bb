"""`qrc bisect`: one QEMU build tested for `git bisect run`, answered with its codes.

A step builds the tree first when it is one (harness.buildtree), finds and probes the
build, then runs the selected cases (harness.report.runner) or replays a trace. What the
run means for the bisection is `verdict`'s, a pure function of the run's result:

    the run                                              answer
    pytest selected nothing (its status 5)               128 abort: the selection is wrong
    the environment failed a case (a full disk...)       128 abort: no verdict
    every failure is a case file that does not import    128 abort
    a case failed or errored, or pytest said 1           1 bad    (--find-fix: 0, not fixed)
    pytest ended with another status                     128 abort
    nothing passed: every selected case skipped          125 skip
    the selected cases pass (xfails and xpasses count)   0 good   (--find-fix: 1, fixed)

and `replay_verdict` is the same for a replayed trace (0 agrees, 1 diverges, 125 cannot
run: passed on; anything else aborts). A build that cannot be tested (not found, not
executable, no replication driver, its probe or its build fails) is a skip (125); a
command line that is wrong aborts (128), so git never records it as the commit's fault.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.builds import QemuBuild, find_build
from harness.buildtree import build, build_argv
from harness.environment import from_exception
from harness.errors import (
    BISECT_ABORT,
    BISECT_SKIP,
    BinaryNotExecutable,
    BuildNotFound,
    HarnessError,
    NoReplication,
    ProbeError,
    RunnerError,
    UsageError,
)
from harness.probe import Probe, probe, require_replication
from harness.report import records
from harness.report.display import Progress, environment_line, interrupted_text
from harness.report.runner import RunResult, prepare_dir, pytest_args, run_pytest
from harness.words import plural, verb

PREFIX = "qrc bisect: "
# how it is used (`qrc bisect --help` shows it)
EXAMPLE = """\
in a QEMU checkout configured once in ./build (each step rebuilds the five
binaries first: build is a build tree), the commit that fixed block_resize's
error (--find-fix: exit 0 while the cases still fail):
  git bisect start --term-old=broken --term-new=fixed v9.0.0 v7.2.0
  git bisect run /path/to/.venv/bin/qrc bisect --qemu-dir build --profile 9.0 \\
      --find-fix -k test_block_resize_names_the_blocker
the same commit as the first one that departs from 7.2's behaviour:
  git bisect start v9.0.0 v7.2.0
  git bisect run /path/to/.venv/bin/qrc bisect --qemu-dir build --profile 7.2 \\
      -k test_block_resize_names_the_blocker"""
# what makes a build untestable: the commit is skipped (125)
UNTESTABLE = (BuildNotFound, BinaryNotExecutable, NoReplication, ProbeError)


@dataclass(frozen=True)
class BisectVerdict:
    """What one step answers: `code` (git bisect run's), `line` (said after "qrc bisect: ",
    on stderr when aborting; "" says nothing) and the records of the `failures`."""

    code: int
    line: str
    failures: tuple[Mapping[str, Any], ...] = ()


def _abort(why: str) -> BisectVerdict:
    return BisectVerdict(BISECT_ABORT, f"{why} (aborting the bisection: {BISECT_ABORT})")


def verdict(result: RunResult, find_fix: bool, where: str = "this build") -> BisectVerdict:
    """The step's answer for the finished pytest run `result` (see the module's table);
    `where` names the build in the line ("QEMU 7.2.22 at ...")."""
    cases = result.cases
    if result.returncode == 5:
        return _abort("the selection matched no case")
    broken = records.environment_broken(cases)
    if broken:  # a full disk...: the commit is neither good nor bad
        return _abort(environment_line(broken))
    bad = [r for r in cases if r["outcome"] in records.BAD]
    if bad and all(r["when"] == "collect" for r in bad):
        return _abort(f"a case file does not import: {bad[0]['nodeid']}: {bad[0]['message']}")
    if bad or result.returncode == 1:
        n = len(cases)
        said = "old (0), not fixed" if find_fix else "bad (1)"
        line = (
            f"{said}: {len(bad)} of {n} selected {'result' if n == 1 else 'results'} "
            f"{verb(len(bad), 'fails', 'fail')} on {where}"
        )
        return BisectVerdict(0 if find_fix else 1, line, tuple(bad))
    if result.returncode != 0:
        return _abort(f"pytest exited with status {result.returncode}; see {result.log}")
    good = [r for r in cases if r["outcome"] in (*records.GOOD, "xpassed")]
    if not good:
        why = "; ".join(sorted({str(r.get("reason")) for r in cases}))
        return BisectVerdict(
            BISECT_SKIP, f"skip (125): every selected case was skipped on {where}: {why}"
        )
    said = "new (1), fixed" if find_fix else "good (0)"
    passes = f"{plural(len(good), 'selected result')} {verb(len(good), 'passes', 'pass')}"
    return BisectVerdict(1 if find_fix else 0, f"{said}: {passes} on {where}")


def replay_verdict(rc: int, find_fix: bool, trace: str) -> BisectVerdict:
    """The step's answer for `qrc replay`'s exit status `rc` (replay said why already)."""
    if rc in (0, 1):
        return BisectVerdict(1 - rc if find_fix else rc, "")
    if rc == BISECT_SKIP:
        return BisectVerdict(rc, "")
    return _abort(f"replay of {trace} exited with status {rc}")


@dataclass(frozen=True)
class Request:
    """What the command line asks of one step."""

    qemu_dir: str
    # pytest's selection (-k EXPR, -m MARKEXPR or node ids); empty: the quick set
    selection: tuple[str, ...] = ()
    trace: str | None = None  # replay this trace instead of running cases
    build: bool | None = None  # None: build when qemu_dir is a build tree
    profile: str | None = None
    find_fix: bool = False
    report_dir: str | None = None  # None: a temporary directory, removed
    progress: str = "auto"


def _say(v: BisectVerdict, keep: bool) -> int:
    if v.line:
        out = sys.stderr if v.code == BISECT_ABORT else sys.stdout
        print(PREFIX + v.line, file=out, flush=True)
    for r in v.failures:
        print(f"  {r['outcome'].upper()} {r['nodeid']}: {r.get('message') or ''}")
        if keep and r.get("artifacts"):
            print(f"    artifacts: {r['artifacts']}")
    return v.code


def _skip(why: object) -> int:
    print(f"{PREFIX}cannot test this build, skip ({BISECT_SKIP}): {why}", file=sys.stderr)
    return BISECT_SKIP


def run(req: Request) -> int:
    """One bisection step: git bisect run's exit code, its reason said in one line."""
    try:
        if req.profile is not None:
            from harness.judge import named_profile  # the model: only when one is named

            named_profile(req.profile)
        report_dir = prepare_dir(Path(req.report_dir), "--report-dir") if req.report_dir else None
        if not build_step(req.qemu_dir, req.build, report_dir):
            return BISECT_SKIP
        found_build = find_build(req.qemu_dir, os.environ)
        found = probe(found_build)
        require_replication(found)
        if req.trace:
            return _say(replay_verdict(_replay(req), req.find_fix, req.trace), False)
        return _cases(req, found_build, found, report_dir)
    except UNTESTABLE as e:
        return _skip(e)
    except (HarnessError, OSError) as e:
        broken = from_exception(e)  # this process's own: a full TMPDIR...
        if broken is not None:
            return _say(_abort(f"the environment failed the run: {broken}"), False)
        if isinstance(e, OSError):
            raise
        return _say(_abort(str(e)), False)


def _replay(req: Request) -> int:
    from harness.differential.replay import replay_main  # hypothesis: only when asked

    assert req.trace is not None
    path, where = str(Path(req.trace).absolute()), str(Path(req.qemu_dir).absolute())
    if req.profile is None:
        return replay_main(path, where)
    return replay_main(path, where, req.profile)


def _cases(req: Request, qemu: QemuBuild, found: Probe, report_dir: Path | None) -> int:
    keep = report_dir is not None
    rdir = report_dir or Path(tempfile.mkdtemp(prefix="qrc-bisect-"))
    progress = Progress(sys.stdout, req.progress)
    args = pytest_args([req.qemu_dir], bool(req.selection), req.selection, profile=req.profile)
    try:
        result = run_pytest(args, rdir, progress)
    finally:
        if not keep:
            shutil.rmtree(rdir, ignore_errors=True)
    if result.interrupted:
        print(PREFIX + interrupted_text(result, progress.total, keep), file=sys.stderr)
        return 130
    where = f"QEMU {found.version} at {qemu.system}"
    if req.profile:
        where += f", judged by model profile {req.profile}"
    return _say(verdict(result, req.find_fix, where), keep)


def build_step(qemu_dir: str, asked: bool | None, report_dir: Path | None) -> bool:
    """Build the tree first when `asked` (None: when it is a build tree); False when the
    build failed (its last lines are on stderr, the whole output in build.log).
    UsageError when asked to build what is not a build tree."""
    where = Path(qemu_dir)
    argv = build_argv(where) if where.is_dir() else None
    if asked is False or (asked is None and argv is None):
        return True
    if argv is None:
        raise UsageError(
            f"--build: {qemu_dir} is not a build tree (no build.ninja, no Makefile "
            "that drives ninja)"
        )
    logdir = report_dir or Path(tempfile.mkdtemp(prefix="qrc-build-"))
    log = logdir / "build.log"
    try:
        try:
            result = build(argv, log)
        except OSError as e:
            raise RunnerError(f"--build: cannot run {argv[0]}: {e.strerror}") from None
        if not result.ok:
            _skip(
                f"the build failed ({argv[0]} exited with status {result.returncode} after "
                f"{result.seconds:.0f} s: {result.command}); its last lines:"
            )
            for line in result.tail:
                print(f"  {line}", file=sys.stderr)
            if report_dir is not None:
                print(f"the whole output: {log}", file=sys.stderr)
            return False
    finally:
        if report_dir is None:
            shutil.rmtree(logdir, ignore_errors=True)
    print(f"{PREFIX}built: {qemu_dir} in {result.seconds:.0f} s ({result.command})", flush=True)
    return True
