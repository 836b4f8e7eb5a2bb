"""Run pytest for `qrc run`, `qrc matrix` and `qrc bisect`: which builds, which
arguments, the run itself, and what its outcome means as an exit code.

pytest runs as a child process in the project's root (so the conftests, the
markers and `-o testpaths=cases` apply whatever the caller's directory), with
its whole output kept in REPORT_DIR/pytest.log.  The report plugin in the child
writes one JSON line per event to a pipe; harness.report.display draws the
progress from them, and the closing summary from the JSON report at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import project_root
from harness.builds import QemuBuild, find_build, installed_builds
from harness.environment import from_os_error, full_space
from harness.errors import EnvironmentBroken, NoCases, ReportPathError, RunnerError, UsageError
from harness.probe import Probe, probe, require_replication
from harness.report import records
from harness.report.display import Progress, interrupted_text, summary_text
from harness.tmp import reclaim

# Variables of an enclosing pytest-xdist run that must not leak into a fresh run.
_SCRUB = (
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "PYTEST_CURRENT_TEST",
)


def prepare_dir(path: Path, what: str) -> Path:
    """Create `path` and prove it writable; ReportPathError (one line) if not."""
    path = path.absolute()
    if path.exists() and not path.is_dir():
        raise ReportPathError(f"{what} {path}: cannot write there: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".qrc-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ReportPathError(f"{what} {path}: cannot write there: {e.strerror}") from None
    return path


# --- what to run: the builds and pytest's arguments ------------------------------------


def resolve_builds(qemu_dirs: Sequence[str], all_builds: bool) -> list[tuple[QemuBuild, Probe]]:
    """The builds a run will use (`--qemu-dir`s, else every installed build with
    `all_builds`, else iotests' variables or PATH), each found, probed and able to host
    replication (BuildNotFound, ProbeError, NoReplication otherwise)."""
    if qemu_dirs:
        builds = [find_build(d, os.environ) for d in qemu_dirs]
    elif all_builds:
        builds = installed_builds()
    else:
        builds = [find_build(None, os.environ)]
    out = []
    for b in builds:
        found = probe(b)
        require_replication(found)
        out.append((b, found))
    return out


def child_dir(d: str) -> str:
    """--qemu-dir as pytest sees it: it runs in the project root."""
    path = Path(d).absolute()
    root = project_root()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def absolutize(args: Sequence[str], cwd: Path) -> list[str]:
    """Paths (and node ids) among pytest arguments made absolute: pytest runs elsewhere."""
    out = []
    for a in args:
        if a.startswith("-") or not a:
            out.append(a)
            continue
        path, sep, rest = a.partition("::")
        cand = cwd / path
        out.append(f"{cand.absolute()}{sep}{rest}" if path and cand.exists() else a)
    return out


def pytest_args(
    qemu_dirs: Sequence[str],
    all_cases: bool,
    extra: Sequence[str],
    all_builds: bool = False,
    profile: str | None = None,
) -> list[str]:
    """pytest's arguments for a run: -n auto (unless xdist is off), the quick set unless
    `all_cases` (a later -m of the user's wins), the builds, the profile, then `extra`
    (the user's own, paths made absolute)."""
    args: list[str] = []
    if not any(a in ("no:xdist", "-pno:xdist") for a in extra):
        args += ["-n", "auto"]
    if not all_cases:
        args += ["-m", "quick"]
    for d in qemu_dirs:
        # One token: pytest's first look at the arguments (which decides where the
        # conftests are) would take a separate value for a path to test.
        args.append(f"--qemu-dir={child_dir(d)}")
    if all_builds:
        args.append("--all-builds")
    if profile is not None:
        args.append(f"--profile={profile}")
    return args + absolutize(extra, Path.cwd())


@dataclass(frozen=True)
class RunResult:
    returncode: int  # pytest's
    doc: dict[str, Any] | None  # the JSON report, None if pytest wrote none
    wall: float
    report_dir: Path
    log: Path
    junit: Path
    json: Path
    artifacts: Path
    # Ctrl-C (SIGINT) ended the run: the reports hold the cases that finished
    interrupted: bool = False

    @property
    def cases(self) -> list[dict[str, Any]]:
        """The JSON report's records ([] without a report)."""
        return self.doc["cases"] if self.doc else []


def run_cases(
    title: str,
    builds: Sequence[tuple[QemuBuild, Probe]],
    pargs: list[str],
    report_dir: Path,
    progress_mode: str,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
) -> RunResult | None:
    """pytest for `qrc run`, `qrc matrix` and `qrc coverage` (`title`; `env`: pytest's
    environment, default ours), its progress shown in `progress_mode`: None, said so,
    when a Ctrl-C cut it short; NoCases when it selected nothing; else its result, with
    the closing summary printed."""
    progress = Progress(sys.stdout, progress_mode)
    result = run_pytest(pargs, report_dir, progress, env=env)
    if result.interrupted:
        print(f"{title}: {interrupted_text(result, progress.total)}", flush=True)
        return None
    if result.returncode == 5:
        raise NoCases(f"no case matched the selection (pytest's output: {result.log})")
    print(summary_text(result, builds, title, profile))
    return result


def run_suite(
    title: str,
    qemu_dirs: Sequence[str],
    extra: Sequence[str],
    *,
    all_cases: bool,
    all_builds: bool,
    profile: str | None,
    report_dir: str,
    progress_mode: str,
) -> tuple[list[tuple[QemuBuild, Probe]], RunResult | None]:
    """`qrc run` and `qrc matrix` (`title`): the builds resolved, the report directory
    proven writable, pytest run on the cases (`run_cases`); the builds, and the run's
    result (None: a Ctrl-C cut it short)."""
    builds = resolve_builds(qemu_dirs, all_builds or "--all-builds" in extra)
    where = prepare_dir(Path(report_dir), "--report-dir")
    pargs = pytest_args(qemu_dirs, all_cases, extra, all_builds, profile)
    return builds, run_cases(title, builds, pargs, where, progress_mode, profile)


def exit_code(result: RunResult) -> int:
    """qrc's exit code for a finished run: EnvironmentBroken's when the environment failed
    a case (a full disk...: whatever else happened, the run says nothing), else pytest's
    own 0 and 1; RunnerError for its internal error; a run that ended otherwise: 1 if a
    case failed, else 130."""
    if records.environment_broken(result.cases):
        return EnvironmentBroken.exit_code
    rc = result.returncode
    if rc in (0, 1):
        return rc
    if rc == 3:
        raise RunnerError(f"pytest had an internal error; see {result.log}")
    bad = any(r["outcome"] in records.BAD for r in result.cases)
    return 1 if bad else 130


# --- running pytest ---------------------------------------------------------------


def _usage_line(log: Path) -> str:
    """pytest's usage error, from its output: the 'error: ...' line, else the ERROR line."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "pytest refused its arguments"
    for ln in lines:
        if ": error: " in ln:
            return ln.split(": error: ", 1)[1].strip()
    for ln in lines:
        if ln.startswith("ERROR: ") and not ln.startswith("ERROR: usage:"):
            return ln[len("ERROR: ") :].strip()
    return next((ln for ln in reversed(lines) if ln.strip()), "pytest refused its arguments")


def run_pytest(
    pytest_args: Sequence[str],
    report_dir: Path,
    progress: Progress,
    *,
    env: Mapping[str, str] | None = None,
) -> RunResult:
    """pytest with the report plugin's outputs in `report_dir`; its result and JSON report."""
    report_dir = prepare_dir(report_dir, "report directory")
    junit, jpath = report_dir / "junit.xml", report_dir / "report.json"
    artifacts, log = report_dir / "artifacts", report_dir / "pytest.log"
    shutil.rmtree(artifacts, ignore_errors=True)  # only this run's failures
    for stale in (jpath, junit):
        stale.unlink(missing_ok=True)
    child_env = {k: v for k, v in (os.environ if env is None else env).items() if k not in _SCRUB}
    rfd, wfd = os.pipe()
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-o",
        "testpaths=cases",
        "-rA",
        f"--junitxml={junit}",
        f"--qrc-json={jpath}",
        f"--qrc-artifacts={artifacts}",
        f"--qrc-events-fd={wfd}",
        *pytest_args,
    ]
    t0 = time.monotonic()
    proc = _spawn_pytest(argv, log, child_env, rfd, wfd)
    rc, interrupted = _follow(proc, rfd, progress)
    wall = time.monotonic() - t0
    doc = _load_report(jpath)
    if interrupted:
        _prune_junit(junit)
        return RunResult(rc, doc, wall, report_dir, log, junit, jpath, artifacts, True)
    if rc == 4:
        raise UsageError(_usage_line(log))
    if doc is None and rc not in (0, 5):
        space = full_space(report_dir)  # the report itself could not be written?
        if space is not None:
            raise EnvironmentBroken(f"nearly full: {space.describe()}; pytest wrote no report")
        raise RunnerError(f"pytest exited with status {rc} without writing its report; see {log}")
    return RunResult(rc, doc, wall, report_dir, log, junit, jpath, artifacts)


def _spawn_pytest(
    argv: list[str], log: Path, env: dict[str, str], rfd: int, wfd: int
) -> subprocess.Popen[bytes]:
    """Start pytest, its output in `log` after its command line, the events pipe's write
    end `wfd` passed to it (and closed here); both ends closed if it cannot start."""
    try:
        with open(log, "wb") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            # pytest (its workers, their QEMUs) in a process group of its own: a Ctrl-C
            # reaches it once, from here, whether it came from a terminal or a kill -INT
            proc = subprocess.Popen(
                argv,
                cwd=project_root(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(wfd,),
                process_group=0,
            )
    except OSError as e:
        os.close(rfd)
        os.close(wfd)
        broken = from_os_error(e)  # its log on a full disk...
        raise broken or RunnerError(
            f"cannot start pytest ({sys.executable}): {e.strerror}"
        ) from None
    os.close(wfd)
    return proc


def _follow(proc: subprocess.Popen[bytes], rfd: int, progress: Progress) -> tuple[int, bool]:
    """Hand pytest's events (a JSON object a line on `rfd`) to `progress` until it exits:
    its exit status, and whether a Ctrl-C cut it short."""
    interrupted = False
    try:
        try:
            with os.fdopen(rfd, "r") as events:
                for line in events:
                    try:
                        progress.event(json.loads(line))
                    except (ValueError, KeyError, TypeError):
                        continue
            rc = proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            rc = _interrupt(proc)
    finally:
        # what its dead processes left in TMPDIR (a live one's files are never touched)
        reclaim(proc.pid)
    progress.event({"e": "end"})
    return rc, interrupted


def _load_report(jpath: Path) -> dict[str, Any] | None:
    """The run's JSON report, None if pytest wrote none (or an unreadable one)."""
    if not jpath.exists():
        return None
    try:
        return records.load(jpath)
    except (OSError, ValueError):
        return None


def _prune_junit(path: Path) -> None:
    """Drop the <testcase> elements pytest's JUnit writer leaves for the cases a Ctrl-C
    cut short (no name, no result): the file holds what ran, as the JSON report does."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return
    pruned = 0
    for suite in tree.getroot().iter("testsuite"):
        for case in suite.findall("testcase"):
            if case.get("name") is None:
                suite.remove(case)
                pruned += 1
    if pruned:
        tree.write(path, encoding="utf-8", xml_declaration=True)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _interrupt(proc: subprocess.Popen[bytes], grace: float = 60) -> int:
    """Pass a Ctrl-C on to pytest's process group and wait for it to write its reports
    (a second Ctrl-C, or `grace` seconds, kills the group); pytest's exit status."""
    _signal_group(proc, signal.SIGINT)
    try:
        return proc.wait(grace)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        _signal_group(proc, signal.SIGKILL)
        return proc.wait()
