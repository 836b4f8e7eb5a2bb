"""The `qrc` command.

Each subcommand is a pair of small functions (add its options, run it)
registered in `SUBCOMMANDS`; later ones (run, matrix, bisect, replay) live
in their own modules and are added to that table.  Bad input ends in one
line on stderr and a distinct exit code (see harness.errors), never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from harness.builds import QemuBuild, find_build, known_builds
from harness.errors import BuildNotFound, HarnessError
from harness.probe import REQUIRED_COMMANDS, Probe, probe, replication_verdict

PROG = "qrc"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit code 2 as usual)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def project_root() -> Path:
    """The checkout this package lives in (where .qemu/ is)."""
    return Path(__file__).resolve().parent.parent


# --- probe -----------------------------------------------------------------


def _probe_configure(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--qemu-dir", metavar="DIR", help="build tree, install prefix or unpacked packages"
    )
    where.add_argument("--all", action="store_true", help="every known build (PATH and .qemu/10.0)")
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
            raise BuildNotFound("no QEMU on PATH and no .qemu/10.0: run scripts/setup.sh")
    else:
        builds = [find_build(args.qemu_dir, os.environ)]
    results = [(b, probe(b, use_cache=not args.no_cache)) for b in builds]
    if args.json:
        docs = [_probe_json(b, r) for b, r in results]
        print(json.dumps(docs if args.all else docs[0], indent=2, sort_keys=True))
    else:
        print("\n\n".join(_probe_text(b, r) for b, r in results))
    return 0


SUBCOMMANDS: list[Subcommand] = [
    Subcommand("probe", "what a QEMU build can do", _probe_configure, _probe_run),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="QEMU block replication conformance harness")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `qrc`: parse, dispatch, map errors to one line and a code."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help (0) or a usage error (2)
            return exc.code if isinstance(exc.code, int) else 2
        run: Callable[[argparse.Namespace], int] = args._run
        return run(args)
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
