"""The artifacts directory of one failed case: everything needed to understand it later.

    failure.txt                 pytest's report of the failure (the divergence report)
    story-N.txt                 the story's report: operations, layer maps of both sides
    trace-N.json                the story's operation trace (Story.trace_json(), replayable)
    layers.html                 the layers by cluster, model beside QEMU (HTML + SVG)
    machines/NAME/transcript.jsonl   every QMP exchange and event of that QEMU
    machines/NAME/stdout.log, stderr.log, command.txt

Writing artifacts must never hide the failure: every step is guarded, and a
step that fails leaves a note in `problems.txt` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import traceback
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from harness.graph import live_allocation
from harness.images import allocated, allocation_map
from harness.machine import Machine, MachineError, MachineSet
from harness.report.layer_map import LayerPicture, Range, StoryPicture, page
from harness.story import Story
from harness.verdicts import describe_exit
from harness.words import plural

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def case_dir_name(nodeid: str) -> str:
    """A readable, unique, filesystem-safe directory name for a test id."""
    safe = _UNSAFE.sub("_", nodeid).strip("_.") or "case"
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:8]
    return f"{safe[:120]}-{digest}"


def _can_ask(m: Machine) -> bool:
    """A QEMU that answers: running, and not stopped (asking it would only time out)."""
    return m.kind == "system" and m.alive() and not m.stopped()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def qemu_allocation(story: Story, name: str) -> tuple[list[Range] | None, str]:
    """A layer's own allocated ranges as QEMU has it, and how they were obtained.

    Live (HMP `qemu-io NODE map`) while its QEMU runs, else `qemu-img map` of
    the layer's file; `-U` if some QEMU still has it open.
    """
    topo = story.topo
    why = ""
    where = topo.layer_nodes.get(name)
    if where is not None:
        m = topo.machines.machines.get(where[0])
        if m is not None and _can_ask(m):
            try:
                return live_allocation(m, where[1]), "live: HMP qemu-io map"
            except (MachineError, AssertionError) as e:
                why = f"live map failed ({_first_line(e)}); "
    layer = topo.chain.layers.get(name)
    if layer is None:
        return None, why + "no image file for this layer"
    running = any(m.alive() for m in topo.machines)
    try:
        extents = allocation_map(topo.build, layer.path, layer.format, force_share=running)
    except Exception as e:  # any failure here is only a missing picture
        return None, why + f"qemu-img map failed ({_first_line(e)})"
    how = "qemu-img map -U, QEMU still running" if running else "qemu-img map"
    return [(s, s + n) for s, n in allocated(extents)], why + how


def story_picture(story: Story) -> StoryPicture:
    layers = []
    for name, disk in story.model.disks.items():
        qemu, source = qemu_allocation(story, name)
        layers.append(
            LayerPicture(
                name=name,
                size=disk.size,
                cluster=disk.cluster,
                fmt=disk.fmt,
                model=list(disk.data.items()),
                qemu=qemu,
                qemu_source=source,
                compare=disk.allocates and disk.alloc_exact,
            )
        )
    last = ""
    if story.steps:
        st = story.steps[-1]
        last = (
            f"{plural(len(story.steps), 'operation')}; the last: {st.op.describe()}\n"
            f"  model: {st.expected.describe()}\n  QEMU:  {st.actual.describe()}"
        )
    return StoryPicture(story.label, last, layers)


def _machines(stories: Sequence[Story], sets: Iterable[MachineSet]) -> list[Machine]:
    seen: set[int] = set()
    out: list[Machine] = []
    for ms in [*(s.topo.machines for s in stories), *sets]:
        for m in ms:
            if id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


def _write_machine(m: Machine, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    (where / "transcript.jsonl").write_text(m.transcript_text() + "\n")
    for src, dst in ((m.stdout_path, "stdout.log"), (m.stderr_path, "stderr.log")):
        if src.exists():
            shutil.copyfile(src, where / dst)
    pid = m.pid if m._child is not None else "-"
    (where / "command.txt").write_text(
        f"{' '.join(m.argv)}\n"
        f"kind: {m.kind}, build: {m.build.label}, pid {pid}: {describe_exit(m.returncode)}\n"
    )


def write_case_artifacts(
    base: Path,
    nodeid: str,
    failure: str,
    stories: Sequence[Story],
    machine_sets: Iterable[MachineSet] = (),
) -> Path:
    """Write the artifacts of the failed case `nodeid` under `base`; its directory."""
    out = base / case_dir_name(nodeid)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    @contextlib.contextmanager
    def guarded(what: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            problems.append(f"{what}:\n{traceback.format_exc()}")

    name = "failure.txt"
    if (out / name).exists():  # the same case failed again in a later phase
        name = "failure-teardown.txt"
    (out / name).write_text(f"{nodeid}\n\n{failure}\n")

    # The machines first: later steps ask QEMU for maps and lengthen the transcripts.
    names: dict[str, int] = {}
    for m in _machines(stories, machine_sets):
        n = names.get(m.name, 0)
        names[m.name] = n + 1
        with guarded(f"machine {m.name}"):
            _write_machine(m, out / "machines" / (m.name if n == 0 else f"{m.name}-{n + 1}"))

    pictures: list[StoryPicture] = []
    for i, st in enumerate(stories, 1):
        with guarded(f"trace {i}"):
            (out / f"trace-{i}.json").write_text(st.trace_json() + "\n")
        if any(m.stopped() for m in st.topo.machines if m.alive()):
            problems.append(f"story {i}: a QEMU is stopped (SIGSTOP): no live maps asked")
            continue
        with guarded(f"story {i}"):
            text = st.report("state of the story when the case failed")
            (out / f"story-{i}.txt").write_text(text + "\n")
        with guarded(f"layers {i}"):
            pictures.append(story_picture(st))
    with guarded("layers.html"):
        (out / "layers.html").write_text(page(nodeid, pictures))
    if problems:
        with contextlib.suppress(OSError):
            (out / "problems.txt").write_text("\n".join(problems))
    return out
