"""`qrc export CASE`: run one case with the recorder on, write its reproducer and iotest,
and run the reproducer once on the same build to check it says what the case said.

The case runs in a pytest of its own (serial, a fresh QEMU per machine, its TMPDIR and
basetemp in a private directory: every path it makes is one the export can replace
with a placeholder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import project_root
from harness.builds import QemuBuild
from harness.errors import NoCases, NotExportable, RunnerError, UsageError
from harness.export import writer
from harness.export.plan import Plan, plan
from harness.export.recorder import ENV
from harness.report.runner import absolutize, child_dir, prepare_dir, resolve_builds
from harness.tmp import private_dir
from harness.words import plural

CASE_DEADLINE = 300.0
CHECK_DEADLINE = 120.0


@dataclass(frozen=True)
class Exported:
    plan: Plan
    reproduce: Path
    iotest: Path
    iotest_out: Path
    check: int | None  # reproduce.py's exit status on the exporting build (None: not run)
    check_output: str
    seconds: float


def repro_env(build: QemuBuild, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that runs an exported reproduce.py on `build` (iotests' variables,
    the prefix's loader and data directory, its module directory)."""
    env = dict(os.environ if base is None else base)
    env.update(
        QEMU_PROG=build.system,
        QEMU_IMG_PROG=build.img,
        QEMU_IO_PROG=build.io,
        QEMU_NBD_PROG=build.nbd,
        QSD_PROG=build.qsd,
        REPRO_LAUNCHER=" ".join(build.launcher),
        REPRO_QEMU_ARGS=" ".join(build.data_args()),
    )
    env.update(build.env())
    return env


def record(case: str, qemu_dir: str | None, profile: str | None, work: Path) -> dict[str, object]:
    """Run `case` under the recorder; its recording."""
    rec = work / "recording.json"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "harness.export.recorder"]
    argv += ["-p", "no:xdist", "-p", "no:randomly", "-o", "testpaths=cases", "--fresh-qemu"]
    argv += [f"--basetemp={work / 'pt'}"]
    if qemu_dir is not None:
        argv.append(f"--qemu-dir={child_dir(qemu_dir)}")
    if profile is not None:
        argv.append(f"--profile={profile}")
    argv += absolutize([case], Path.cwd())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "QRC_"))}
    env.update({ENV: str(rec), "TMPDIR": str(work), "QRC_FRESH_QEMU": "1", "QRC_PIN": "0"})
    try:
        proc = subprocess.run(
            argv, cwd=project_root(), env=env, capture_output=True, text=True,
            timeout=CASE_DEADLINE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RunnerError(f"{case}: no result within {CASE_DEADLINE:g} s") from None
    said = _last(proc.stdout + proc.stderr)
    if proc.returncode == 4 and ("not found" in said or "no match" in said):
        raise NoCases(f"no case matched {case} ({said.removeprefix('ERROR: ').strip('()')})")
    if proc.returncode == 4:
        raise UsageError(f"pytest refused the case: {said}")
    if not rec.exists():
        raise RunnerError(f"the case ran without a recording: {_last(proc.stdout + proc.stderr)}")
    doc: dict[str, object] = json.loads(rec.read_text())
    selected = doc["case"].get("selected", []) if isinstance(doc["case"], dict) else []
    if not selected:
        raise NoCases(f"no case matched {case}")
    if len(selected) > 1:
        raise UsageError(f"{case} selects {len(selected)} cases; export takes one node id")
    return doc


def _last(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def host_paths(build: QemuBuild, work: Path) -> list[str]:
    """Paths of this machine an exported file must not name."""
    paths = {str(work), str(project_root()), os.path.expanduser("~")}
    paths |= {os.path.dirname(p) for p in build.binaries().values()}
    paths |= {p for p in (build.module_dir, build.data_dir) if p}
    return sorted(p for p in paths if len(p) > 4)


def _names(text: str, path: str) -> bool:
    """Does `text` name `path` (not as the tail of a longer name: "$P/usr/bin")?"""
    return re.search(rf"(?<![\w$/.-]){re.escape(path)}(?![\w.-])", text) is not None


def export(
    case: str,
    out: str | None,
    qemu_dir: str | None,
    name: str | None = None,
    profile: str | None = None,
    check: bool = True,
) -> Exported:
    """Export `case` (a node id) as run on the build `qemu_dir` (else iotests' variables,
    else PATH): its reproduce.py and iotest in `out`."""
    t0 = time.monotonic()
    (build, _found), *_ = resolve_builds([qemu_dir] if qemu_dir else [], False)
    work = private_dir("qrc-export-")
    try:
        recording = record(case, qemu_dir, profile, work)
        p = plan(recording)
        name = name or writer.iotest_name(p.nodeid)
        where = prepare_dir(Path(out or f"exported/{name}"), "--out")
        texts = {
            where / "reproduce.py": writer.reproduce_py(p),
            where / "tests/qemu-iotests/tests" / name: writer.iotest(p, name),
            where / "tests/qemu-iotests/tests" / f"{name}.out": writer.iotest_out(p),
        }
        for path, text in texts.items():
            leaked = [h for h in host_paths(build, work) if _names(text.split("\n", 1)[-1], h)]
            if leaked:
                raise NotExportable(f"{path.name} would name a path of this machine: {leaked[0]}")
        for path, text in texts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        repro, test, test_out = texts
        repro.chmod(0o755)
        test.chmod(0o755)
        status, output = (None, "") if not check else run_reproducer(repro, build)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Exported(p, repro, test, test_out, status, output, time.monotonic() - t0)


def run_reproducer(path: Path, build: QemuBuild) -> tuple[int, str]:
    """reproduce.py's exit status and output on `build`."""
    try:
        proc = subprocess.run(
            [sys.executable, str(path)], env=repro_env(build), capture_output=True, text=True,
            timeout=CHECK_DEADLINE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return 2, f"no result within {CHECK_DEADLINE:g} s"
    return proc.returncode, proc.stdout + proc.stderr


def summary(e: Exported) -> tuple[str, int]:
    """What `qrc export` prints, and its exit code: 0 when the reproducer, run on the
    exporting build, says what the case said (0 for a pass, 1 for a failure)."""
    p = e.plan
    wanted = 0 if p.outcome == "passed" else 1
    lines = [
        f"qrc export: {p.nodeid} on QEMU {p.version} ({p.outcome}"
        + (f": {p.failure}" if p.failure else "")
        + f"), {plural(p.steps, 'step')}",
        f"  {e.reproduce}",
        f"  {e.iotest} (+ .out)",
    ]
    code = 0
    if e.check is not None:
        agrees = e.check == wanted
        lines.append(
            f"  reproduce.py on this build: exit {e.check} "
            + ("(as the case)" if agrees else f"(the case says {wanted}: the export is wrong)")
        )
        if not agrees:
            lines += ["  " + ln for ln in e.check_output.strip().splitlines()[-12:]]
            code = 1
    lines.append(f"  ({e.seconds:.1f} s)")
    return "\n".join(lines), code
