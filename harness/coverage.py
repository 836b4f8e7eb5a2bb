"""`qrc coverage`: which lines and branches of the filter's code the cases reach.

On a QEMU build tree configured with `--enable-gcov`, every object has its gcov notes
(`OBJ.gcno`, beside `OBJ.o`), and every process of the build (QEMU, the storage daemon,
qemu-img, qemu-io) adds its counts at `exit()` to `OBJ.gcda`, or, when `GCOV_PREFIX` is
set, to the same absolute path under that directory. A run's counts go under
`REPORT_DIR/gcov/`, emptied first (the reset): the build tree's own counts (an iotests
run's) are neither read nor disturbed, and two runs on one build do not mix.

A QEMU that dies by a signal writes no counts, so every case runs in a fresh QEMU
(`--fresh-qemu`): a pooled QEMU serves many cases, and a later one that kills it would
take all their counts with it. A case that kills a QEMU on purpose loses that QEMU's
counts alone.

Reported: for each of the filter's files (`block/replication.c`, the top-level
`replication.c` with the `*_all` walk COLO calls), its lines executed, its branches taken
and its functions entered, as gcov counts them (`gcov --json-format`; `gcov -b` prints
the same figures), and every line no case reached, with its source text. The parsing and
the report are pure functions of gcov's JSON (tests/test_coverage.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import NoCoverageData

EXAMPLE = """\
examples:
  qrc coverage --qemu-dir ~/src/qemu/build              # every case
  qrc coverage --qemu-dir ~/src/qemu/build -m quick     # the quick set
  qrc coverage --qemu-dir ~/src/qemu/build cases/test_checkpoint.py -k granularity
(configure QEMU with --enable-gcov --enable-replication; counts: REPORT_DIR/gcov/)"""

# The filter's sources, relative to the QEMU source tree.
SOURCES = ("block/replication.c", "replication.c")
# What an unreached line may be without a case missing: the default of a switch whose
# other values are impossible.
IMPOSSIBLE = ("abort();", "g_assert_not_reached();")
COUNTS_DIR = "gcov"
GCOV_TIMEOUT = 60.0


@dataclass(frozen=True)
class FileCoverage:
    """One source file's counts: line -> times executed, line -> its branches' counts,
    function -> times entered; `text`: the source's lines (1-based: text[n - 1])."""

    source: str
    lines: Mapping[int, int]
    branches: Mapping[int, tuple[int, ...]]
    functions: Mapping[str, int]
    text: Sequence[str] = field(default=(), repr=False)

    @property
    def lines_hit(self) -> int:
        return sum(1 for c in self.lines.values() if c > 0)

    @property
    def branches_total(self) -> int:
        return sum(len(b) for b in self.branches.values())

    @property
    def branches_taken(self) -> int:
        return sum(1 for b in self.branches.values() for c in b if c > 0)

    @property
    def functions_hit(self) -> int:
        return sum(1 for c in self.functions.values() if c > 0)

    def source_line(self, n: int) -> str:
        return self.text[n - 1].strip() if 0 < n <= len(self.text) else ""

    def missed(self) -> list[tuple[int, str]]:
        """The lines no case reached: (line, its source text), in order."""
        return [(n, self.source_line(n)) for n, c in sorted(self.lines.items()) if c == 0]

    def impossible(self) -> int:
        """How many of the missed lines are an abort() of an impossible case."""
        return sum(1 for _, t in self.missed() if t in IMPOSSIBLE)


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


# --- the build's notes --------------------------------------------------------------


def _mangled(source: str) -> str:
    """meson's name of a source's object in its target's `*.p` directory, as notes."""
    return source.replace("/", "_") + ".gcno"


def find_notes(build_dir: Path) -> dict[str, list[Path]]:
    """source -> the gcov notes of its objects in the build tree (a source built into
    several targets has several). NoCoverageData, in one line, for a directory that is
    not a build tree or has no notes for block/replication.c."""
    if not (build_dir / "build.ninja").is_file():
        raise NoCoverageData(
            f"{build_dir}: not a QEMU build tree (no build.ninja); coverage needs one "
            "configured with --enable-gcov"
        )
    wanted = {_mangled(s): s for s in SOURCES}
    found: dict[str, list[Path]] = {s: [] for s in SOURCES}
    for dirpath, _, files in os.walk(build_dir):
        if not dirpath.endswith(".p"):
            continue
        for f in files:
            if f in wanted:
                found[wanted[f]].append(Path(dirpath, f).resolve())
    if not found[SOURCES[0]]:
        raise NoCoverageData(
            f"{build_dir}: no gcov data for {SOURCES[0]} (no {_mangled(SOURCES[0])}): "
            "configure QEMU with --enable-gcov (and --enable-replication) and build it"
        )
    return {s: sorted(paths) for s, paths in found.items() if paths}


def find_gcov(name: str) -> str:
    """The gcov to read the counts with (the compiler's own: `gcov-12` for gcc 12)."""
    path = shutil.which(name)
    if path is None:
        raise NoCoverageData(f"{name} not found: it reads the counts (install gcc, or --gcov PROG)")
    return path


# --- the run's counts ---------------------------------------------------------------


def reset(counts: Path) -> Path:
    """An empty directory for a run's counts (GCOV_PREFIX): the previous run's go."""
    shutil.rmtree(counts, ignore_errors=True)
    counts.mkdir(parents=True)
    return counts


def environment(counts: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The run's environment: every process of the build writes its counts under
    `counts` (at the object's absolute path)."""
    env = dict(os.environ if base is None else base)
    env["GCOV_PREFIX"] = str(counts)
    env.pop("GCOV_PREFIX_STRIP", None)
    return env


def data_file(counts: Path, notes: Path) -> Path:
    """Where a process writes the counts of the object `notes` belongs to."""
    return counts / notes.parent.relative_to(notes.anchor) / (notes.stem + ".gcda")


def counted(counts: Path) -> bool:
    """Did any process of the build write counts under `counts`?"""
    return any(f.endswith(".gcda") for _, _, files in os.walk(counts) for f in files)


def gcov_json(gcov: str, counts: Path, notes: Path) -> dict[str, Any]:
    """gcov's JSON for one object's counts (an object no process ran: all zero)."""
    gcda = data_file(counts, notes)
    gcda.parent.mkdir(parents=True, exist_ok=True)
    link = gcda.with_suffix(".gcno")  # gcov reads the notes beside the counts
    if not link.exists():
        link.symlink_to(notes)
    proc = subprocess.run(
        [gcov, "--json-format", "--stdout", "--branch-probabilities", str(gcda)],
        cwd=notes.parent,
        capture_output=True,
        timeout=GCOV_TIMEOUT,
        check=False,
    )
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise NoCoverageData(
            f"{gcov} could not read {gcda}: {why[-1] if why else f'exit {proc.returncode}'}"
        ) from None
    return doc


# --- gcov's JSON -> coverage ----------------------------------------------------------


def _source_path(doc: Mapping[str, Any], name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else Path(doc.get("current_working_directory", ".")) / path


def _is_source(doc: Mapping[str, Any], name: str, source: str) -> bool:
    """Is gcov's file `name` the source `source` (not another of SOURCES it is a suffix
    of: replication.c is not block/replication.c)?"""
    path = os.path.normpath(_source_path(doc, name))

    def ends(s: str) -> bool:
        return path.endswith(os.sep + s)

    return ends(source) and not any(len(o) > len(source) and ends(o) for o in SOURCES)


def parse(docs: Sequence[Mapping[str, Any]], source: str, text: Sequence[str] = ()) -> FileCoverage:
    """`source`'s counts in gcov's JSON documents (one an object; summed where a source
    is built into several), the headers' inline functions left out."""
    lines: dict[int, int] = {}
    branches: dict[int, list[int]] = {}
    functions: dict[str, int] = {}
    for doc in docs:
        for f in doc.get("files", ()):
            if not _is_source(doc, f["file"], source):
                continue
            for ln in f.get("lines", ()):
                n = int(ln["line_number"])
                lines[n] = lines.get(n, 0) + int(ln["count"])
                counts = [int(b["count"]) for b in ln.get("branches", ())]
                have = branches.setdefault(n, [0] * len(counts)) if counts else None
                if have is not None:
                    have += [0] * (len(counts) - len(have))
                    for i, c in enumerate(counts):
                        have[i] += c
            for fn in f.get("functions", ()):
                name = fn.get("demangled_name") or fn["name"]
                functions[name] = functions.get(name, 0) + int(fn.get("execution_count", 0))
    return FileCoverage(
        source, lines, {n: tuple(b) for n, b in branches.items()}, functions, tuple(text)
    )


def _source_text(docs: Sequence[Mapping[str, Any]], source: str) -> list[str]:
    for doc in docs:
        for f in doc.get("files", ()):
            if _is_source(doc, f["file"], source):
                try:
                    return _source_path(doc, f["file"]).read_text(errors="replace").splitlines()
                except OSError:
                    return []
    return []


def measure(notes: Mapping[str, Sequence[Path]], counts: Path, gcov: str) -> list[FileCoverage]:
    """Each source's coverage from the counts under `counts`."""
    out = []
    for source, paths in notes.items():
        docs = [gcov_json(gcov, counts, p) for p in paths]
        out.append(parse(docs, source, _source_text(docs, source)))
    return out


# --- the report -----------------------------------------------------------------------


def summary_line(f: FileCoverage) -> str:
    return (
        f"{f.source}: lines {percent(f.lines_hit, len(f.lines))} ({f.lines_hit}/{len(f.lines)}), "
        f"branches taken {percent(f.branches_taken, f.branches_total)} "
        f"({f.branches_taken}/{f.branches_total}), "
        f"functions {f.functions_hit}/{len(f.functions)}"
    )


def report_text(files: Sequence[FileCoverage], what: str) -> str:
    """The closing report: one line a file, then the lines no case reached."""
    out = [f"coverage ({what}):"]
    out += [f"  {summary_line(f)}" for f in files]
    missed = [(f, n, t) for f in files for n, t in f.missed()]
    impossible = sum(f.impossible() for f in files)
    note = f", {impossible} of them abort() of an impossible case" if impossible else ""
    out.append(f"lines no case reached ({len(missed)}{note}):" if missed else "every line reached")
    out += [f"  {f.source}:{n}: {t}" for f, n, t in missed]
    return "\n".join(out)


def report_json(files: Sequence[FileCoverage], what: str) -> dict[str, Any]:
    return {
        "what": what,
        "files": [
            {
                "source": f.source,
                "lines": {"hit": f.lines_hit, "total": len(f.lines)},
                "branches": {"taken": f.branches_taken, "total": f.branches_total},
                "functions": {"hit": f.functions_hit, "total": len(f.functions)},
                "missed": [{"line": n, "text": t} for n, t in f.missed()],
            }
            for f in files
        ],
    }


def write_reports(where: Path, files: Sequence[FileCoverage], what: str) -> str:
    """coverage.txt and coverage.json in `where`; the text."""
    text = report_text(files, what)
    (where / "coverage.txt").write_text(text + "\n")
    (where / "coverage.json").write_text(json.dumps(report_json(files, what), indent=2) + "\n")
    return text


# --- the command ------------------------------------------------------------------------


def run(
    qemu_dir: str,
    extra: Sequence[str],
    *,
    report_dir: str,
    progress_mode: str,
    profile: str | None,
    gcov: str,
) -> int:
    """`qrc coverage`: the selected cases (default: every case) against the gcov build
    tree `qemu_dir`, each in a fresh QEMU, their counts reset first; the run's summary,
    then the coverage report (also coverage.txt and coverage.json in the report
    directory). The exit code is the run's (a failed case: 1); NoCoverageData (16) when
    there is nothing to measure."""
    from harness.builds import find_build
    from harness.report import runner

    find_build(qemu_dir, os.environ)  # no QEMU there, a binary missing: their own codes
    tree = Path(qemu_dir).absolute()
    notes = find_notes(tree)
    gcov_path = find_gcov(gcov)
    builds = runner.resolve_builds([qemu_dir], False)
    where = runner.prepare_dir(Path(report_dir), "--report-dir")
    counts = reset(where / COUNTS_DIR)
    pargs = runner.pytest_args([qemu_dir], True, ["--fresh-qemu", *extra], profile=profile)
    env = environment(counts)
    result = runner.run_cases("qrc coverage", builds, pargs, where, progress_mode, profile, env)
    if result is None:
        return 130
    if not counted(counts):
        raise NoCoverageData(
            f"the run wrote no counts under {counts}: did it run the build's binaries? "
            f"(pytest's output: {result.log})"
        )
    what = f"QEMU {builds[0][1].version} ({tree}), {len(result.cases)} results, a fresh QEMU each"
    print(write_reports(where, measure(notes, counts, gcov_path), what))
    return runner.exit_code(result)
