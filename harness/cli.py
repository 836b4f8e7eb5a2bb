"""The `qrc` command: its parser, its exit codes, and one short pair of functions a
subcommand (add its options; run it), registered in `SUBCOMMANDS`.

A run function only turns the parsed options into a call: what a command decides lives
beside its data (harness.report.runner: which builds, pytest's arguments, the run and
its exit code; harness.bisect: a bisection step and its verdict; harness.probe,
harness.fetch, harness.report.records and .matrix). Bad input ends in one line on stderr
and a distinct exit code (see harness.errors and EXIT_CODES below), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from harness import bisect, coverage, project_root
from harness.builds import QemuBuild, find_build, installed_builds
from harness.buildtree import TARGETS as _BUILD_TARGETS
from harness.environment import from_exception
from harness.errors import BISECT_ABORT, HarnessError, UsageError
from harness.exit_codes import BISECT_CODES, code_rows, codes_text
from harness.fetch import fetch
from harness.probe import Probe, probe, probe_json, probe_text
from harness.releases import FETCHED
from harness.report import records
from harness.report.display import PROGRESS_MODES
from harness.report.matrix import build_matrix, write_matrix
from harness.report.runner import RunResult, child_dir, exit_code, prepare_dir, run_suite
from harness.words import plural

PROG = "qrc"


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


def _probe_run(args: argparse.Namespace) -> int:
    builds = installed_builds() if args.all else [find_build(args.qemu_dir, os.environ)]
    results = [(b, probe(b, use_cache=not args.no_cache)) for b in builds]
    if args.json:
        docs = [probe_json(b, r) for b, r in results]
        print(json.dumps(docs if args.all else docs[0], indent=2, sort_keys=True))
    else:
        print("\n\n".join(probe_text(b, r) for b, r in results))
    return 0


# --- run and matrix: shared ---------------------------------------------------


def _profile_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        metavar="NAME",
        default=None,
        help="judge every build against this release's model profile (e.g. 9.0) instead of "
        "the one its probed version picks (a development version such as 8.2.50 picks "
        "the last release's, bugs included)",
    )


def _run_options(p: argparse.ArgumentParser, what: str) -> None:
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


def _check_profile(args: argparse.Namespace) -> None:
    """--profile NAME: an unknown name is one usage line, before anything runs."""
    if args.profile is not None:
        from harness.judge import named_profile  # the model: only when a profile is named

        named_profile(args.profile)


def _suite(
    title: str, args: argparse.Namespace, all_builds: bool
) -> tuple[list[tuple[QemuBuild, Probe]], RunResult | None]:
    """runner.run_suite with the options of `qrc run` and `qrc matrix`."""
    _check_profile(args)
    return run_suite(
        title, args.qemu_dir, args.extra, all_cases=args.all, all_builds=all_builds,
        profile=args.profile, report_dir=args.report_dir, progress_mode=args.progress,
    )  # fmt: skip


def _run_run(args: argparse.Namespace) -> int:
    _, result = _suite("qrc run", args, False)
    return 130 if result is None else exit_code(result)


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


def _matrix_run(args: argparse.Namespace) -> int:
    out = prepare_dir(Path(args.out), "--out")
    order: list[tuple[str, str]] = []
    rc = 0
    if args.from_json:
        if args.qemu_dir or args.extra or args.profile:
            raise UsageError(
                "--from-json draws from reports: no --qemu-dir, --profile or pytest arguments"
            )
        doc = records.load_reports(args.from_json, args.marker)
    else:
        if args.marker:
            raise UsageError("--marker filters --from-json reports; to run, select with -m")
        builds, result = _suite("qrc matrix", args, not args.qemu_dir)
        if result is None:
            return 130
        labels = [child_dir(d) for d in args.qemu_dir] or [b.label for b, _ in builds]
        order = [(label, p.version) for label, (_, p) in zip(labels, builds, strict=True)]
        rc = exit_code(result)
        doc = result.doc or {"cases": []}
    print(write_matrix(out, build_matrix(doc["cases"], order)))
    return rc


# --- bisect -------------------------------------------------------------------


def _bisect_configure(p: argparse.ArgumentParser) -> None:
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


def _bisect_run(args: argparse.Namespace) -> int:
    selection = tuple(args.case or ())  # pytest's arguments; none: the quick set
    if args.keyword is not None:
        selection = ("-k", args.keyword)
    elif args.markexpr is not None:
        selection = ("-m", args.markexpr)
    request = bisect.Request(
        args.qemu_dir, selection, args.trace, args.build, args.profile, args.find_fix,
        args.report_dir, args.progress,
    )  # fmt: skip
    return bisect.run(request)


# --- replay -------------------------------------------------------------------


def _replay_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="TRACE", help="an operation trace (trace-N.json of a failure)")
    p.add_argument("--qemu-dir", metavar="DIR", default=None, help="the build to replay against")


def _replay_run(args: argparse.Namespace) -> int:
    from harness.differential.replay import replay_main  # hypothesis: only when asked

    return replay_main(str(Path(args.trace).absolute()), args.qemu_dir)


# --- export -------------------------------------------------------------------


def _export_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", metavar="CASE", help="one case's node id (cases/test_x.py::test_y)")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="where reproduce.py and tests/qemu-iotests/tests/NAME(.out) go "
        "(default: exported/NAME)",
    )
    p.add_argument(
        "--qemu-dir", metavar="DIR", default=None, help="the build to run it on (as qrc run)"
    )
    p.add_argument("--name", metavar="NAME", default=None, help="the iotest's name")
    _profile_option(p)
    p.add_argument(
        "--no-check",
        action="store_true",
        help="do not run the written reproduce.py once on the build to check it",
    )


def _export_run(args: argparse.Namespace) -> int:
    from harness.export.command import export, summary  # only when asked

    done = export(args.case, args.out, args.qemu_dir, args.name, args.profile, not args.no_check)
    text, code = summary(done)
    print(text)
    return code


# --- merge --------------------------------------------------------------------


def _merge_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="FILE", help="merged report (.json or .xml)")
    p.add_argument("inputs", nargs="+", metavar="REPORT", help="shards' report.json or junit.xml")


def _merge_run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    records.merge_files(out, args.inputs)
    print(f"merged {plural(len(args.inputs), 'report')} into {out}")
    return 0


# --- coverage -----------------------------------------------------------------


def _coverage_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qemu-dir", required=True, metavar="BUILD", help="built with --enable-gcov")
    _profile_option(p)
    p.add_argument(
        "--report-dir", default="reports", metavar="DIR",
        help="the run's reports, counts (gcov/), coverage.txt and .json (default: ./reports)",
    )  # fmt: skip
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto", help="as for qrc run")
    p.add_argument("--gcov", default="gcov", metavar="PROG", help="the compiler's gcov (gcov)")


def _coverage_run(args: argparse.Namespace) -> int:
    _check_profile(args)
    return coverage.run(
        args.qemu_dir, args.extra, report_dir=args.report_dir, progress_mode=args.progress,
        profile=args.profile, gcov=args.gcov,
    )  # fmt: skip


# --- fetch --------------------------------------------------------------------


def _fetch_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"releases to fetch (default: all of {', '.join(r.name for r in FETCHED)})",
    )


def _fetch_run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f"{PROG} fetch: {line}", flush=True)

    fetch(args.names, project_root(), say)
    return 0


def _bisect_epilog() -> str:
    rows = "\n".join(code_rows(BISECT_CODES))
    return f"git bisect run's protocol; the only exit codes:\n{rows}\n\n{bisect.EXAMPLE}"


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
        "coverage",
        "line and branch coverage of the filter's code on a build configured with "
        "--enable-gcov: every case (or those pytest's arguments select), each in a fresh QEMU",
        _coverage_configure,
        _coverage_run,
        passthrough=True,
        epilog=coverage.EXAMPLE,
    ),
    Subcommand(
        "merge", "merge shards' JSON reports or JUnit XML files", _merge_configure, _merge_run
    ),
    Subcommand(
        "export",
        "write one case as a standalone reproduce.py and a QEMU iotest, from what it did",
        _export_configure,
        _export_run,
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
        epilog=codes_text(),
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
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `qrc probe | head`: the reader left; nothing more to say.
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 1
    except (HarnessError, OSError) as exc:
        err = from_exception(exc) or exc  # qrc's own I/O on a full disk...: one line too
        if not isinstance(err, HarnessError):
            raise
        print(err.one_line(), file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
