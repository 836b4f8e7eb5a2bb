"""What a failure says about a QEMU process: its command line, exit, stderr tail and the
tail of its QMP transcript (harness.machine builds it for its exceptions,
harness.machine_errors, and for the report of a failed case)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STDERR_TAIL_LINES = 30
TRANSCRIPT_TAIL = 10
# A report's transcript lines are cut at this length (query-named-block-nodes replies run
# to tens of kilobytes); the artifacts keep them whole.
TRANSCRIPT_LINE = 1000


def stderr_tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last `lines` lines of a log ("" if it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def transcript_text(entries: Sequence[dict[str, Any]]) -> str:
    """Transcript entries, one JSON object per line."""
    return "\n".join(json.dumps(e, default=str) for e in entries)


def failure_report(
    head: str,
    argv: Sequence[str],
    logdir: Path,
    stderr: str,
    transcript: Sequence[dict[str, Any]],
) -> str:
    """`head` (the machine and its exit), then its command line, where its logs are, the
    tail of its stderr and the last TRANSCRIPT_TAIL entries of its transcript."""
    lines = [head, "command line: " + " ".join(argv), f"logs: {logdir}"]
    lines.append("stderr (tail):" if stderr else "stderr: (empty)")
    lines += [f"  {ln}" for ln in stderr.splitlines()]
    lines.append(f"QMP transcript (last {TRANSCRIPT_TAIL}, long lines cut):")
    for ln in transcript_text(transcript[-TRANSCRIPT_TAIL:]).splitlines():
        cut = f"... ({len(ln)} characters)" if len(ln) > TRANSCRIPT_LINE else ""
        lines.append(f"  {ln[: TRANSCRIPT_LINE - 40] if cut else ln}{cut}")
    return "\n".join(lines)
