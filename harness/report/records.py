"""One JSON record per case and QEMU build, built from pytest's phase reports.

The record is the unit of every machine-readable output: the JSON report
(`report.json`), the progress events `qrc run` displays, and the version
matrix.  Fields:

    nodeid        pytest's id, QEMU version included ("cases/x.py::test[7.2.22]")
    case          the id without the QEMU build ("cases/x.py::test"): the matrix row
    qemu_version  "7.2.22" (null for tests that use no QEMU build)
    qemu_build    the build's label (the --qemu-dir given, "PATH", ...)
    outcome       passed | failed | error | skipped | xfailed | xpassed
    duration      seconds, all phases
    markers       sorted marker names (quick, slow, primary, ...)
    reason        why skipped, or the xfail reason
    message       the failure's first line ("Divergence: ...", "MachineDied: ...")
    divergence    what a story found differed: the headline of its verdict (a Divergence, a
                  crash, a stalled commit: harness.verdicts) or of a ModelDisagrees
    environment   why the machine the harness runs on failed the case, in one line (a full
                  disk and how much was free, no file descriptors, a binary gone:
                  harness.environment); its outcome is then "error", and it has no verdict
    artifacts     the artifacts directory of a failed case, if written
    when          the phase that decided the outcome (setup, call, teardown, collect)
"""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ReportPathError, UsageError

if TYPE_CHECKING:  # the plugin's reports; imported only where pytest runs
    import pytest

FORMAT = 1
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
# the order tables show them in
OUTCOMES_SHOWN = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")
# Outcomes that count as "the case holds" (an xfail is a known QEMU bug, still there).
GOOD = frozenset({"passed", "xfailed"})
BAD = frozenset({"failed", "error"})

# user_properties keys the worker side attaches to every report of a case
PROPS = (
    "case",
    "qemu_version",
    "qemu_build",
    "markers",
    "message",
    "divergence",
    "environment",
    "artifacts",
)


def case_key(nodeid: str, version: str | None) -> str:
    """`nodeid` without the QEMU build's parametrisation id (the root conftest's ids
    are the version, joined to the case's other ids by "-")."""
    if version is None or not nodeid.endswith("]") or "[" not in nodeid:
        return nodeid
    head, _, params = nodeid[:-1].partition("[")
    if params == version:
        return head
    if params.startswith(f"{version}-"):
        rest = params[len(version) + 1 :]
    elif params.endswith(f"-{version}"):
        rest = params[: -len(version) - 1]
    elif f"-{version}-" in params:
        rest = params.replace(f"-{version}-", "-", 1)
    else:
        return nodeid
    return f"{head}[{rest}]"


def new_record(nodeid: str) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "case": nodeid,
        "qemu_version": None,
        "qemu_build": None,
        "outcome": None,
        "duration": 0.0,
        "markers": [],
        "reason": None,
        "message": None,
        "divergence": None,
        "environment": None,
        "artifacts": None,
        "when": None,
    }


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    lr = report.longrepr
    text = str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr or "")
    return text.removeprefix("Skipped: ")


def _last_error_line(text: str) -> str:
    """pytest's `E   ...` line that names the exception, else the last non-empty line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("E   "):
            return ln[4:].strip()
    return lines[-1].strip() if lines else ""


def update(rec: dict[str, Any], report: pytest.TestReport) -> None:
    """Fold one phase report (setup, call, teardown, or xdist's crash '???') into `rec`."""
    props = dict(report.user_properties)
    for key in PROPS:
        if key in props and props[key] not in (None, ""):
            value = props[key]
            rec[key] = value.split(",") if key == "markers" and isinstance(value, str) else value
    if rec["markers"] == [""]:
        rec["markers"] = []
    rec["duration"] = round(rec["duration"] + float(report.duration or 0.0), 6)
    xfail = getattr(report, "wasxfail", None)
    when = report.when
    outcome: str | None = None
    if when == "setup":
        if report.failed:
            outcome = "error"
        elif report.skipped:
            outcome = "xfailed" if xfail is not None else "skipped"
    elif when == "call":
        if report.passed:
            outcome = "xpassed" if xfail is not None else "passed"
        elif report.failed:
            outcome = "failed"
        else:
            outcome = "xfailed" if xfail is not None else "skipped"
    elif when == "teardown":
        if report.failed and rec["outcome"] not in BAD:
            outcome = "error"
    else:  # xdist: the worker crashed while running this case
        outcome = "failed"
    if outcome is None:
        return
    if outcome in (*BAD, "xfailed") and rec.get("environment"):
        outcome = "error"  # the environment's: no verdict, not even an expected failure
    rec["outcome"], rec["when"] = outcome, when
    if outcome == "skipped":
        rec["reason"] = _skip_reason(report)
    elif outcome in ("xfailed", "xpassed"):
        rec["reason"] = str(xfail or "")
    elif outcome in BAD and not props.get("message"):
        rec["message"] = _last_error_line(report.longreprtext)


def collect_error(report: pytest.CollectReport) -> dict[str, Any]:
    rec = new_record(report.nodeid or "(collection)")
    rec.update(outcome="error", when="collect", message=_last_error_line(report.longreprtext))
    return rec


def summary(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in records:
        counts[str(r["outcome"])] = counts.get(str(r["outcome"]), 0) + 1
    return counts


def document(
    records: Sequence[Mapping[str, Any]], exitstatus: int, duration: float, args: Sequence[str]
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "exitstatus": exitstatus,
        "duration": round(duration, 3),
        "args": list(args),
        "summary": summary(records),
        "cases": sorted(records, key=lambda r: str(r["nodeid"])),
    }


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Atomically: a reader sees the old report or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a CI artifact from its readers
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Path) -> dict[str, Any]:
    """A report written by write_json; ValueError when it is not one."""
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "cases" not in doc:
        raise ValueError(f"{path}: not a qrc JSON report (format {FORMAT})")
    return doc


def merge_reports(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several shards' reports as one (later shards win for a repeated nodeid)."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for d in docs:
        for r in d["cases"]:
            by_id[str(r["nodeid"])] = r
    records = list(by_id.values())
    status = max((int(d.get("exitstatus", 0)) for d in docs), default=0)
    wall = max((float(d.get("duration", 0.0)) for d in docs), default=0.0)
    return document(records, status, wall, [a for d in docs for a in d.get("args", [])])


def load_reports(paths: Sequence[str], marker: str | None = None) -> dict[str, Any]:
    """Several JSON reports (shards') read and merged, only the cases with `marker` if
    given; UsageError naming a file that cannot be read or is not a report."""
    docs = []
    for f in paths:
        try:
            docs.append(load(Path(f)))
        except OSError as e:
            raise UsageError(f"{f}: {e.strerror}") from None
        except ValueError as e:
            raise UsageError(f"{f}: not a qrc JSON report ({str(e).splitlines()[0]})") from None
    doc = merge_reports(docs)
    if marker:
        doc["cases"] = [c for c in doc["cases"] if marker in (c.get("markers") or [])]
    return doc


def merge_junit(paths: Sequence[str]) -> ET.ElementTree[ET.Element]:
    """Several JUnit XML files as one: every <testsuite> under one <testsuites>;
    UsageError naming a file that cannot be read or is not JUnit XML."""
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


def merge_files(out: Path, paths: Sequence[str]) -> None:
    """`qrc merge`: JSON reports into `out` if it is named .json, JUnit XML files if .xml;
    UsageError for another name, ReportPathError if `out` cannot be written."""
    try:
        if out.suffix == ".json":
            write_json(out, load_reports(paths))
        elif out.suffix == ".xml":
            merge_junit(paths).write(out, encoding="utf-8", xml_declaration=True)
        else:
            raise UsageError(f"--out {out}: name it .json (JSON reports) or .xml (JUnit)")
    except OSError as e:
        raise ReportPathError(f"--out {out}: cannot write there: {e.strerror}") from None


def environment_broken(cases: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records the environment failed (harness.environment): no verdict."""
    return [r for r in cases if r.get("environment")]
