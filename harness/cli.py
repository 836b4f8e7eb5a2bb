"""The `qrc` command.

Each subcommand is a pair of small functions (add its options, run it)
registered in `SUBCOMMANDS`; the machinery of run, matrix and bisect lives in
harness.report (runner, plugin, matrix).  Bad input ends in one line on stderr
and a distinct exit code (see harness.errors and EXIT_CODES below), never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from harness.builds import QemuBuild, find_build, known_builds
from harness.buildtree import TARGETS as _BUILD_TARGETS
from harness.errors import (
    BISECT_ABORT,
    BISECT_SKIP,
    BinaryNotExecutable,
    BuildNotFound,
    HarnessError,
    NoCases,
    NoReplication,
    ProbeError,
    ReplayUnavailable,
    ReportPathError,
    RunnerError,
    UsageError,
)
from harness.probe import REQUIRED_COMMANDS, Probe, probe, replication_verdict, require_replication
from harness.words import plural, verb

if TYPE_CHECKING:
    from harness.report.runner import RunResult

PROG = "qrc"

# The exit codes, for `qrc --help` and the README (tests check both against harness.errors).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "every selected case passed (expected failures included)"),
    (1, "a case failed or errored (or a strict expected failure passed)"),
    (2, "usage error: unknown option or bad argument"),
    (3, "no QEMU where pointed: --qemu-dir without QEMU, none on PATH"),
    (4, "a binary exists but is not executable"),
    (5, "the selection matched no case"),
    (6, "the build has no replication driver (or lacks a needed QMP command)"),
    (7, "an image recipe is invalid"),
    (8, "a trace file is malformed"),
    (9, "a report path (--report-dir, --out) cannot be written"),
    (10, "setup failed (scripts/setup.sh)"),
    (11, "probing the build failed (QEMU crashed, hung or spoke no QMP)"),
    (12, "a binary of the build is missing (qemu-img, the storage daemon...)"),
    (13, "replay is not available yet"),
    (14, "pytest itself failed (internal error)"),
    (130, "interrupted"),
)
BISECT_CODES: tuple[tuple[int, str], ...] = (
    (0, "good: the selected cases pass (--find-fix: they still fail)"),
    (1, "bad: a selected case fails (--find-fix: they pass now)"),
    (
        125,
        "skip: this build cannot be tested (its build fails, binaries missing or not "
        "executable, no replication driver, probe fails, every selected case skipped)",
    ),
    (
        128,
        "abort the bisection: the command line is wrong (unknown option or --profile, "
        "unwritable report path, a selection matching no case, --build on a directory "
        "that is not a build tree, replay not available)",
    ),
    (130, "interrupted (git aborts the bisection too)"),
)


def _code_rows(codes: Sequence[tuple[int, str]]) -> list[str]:
    return [
        textwrap.fill(f"  {code:>3}  {text}", width=92, subsequent_indent=" " * 7)
        for code, text in codes
    ]


def _codes_text() -> str:
    rows = _code_rows(EXIT_CODES)
    brows = _code_rows(BISECT_CODES)
    return "\n".join(
        [
            "exit codes (one line on stderr for each error):",
            *rows,
            "",
            "qrc bisect exits only with git bisect run's codes:",
            *brows,
        ]
    )


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit code 2 as usual)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    # extra arguments are pytest's (run, matrix); elsewhere they are an error
    passthrough: bool = False
    epilog: str | None = None


def project_root() -> Path:
    """The checkout this package lives in (where .qemu/ is)."""
    return Path(__file__).resolve().parent.parent


# --- probe -----------------------------------------------------------------


def _probe_configure(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--qemu-dir", metavar="DIR", help="build tree, install prefix or unpacked packages"
    )
    where.add_argument(
        "--all", action="store_true", help="every known build (PATH's and each .qemu/<release>)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--no-cache", action="store_true", help="ask QEMU even if a cached answer exists"
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _probe_text(build: QemuBuild, result: Probe) -> str:
    rows = [("path", result.path)]
    if build.module_dir:
        rows.append(("module dir", build.module_dir))
    rows.append(("replication driver", _yes(result.has_replication)))
    rows += [(cmd, _yes(result.has_command(cmd))) for cmd in REQUIRED_COMMANDS]
    rows.append(("nbd-server-start addr form", result.nbd_addr_form or "n/a"))
    rows.append(("verdict", replication_verdict(result) or "can run replication cases"))
    head = f"QEMU {result.version} ({result.package or 'no package string'}) [{build.label}]"
    return "\n".join([head, *(f"  {k:<29} {v}" for k, v in rows)])


def _probe_json(build: QemuBuild, result: Probe) -> dict[str, object]:
    return {
        "label": build.label,
        "module_dir": build.module_dir,
        "verdict": replication_verdict(result),
        "probe": result.to_dict(),
    }


def _probe_run(args: argparse.Namespace) -> int:
    if args.all:
        builds = known_builds(project_root())
        if not builds:
            raise BuildNotFound("no QEMU on PATH and no .qemu/<release>: run scripts/setup.sh")
    else:
        builds = [find_build(args.qemu_dir, os.environ)]
    results = [(b, probe(b, use_cache=not args.no_cache)) for b in builds]
    if args.json:
        docs = [_probe_json(b, r) for b, r in results]
        print(json.dumps(docs if args.all else docs[0], indent=2, sort_keys=True))
    else:
        print("\n\n".join(_probe_text(b, r) for b, r in results))
    return 0


# --- run and matrix: shared ---------------------------------------------------


def _resolve_builds(qemu_dirs: Sequence[str], all_builds: bool) -> list[tuple[QemuBuild, Probe]]:
    """The builds a run will use, each found, probed and able to host replication."""
    if qemu_dirs:
        builds = [find_build(d, os.environ) for d in qemu_dirs]
    elif all_builds:
        builds = known_builds(project_root())
        if not builds:
            raise BuildNotFound("no QEMU on PATH and no .qemu/<release>: run scripts/setup.sh")
    else:
        builds = [find_build(None, os.environ)]
    out = []
    for b in builds:
        found = probe(b)
        require_replication(found)
        out.append((b, found))
    return out


def _child_dir(d: str) -> str:
    """--qemu-dir as pytest sees it: it runs in the project root."""
    path = Path(d).absolute()
    root = project_root()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _pytest_args(
    qemu_dirs: Sequence[str],
    all_cases: bool,
    extra: Sequence[str],
    all_builds: bool = False,
    profile: str | None = None,
) -> list[str]:
    from harness.report.runner import absolutize

    args: list[str] = []
    if not any(a in ("no:xdist", "-pno:xdist") for a in extra):
        args += ["-n", "auto"]
    if not all_cases:
        args += ["-m", "quick"]  # a later -m of the user's wins
    for d in qemu_dirs:
        # One token: pytest's first look at the arguments (which decides where the
        # conftests are) would take a separate value for a path to test.
        args.append(f"--qemu-dir={_child_dir(d)}")
    if all_builds:
        args.append("--all-builds")
    if profile is not None:
        args.append(f"--profile={profile}")
    return args + absolutize(extra, Path.cwd())


def _profile_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        metavar="NAME",
        default=None,
        help="judge every build against this release's model profile (e.g. 9.0) instead of "
        "the one its probed version picks (a development version such as 8.2.50 picks "
        "the last release's, bugs included)",
    )


def _check_profile(name: str | None) -> None:
    """An unknown --profile is one usage line (UsageError)."""
    if name is not None:
        from harness.judge import named_profile

        named_profile(name)


def _run_options(p: argparse.ArgumentParser, what: str) -> None:
    from harness.report.runner import PROGRESS_MODES

    p.add_argument(
        "--qemu-dir",
        action="append",
        default=[],
        metavar="DIR",
        help=f"QEMU build tree, install prefix or unpacked packages (repeatable); {what}",
    )
    p.add_argument("--all", action="store_true", help="every case, not only the quick set")
    _profile_option(p)
    p.add_argument(
        "--report-dir",
        default="reports",
        metavar="DIR",
        help="where junit.xml, report.json, pytest.log and artifacts/ go (default: ./reports)",
    )
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="bar (terminals), lines (one per case), steps (failures and every 10%%: "
        "CI logs), none; auto picks bar on a terminal, else steps",
    )


def _exit_for(rc: int, doc: dict[str, Any] | None, log: Path) -> int:
    """qrc's exit code for pytest's, once the summary is printed."""
    from harness.report import records

    if rc in (0, 1):
        return rc
    if rc == 3:
        raise RunnerError(f"pytest had an internal error; see {log}")
    bad = doc is not None and any(r["outcome"] in records.BAD for r in doc["cases"])
    return 1 if bad else 130


def _no_cases(log: Path) -> NoCases:
    return NoCases(f"no case matched the selection (pytest's output: {log})")


def _run_cases(
    what: str,
    args: argparse.Namespace,
    builds: list[tuple[QemuBuild, Probe]],
    pargs: list[str],
    report_dir: Path,
) -> RunResult | None:
    """pytest for `qrc run` and `qrc matrix` (`what`), its progress shown as `args` asks:
    None, said so, when a Ctrl-C cut it short; NoCases when it selected nothing; else its
    result, with the summary printed."""
    from harness.report.runner import Progress, interrupted_text, run_pytest, summary_text

    progress = Progress(sys.stdout, args.progress)
    result = run_pytest(pargs, report_dir, progress)
    if result.interrupted:
        print(f"{what}: {interrupted_text(result, progress.total)}", flush=True)
        return None
    if result.returncode == 5:
        raise _no_cases(result.log)
    print(summary_text(result, builds, what, args.profile))
    return result


def _run_run(args: argparse.Namespace) -> int:
    from harness.report.runner import prepare_dir

    extra: list[str] = args.extra
    _check_profile(args.profile)
    all_builds = "--all-builds" in extra
    builds = _resolve_builds(args.qemu_dir, all_builds)
    report_dir = prepare_dir(Path(args.report_dir), "--report-dir")
    pargs = _pytest_args(args.qemu_dir, args.all, extra, profile=args.profile)
    result = _run_cases("qrc run", args, builds, pargs, report_dir)
    if result is None:
        return 130
    return _exit_for(result.returncode, result.doc, result.log)


# --- matrix -------------------------------------------------------------------


def _matrix_configure(p: argparse.ArgumentParser) -> None:
    _run_options(p, "default: every installed build (PATH's QEMU and each .qemu/<release>)")
    p.add_argument(
        "--out", default=".", metavar="DIR", help="where matrix.md and matrix.html go (default: .)"
    )
    p.add_argument(
        "--from-json",
        action="append",
        default=[],
        metavar="REPORT",
        help="draw the matrix from JSON reports (e.g. shards') instead of running",
    )
    p.add_argument(
        "--marker",
        metavar="NAME",
        default=None,
        help="with --from-json: only the cases with this marker (e.g. quick)",
    )


def _load_reports(paths: Sequence[str]) -> dict[str, Any]:
    from harness.report import records

    docs = []
    for f in paths:
        try:
            docs.append(records.load(Path(f)))
        except OSError as e:
            raise UsageError(f"{f}: {e.strerror}") from None
        except ValueError as e:
            raise UsageError(f"{f}: not a qrc JSON report ({str(e).splitlines()[0]})") from None
    return records.merge_reports(docs)


def _matrix_run(args: argparse.Namespace) -> int:
    from harness.report.matrix import build_matrix, to_html, to_markdown
    from harness.report.runner import prepare_dir

    _check_profile(args.profile)

    out = prepare_dir(Path(args.out), "--out")
    order: list[tuple[str, str]] = []
    rc = 0
    if args.from_json:
        if args.qemu_dir or args.extra or args.profile:
            raise UsageError(
                "--from-json draws from reports: no --qemu-dir, --profile or pytest arguments"
            )
        doc = _load_reports(args.from_json)
        if args.marker:
            doc["cases"] = [c for c in doc["cases"] if args.marker in (c.get("markers") or [])]
    else:
        if args.marker:
            raise UsageError("--marker filters --from-json reports; to run, select with -m")
        all_builds = not args.qemu_dir
        builds = _resolve_builds(args.qemu_dir, all_builds)
        report_dir = prepare_dir(Path(args.report_dir), "--report-dir")
        pargs = _pytest_args(
            args.qemu_dir, args.all, args.extra, all_builds=all_builds, profile=args.profile
        )
        result = _run_cases("qrc matrix", args, builds, pargs, report_dir)
        if result is None:
            return 130
        labels = [_child_dir(d) for d in args.qemu_dir] or [b.label for b, _ in builds]
        order = [(label, p.version) for label, (_, p) in zip(labels, builds, strict=True)]
        rc = _exit_for(result.returncode, result.doc, result.log)
        doc = result.doc or {"cases": []}
    m = build_matrix(doc["cases"], order)
    md, page = out / "matrix.md", out / "matrix.html"
    try:
        md.write_text(to_markdown(m))
        page.write_text(to_html(m))
    except OSError as e:
        raise ReportPathError(f"--out {out}: cannot write the matrix: {e.strerror}") from None
    differ = len(m.differing)
    print(
        f"matrix: {os.path.relpath(md)}, {os.path.relpath(page)}: {plural(len(m.rows), 'case')} "
        f"x {plural(len(m.columns), 'build')}, {plural(differ, 'row')} "
        f"{verb(differ, 'differs', 'differ')} between builds"
    )
    return rc


# --- bisect -------------------------------------------------------------------

_UNTESTABLE = (BuildNotFound, BinaryNotExecutable, NoReplication, ProbeError)


def _bisect_configure(p: argparse.ArgumentParser) -> None:
    from harness.report.runner import PROGRESS_MODES

    p.add_argument("--qemu-dir", required=True, metavar="BUILD", help="the QEMU build tree to test")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("-k", dest="keyword", metavar="EXPR", help="cases matching pytest's -k EXPR")
    sel.add_argument("-m", dest="markexpr", metavar="MARKEXPR", help="cases with these markers")
    sel.add_argument("--case", action="append", metavar="ID", help="a case's node id (repeatable)")
    sel.add_argument("--trace", metavar="FILE", help="replay an operation trace (qrc replay)")
    built = p.add_mutually_exclusive_group()
    built.add_argument(
        "--build",
        dest="build",
        action="store_true",
        default=None,
        help="first build the binaries the harness runs (make, or ninja: "
        f"{' '.join(_BUILD_TARGETS)}); a build that fails skips the commit (125). The "
        "default when BUILD is a build tree (it has build.ninja, or a Makefile that drives it)",
    )
    built.add_argument(
        "--no-build", dest="build", action="store_false", help="test the binaries as they are"
    )
    _profile_option(p)
    p.add_argument(
        "--find-fix",
        action="store_true",
        help="look for the commit that made the selected cases pass: exit 0 (old) while "
        "they fail, 1 (new) once they pass; with git bisect start --term-old=broken "
        "--term-new=fixed",
    )
    p.add_argument(
        "--report-dir",
        metavar="DIR",
        default=None,
        help="keep junit.xml, report.json, build.log and artifacts here (default: a "
        "temporary directory, removed; keeps the QEMU checkout clean)",
    )
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto", help="as for qrc run")


def _bisect_say(verdict: str, text: str) -> None:
    print(f"qrc bisect: {verdict}: {text}", flush=True)


def _bisect_run(args: argparse.Namespace) -> int:
    try:
        _check_profile(args.profile)
        from harness.report.runner import prepare_dir

        report_dir = prepare_dir(Path(args.report_dir), "--report-dir") if args.report_dir else None
        if not _bisect_build(args, report_dir):
            return BISECT_SKIP
    except HarnessError as e:
        print(f"qrc bisect: {e} (aborting the bisection: {BISECT_ABORT})", file=sys.stderr)
        return BISECT_ABORT
    try:
        build = find_build(args.qemu_dir, os.environ)
        found = probe(build)
        require_replication(found)
    except _UNTESTABLE as e:
        print(f"qrc bisect: cannot test this build, skip (125): {e}", file=sys.stderr)
        return BISECT_SKIP
    try:
        if args.trace:
            return _bisect_trace(args.trace, args.qemu_dir, args.profile, args.find_fix)
        return _bisect_cases(args, build, found, report_dir)
    except _UNTESTABLE as e:
        print(f"qrc bisect: cannot test this build, skip (125): {e}", file=sys.stderr)
        return BISECT_SKIP
    except HarnessError as e:
        print(f"qrc bisect: {e} (aborting the bisection: {BISECT_ABORT})", file=sys.stderr)
        return BISECT_ABORT


def _bisect_build(args: argparse.Namespace, report_dir: Path | None) -> bool:
    """Build the tree first when asked (or by default, for a build tree); False when
    the build failed (its last lines are on stderr, the whole output in build.log)."""
    from harness.buildtree import build, build_argv

    where = Path(args.qemu_dir)
    argv = build_argv(where) if where.is_dir() else None
    if args.build is False or (args.build is None and argv is None):
        return True
    if argv is None:
        raise UsageError(
            f"--build: {args.qemu_dir} is not a build tree (no build.ninja, no Makefile "
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
            print(
                f"qrc bisect: cannot test this build, skip (125): the build failed "
                f"({argv[0]} exited with status {result.returncode} after "
                f"{result.seconds:.0f} s: {result.command}); its last lines:",
                file=sys.stderr,
            )
            for line in result.tail:
                print(f"  {line}", file=sys.stderr)
            if report_dir is not None:
                print(f"the whole output: {log}", file=sys.stderr)
            return False
    finally:
        if report_dir is None:
            shutil.rmtree(logdir, ignore_errors=True)
    _bisect_say("built", f"{args.qemu_dir} in {result.seconds:.0f} s ({result.command})")
    return True


def _bisect_cases(
    args: argparse.Namespace, build: QemuBuild, found: Probe, report_dir: Path | None
) -> int:
    from harness.report import records
    from harness.report.runner import Progress, interrupted_text, run_pytest

    selection: list[str] = []
    if args.case:
        selection = list(args.case)
    elif args.keyword is not None:
        selection = ["-k", args.keyword]
    elif args.markexpr is not None:
        selection = ["-m", args.markexpr]
    quick = not selection
    keep = report_dir is not None
    rdir = report_dir or Path(tempfile.mkdtemp(prefix="qrc-bisect-"))
    progress = Progress(sys.stdout, args.progress)
    try:
        result = run_pytest(
            _pytest_args([args.qemu_dir], not quick, selection, profile=args.profile),
            rdir,
            progress,
        )
    finally:
        if not keep:
            shutil.rmtree(rdir, ignore_errors=True)
    if result.interrupted:
        print(f"qrc bisect: {interrupted_text(result, progress.total, keep)}", file=sys.stderr)
        return 130
    where = f"QEMU {found.version} at {build.system}"
    if args.profile:
        where += f", judged by model profile {args.profile}"
    cases = result.doc["cases"] if result.doc else []
    if result.returncode == 5:
        raise NoCases("the selection matched no case")
    bad = [r for r in cases if r["outcome"] in records.BAD]
    if bad and all(r["when"] == "collect" for r in bad):
        raise RunnerError(f"a case file does not import: {bad[0]['nodeid']}: {bad[0]['message']}")
    fails, passes = (0, 1) if args.find_fix else (1, 0)
    if bad or result.returncode == 1:
        verdict = "old (0), not fixed" if args.find_fix else "bad (1)"
        _bisect_say(
            verdict,
            f"{len(bad)} of {len(cases)} selected {'result' if len(cases) == 1 else 'results'} "
            f"{verb(len(bad), 'fails', 'fail')} on {where}",
        )
        for r in bad:
            print(f"  {r['outcome'].upper()} {r['nodeid']}: {r.get('message') or ''}")
            if keep and r.get("artifacts"):
                print(f"    artifacts: {r['artifacts']}")
        return fails
    if result.returncode != 0:
        raise RunnerError(f"pytest exited with status {result.returncode}; see {result.log}")
    good = [r for r in cases if r["outcome"] in (*records.GOOD, "xpassed")]
    if not good:
        reasons = sorted({str(r.get("reason")) for r in cases})
        why = "; ".join(reasons)
        _bisect_say("skip (125)", f"every selected case was skipped on {where}: {why}")
        return BISECT_SKIP
    _bisect_say(
        "new (1), fixed" if args.find_fix else "good (0)",
        f"{plural(len(good), 'selected result')} {verb(len(good), 'passes', 'pass')} on {where}",
    )
    return passes


def _bisect_trace(trace: str, qemu_dir: str, profile: str | None, find_fix: bool) -> int:
    replay = _load_replay()
    path, build = str(Path(trace).absolute()), str(Path(qemu_dir).absolute())
    rc = replay(path, build) if profile is None else replay(path, build, profile)
    if rc in (0, 1):
        return 1 - rc if find_fix else rc
    if rc == BISECT_SKIP:
        return rc
    raise RunnerError(f"replay of {trace} exited with status {rc}")


# --- replay -------------------------------------------------------------------


def _load_replay() -> Callable[..., int]:
    """harness.differential.replay.replay_main, imported only when asked for."""
    import importlib

    try:
        module = importlib.import_module("harness.differential.replay")
    except ModuleNotFoundError as e:
        if e.name in ("harness.differential", "harness.differential.replay"):
            raise ReplayUnavailable("replay is not available yet") from None
        raise
    fn = getattr(module, "replay_main", None)
    if not callable(fn):
        raise ReplayUnavailable("replay is not available yet")
    return fn  # type: ignore[no-any-return]


def _replay_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="TRACE", help="an operation trace (trace-N.json of a failure)")
    p.add_argument("--qemu-dir", metavar="DIR", default=None, help="the build to replay against")


def _replay_run(args: argparse.Namespace) -> int:
    replay = _load_replay()
    return replay(str(Path(args.trace).absolute()), args.qemu_dir)


# --- merge --------------------------------------------------------------------


def _merge_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help="merged report (.json or .xml)")
    p.add_argument("inputs", nargs="+", metavar="REPORT", help="shards' report.json or junit.xml")


def _merge_junit(paths: Sequence[str]) -> ET.ElementTree[ET.Element]:
    root = ET.Element("testsuites")
    for f in paths:
        try:
            top = ET.parse(f).getroot()
        except OSError as e:
            raise UsageError(f"{f}: {e.strerror}") from None
        except ET.ParseError as e:
            raise UsageError(f"{f}: not JUnit XML ({e})") from None
        if top.tag == "testsuites":
            root.extend(list(top))
        elif top.tag == "testsuite":
            root.append(top)
        else:
            raise UsageError(f"{f}: not JUnit XML (root element {top.tag})")
    return ET.ElementTree(root)


def _merge_run(args: argparse.Namespace) -> int:
    from harness.report import records

    out = Path(args.out)
    try:
        if out.suffix == ".json":
            records.write_json(out, _load_reports(args.inputs))
        elif out.suffix == ".xml":
            _merge_junit(args.inputs).write(out, encoding="utf-8", xml_declaration=True)
        else:
            raise UsageError(f"--out {out}: name it .json (JSON reports) or .xml (JUnit)")
    except OSError as e:
        raise ReportPathError(f"--out {out}: cannot write there: {e.strerror}") from None
    print(f"merged {plural(len(args.inputs), 'report')} into {out}")
    return 0


# --- fetch --------------------------------------------------------------------


def _fetch_configure(p: argparse.ArgumentParser) -> None:
    from harness.releases import FETCHED

    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"releases to fetch (default: all of {', '.join(r.name for r in FETCHED)})",
    )


def _fetch_run(args: argparse.Namespace) -> int:
    from harness.fetch import fetch

    def say(line: str) -> None:
        print(f"{PROG} fetch: {line}", flush=True)

    fetch(args.names, project_root(), say)
    return 0


def _bisect_epilog() -> str:
    rows = "\n".join(_code_rows(BISECT_CODES))
    return (
        "git bisect run's protocol; the only exit codes:\n" + rows + "\n\n"
        "in a QEMU checkout configured once in ./build (each step rebuilds the five\n"
        "binaries first: build is a build tree), the commit that fixed block_resize's\n"
        "error (--find-fix: exit 0 while the cases still fail):\n"
        "  git bisect start --term-old=broken --term-new=fixed v9.0.0 v7.2.0\n"
        "  git bisect run /path/to/.venv/bin/qrc bisect --qemu-dir build --profile 9.0 \\\n"
        "      --find-fix -k test_block_resize_names_the_blocker\n"
        "the same commit as the first one that departs from 7.2's behaviour:\n"
        "  git bisect start v9.0.0 v7.2.0\n"
        "  git bisect run /path/to/.venv/bin/qrc bisect --qemu-dir build --profile 7.2 \\\n"
        "      -k test_block_resize_names_the_blocker"
    )


SUBCOMMANDS: list[Subcommand] = [
    Subcommand("probe", "what a QEMU build can do", _probe_configure, _probe_run),
    Subcommand(
        "run",
        "run the conformance cases (pytest -n auto, the quick set unless --all); "
        "other arguments go to pytest",
        lambda p: _run_options(p, "default: iotests' variables, then PATH"),
        _run_run,
        passthrough=True,
    ),
    Subcommand(
        "matrix",
        "run the cases against several builds; write matrix.md and matrix.html",
        _matrix_configure,
        _matrix_run,
        passthrough=True,
    ),
    Subcommand(
        "bisect",
        "test one QEMU build for git bisect run (exit 0 good, 1 bad, 125 skip)",
        _bisect_configure,
        _bisect_run,
        epilog=_bisect_epilog(),
    ),
    Subcommand(
        "replay", "replay an operation trace against a build", _replay_configure, _replay_run
    ),
    Subcommand(
        "merge", "merge shards' JSON reports or JUnit XML files", _merge_configure, _merge_run
    ),
    Subcommand(
        "fetch",
        "unpack Debian's QEMU releases into .qemu/<release> (pinned versions; idempotent)",
        _fetch_configure,
        _fetch_run,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="QEMU block replication conformance harness",
        epilog=_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help,
            epilog=cmd.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(p)
        p.set_defaults(_cmd=cmd)
    return parser


def _subcommand_of(argv: Sequence[str]) -> str | None:
    names = {c.name for c in SUBCOMMANDS}
    return next((a for a in argv if a in names), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qrc`: parse, dispatch, map errors to one line and a code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    bisecting = _subcommand_of(argv) == "bisect"
    try:
        try:
            args, extra = build_parser().parse_known_args(argv)
        except SystemExit as exc:  # --help (0) or a usage error (2)
            code = exc.code if isinstance(exc.code, int) else 2
            return BISECT_ABORT if bisecting and code != 0 else code
        cmd: Subcommand = args._cmd
        if extra and not cmd.passthrough:
            print(
                f"{PROG} {cmd.name}: unrecognized arguments: {' '.join(extra)} "
                f"(see '{PROG} {cmd.name} --help')",
                file=sys.stderr,
            )
            return BISECT_ABORT if bisecting else UsageError.exit_code
        args.extra = extra[1:] if extra[:1] == ["--"] else extra
        return cmd.run(args)
    except HarnessError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `qrc probe | head`: the reader left; nothing more to say.
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
