"""Opt-in phase timing of a pytest run of the harness (benchmarks/case_floor.py uses it).

A pytest plugin that does nothing unless QRC_PHASES_OUT names the JSON file to write,
and is loaded only on request: `PYTHONPATH=benchmarks pytest -p case_floor_hook ...`.
It wraps a few harness functions and pytest hooks with timers (each call still does
exactly what it did) and charges every stretch of the run to the innermost phase it is
in: CPU of this process and of its children (QEMU, qemu-img, qemu-io: charged while
they run, read from /proc, so a QEMU's CPU lands in the phase that spent it), and wall.
Only the main thread is timed; serial runs only (-n 0). The harness modules it wraps are
imported by this hook, ahead of conftest.py, so their import time shows under its own
label instead of under conftest.py's and the collection's.

QRC_PHASES_T0 (time.monotonic() when the process was spawned) lets the first phase
include the interpreter's and pytest's own start-up.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

OUT = os.environ.get("QRC_PHASES_OUT")
_main = threading.get_ident()

if OUT:
    from meter import Meter, Phases, report

    T0 = float(os.environ.get("QRC_PHASES_T0", time.monotonic()))
    START = "python start-up, pytest import (before plugins)"
    ph = Phases(Meter(), START)
    ph.acc[START] = [time.monotonic() - T0, ph.last[1], 0.0, 1]
    ph.switch("pytest: start-up: harness imports (by this hook, ahead of conftest.py)")

    OUT_PATH = OUT

    @atexit.register  # registered before the harness's own: runs after them
    def _write() -> None:
        # what comes after this is the interpreter's finalization: the caller's remainder
        with open(OUT_PATH, "w") as f:
            json.dump({**report(ph), "cases": CASES, "not_timed": MISSING}, f)

    def _timed(label: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != _main:
                return fn(*args, **kwargs)
            ph.enter(label(*args) if callable(label) else label)
            try:
                return fn(*args, **kwargs)
            finally:
                ph.exit()

        return timed

    MISSING: list[str] = []

    def _wrap(owner: Any, attr: str, label: str | Callable[..., str]) -> None:
        """Time `owner.attr`; a name the harness no longer has is reported, not fatal."""
        fn = getattr(owner, attr, None)
        if fn is None:
            MISSING.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        setattr(owner, attr, _timed(label, fn))

    def _spawn_label(io: Any, *_: Any) -> str:
        if io.name.startswith("layer inspector"):
            return "offline: layer inspector qemu-io spawn (first check of a process)"
        return "operations: NBD client qemu-io spawn"

    # Patched before conftest.py and the cases import them (a `-p` plugin is imported
    # before any conftest), so names they import from these modules are the wrappers.
    from harness import layer_inspector, machine, pool, process, qemu_io_process, story
    from harness.images import builder
    from harness.model import system
    from harness.real import side, topology

    _wrap(topology, "build_chain", "images: copies of the templates")
    _wrap(builder.TemplateCache, "template", "images: qemu-img create (template, once)")
    _wrap(machine.MachineSet, "launch", "launch: QEMU spawn, QMP handshake")
    _wrap(machine.Machine, "launch", "launch: QEMU spawn, QMP handshake (for the pool)")
    _wrap(pool.Pool, "take", "launch: the pool's take (an idle QEMU's pristine check)")
    _wrap(pool.Pool, "give_back", "teardown: the pool's give-back (the graph torn down)")
    _wrap(process, "lean_accel", "launch: -accel probe (a QEMU, first launch only)")
    _wrap(process, "pdeathsig_wrapper", "launch: setpriv probe (first spawn only)")
    # Story.open: the graph in QEMU, then the model's of the same value
    _wrap(story, "open_live", "graph: blockdev-add, NBD export, the model's graph")
    _wrap(story, "build_model", "graph: blockdev-add, NBD export, the model's graph")
    _wrap(story.Story, "do", "operations: story (compare, steps)")
    _wrap(system.Model, "apply", "operations: model")
    _wrap(side.RealSide, "apply", "operations: QEMU (QMP, HMP qemu-io, NBD qemu-io)")
    _wrap(qemu_io_process.InteractiveQemuIo, "_spawn", _spawn_label)
    _wrap(story.Story, "check_layers_live", "live layer checks (HMP qemu-io map)")
    _wrap(story.Story, "finish", "teardown: finish (story)")
    _wrap(topology.LiveTopology, "close", "teardown: NBD client quit")
    _wrap(machine.MachineSet, "shutdown_all", "teardown: QEMU quit and reap")
    _wrap(story, "inspect_all", "offline layer checks (inspectors' map and read -P)")
    _ = layer_inspector  # imported for its atexit handler's place (after ours)
    ph.switch("pytest: start-up: plugins, conftests")

    import pytest

    @pytest.hookimpl(tryfirst=True)  # historic: no wrapper; session start ends it
    def pytest_configure() -> None:
        ph.switch("pytest: start-up: configure (plugins; the build and its probe)")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart() -> None:
        ph.switch("pytest: start-up: session start")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_unconfigure() -> Iterator[None]:
        ph.switch("pytest: unconfigure")
        yield
        ph.switch("pytest: after unconfigure")
        atexit.register(_atexit_first)  # registered after every import: runs first

    def _atexit_first() -> None:
        ph.switch("exit: atexit handlers (inspectors quit, templates removed)")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_collection() -> Iterator[None]:
        ph.switch("pytest: collection")
        yield
        ph.switch("pytest: run loop")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish() -> Iterator[None]:
        ph.switch("pytest: session finish (plugins: reports, reclaim)")
        yield
        ph.switch("pytest: after session finish")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_terminal_summary() -> Iterator[None]:
        ph.enter("pytest: terminal summary")
        yield
        ph.exit()

    CASES: list[dict[str, float]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol() -> Iterator[None]:
        ph.enter("pytest: per-case protocol (reports, logging, plugins)")
        start = ph.last
        yield
        ph.exit()
        end = ph.last
        CASES.append({"wall": end[0] - start[0], "cpu": sum(end[1:]) - sum(start[1:])})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup() -> Iterator[None]:
        ph.enter("pytest: fixture setup")
        yield
        ph.exit()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call() -> Iterator[None]:
        ph.enter("pytest: case body outside the harness's calls")
        yield
        ph.exit()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown() -> Iterator[None]:
        ph.enter("pytest: fixture teardown (tmp_path, leak check)")
        yield
        ph.exit()
