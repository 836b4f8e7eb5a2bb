"""Probing: schema parsing on recorded schemas, real probes of every known
build, the cache, failure modes, and the `qrc probe` command."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

import harness.cli
import harness.probe
from harness.builds import QemuBuild, known_builds
from harness.errors import NoReplication, ProbeError
from harness.probe import (
    REQUIRED_COMMANDS,
    Probe,
    probe,
    probe_from_schema,
    replication_verdict,
    require_replication,
    run_qmp,
)
from harness.releases import RELEASES

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
BUILDS = known_builds(ROOT)
QRC = Path(sys.executable).with_name("qrc")
XEN_COMMANDS = ["xen-set-replication", "xen-colo-do-checkpoint", "query-xen-replication-status"]

Schema = list[dict[str, Any]]


def _recorded(name: str) -> tuple[dict[str, Any], Schema]:
    data = json.loads((DATA / name).read_text())
    return data["query-version"], data["query-qmp-schema"]


def _by_name(schema: Schema) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in schema}


def _driver_enum(schema: Schema) -> dict[str, Any]:
    """Follow blockdev-add -> arg type -> driver member -> enum (names are masked)."""
    by = _by_name(schema)
    args = by[by["blockdev-add"]["arg-type"]]
    driver = next(m for m in args["members"] if m["name"] == "driver")
    return by[driver["type"]]


def _stub(path: Path, body: str) -> QemuBuild:
    """A 'QEMU' that is a shell script, for failure modes a real one won't show."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    p = str(path)
    return QemuBuild(label="stub", system=p, img=p, io=p, nbd=p, qsd=p)


# --- pure: recorded schemas ------------------------------------------------


@pytest.mark.parametrize("name", ["schema-7.2.json", "schema-10.0.json"])
def test_recorded_schema(name: str) -> None:
    version, schema = _recorded(name)
    p = probe_from_schema(version, schema, path="/q")
    assert p.version_tuple[:2] == {"schema-7.2.json": (7, 2), "schema-10.0.json": (10, 0)}[name]
    assert p.has_replication and "replication" in p.drivers and "qcow2" in p.drivers
    assert all(p.has_command(c) for c in REQUIRED_COMMANDS)
    assert p.nbd_addr_form == "legacy"
    assert p.package.startswith("Debian")
    assert replication_verdict(p) is None
    require_replication(p)


def test_verdict_without_replication_driver() -> None:
    version, schema = _recorded("schema-7.2.json")
    schema = copy.deepcopy(schema)
    enum = _driver_enum(schema)
    enum["values"].remove("replication")
    enum["members"] = [m for m in enum["members"] if m["name"] != "replication"]
    p = probe_from_schema(version, schema, path="/opt/q/qemu-system-x86_64")
    assert not p.has_replication
    assert replication_verdict(p) == (
        "QEMU 7.2.22 at /opt/q/qemu-system-x86_64 has no replication block driver "
        "(built without --enable-replication)"
    )
    with pytest.raises(NoReplication) as info:
        require_replication(p)
    assert info.value.exit_code == 6


def test_verdict_without_xen_commands() -> None:
    version, schema = _recorded("schema-7.2.json")
    schema = [e for e in schema if e["name"] not in XEN_COMMANDS]
    p = probe_from_schema(version, schema, path="/q")
    assert p.has_replication
    assert (
        replication_verdict(p) == f"QEMU 7.2.22 at /q lacks QMP commands {', '.join(XEN_COMMANDS)}"
    )


@pytest.mark.parametrize("keep", ["values", "members"])
def test_enum_old_and_new_shapes(keep: str) -> None:
    """QEMU < 6.0 lists enum `values`; newer ones add `members` (7.2 and 10.0 have both)."""
    version, schema = _recorded("schema-7.2.json")
    schema = copy.deepcopy(schema)
    enum = _driver_enum(schema)
    assert "values" in enum and "members" in enum
    del enum["members" if keep == "values" else "values"]
    assert probe_from_schema(version, schema).has_replication


def test_flat_nbd_address_form() -> None:
    """If nbd-server-start ever takes flat SocketAddress, the probe says so."""
    version, schema = _recorded("schema-7.2.json")
    schema = copy.deepcopy(schema)
    by = _by_name(schema)
    args = by[by["nbd-server-start"]["arg-type"]]
    addr = by[next(m for m in args["members"] if m["name"] == "addr")["type"]]
    for variant in addr["variants"]:
        wrapper = by[variant["type"]]
        inner = by[wrapper["members"][0]["type"]]
        wrapper["members"] = inner["members"]
    assert probe_from_schema(version, schema).nbd_addr_form == "flat"
    no_nbd = [e for e in schema if e["name"] != "nbd-server-start"]
    assert probe_from_schema(version, no_nbd).nbd_addr_form is None


def test_bad_replies() -> None:
    with pytest.raises(ProbeError, match="unexpected query-version reply"):
        probe_from_schema({"qemu": {"major": 7}}, [], path="/q")
    version, _ = _recorded("schema-7.2.json")
    with pytest.raises(ProbeError, match="unexpected query-qmp-schema reply"):
        probe_from_schema(version, [{"meta-type": "command"}], path="/q")


def test_json_round_trip() -> None:
    p = probe_from_schema(*_recorded("schema-7.2.json"), path="/q")
    assert Probe.from_json(p.to_json()) == p
    with pytest.raises(ValueError):
        Probe.from_json('{"path": "/q"}')


# --- the cache (no QEMU: fetch_schema is replaced) -------------------------


@pytest.fixture
def fake_fetch(monkeypatch: pytest.MonkeyPatch) -> list[QemuBuild]:
    """Replace the launcher with the recorded 7.2 answer; returns the call log."""
    calls: list[QemuBuild] = []
    recorded = _recorded("schema-7.2.json")

    def fetch(build: QemuBuild) -> tuple[dict[str, Any], Schema]:
        calls.append(build)
        return recorded

    monkeypatch.setattr(harness.probe, "fetch_schema", fetch)
    return calls


def test_cache_hit_miss_and_corruption(
    tmp_path: Path, fake_fetch: list[QemuBuild], monkeypatch: pytest.MonkeyPatch
) -> None:
    build = _stub(tmp_path / "qemu", "exit 1")
    cache = tmp_path / "cache"
    monkeypatch.setenv("QRC_CACHE_DIR", str(cache))
    first = probe(build)
    assert len(fake_fetch) == 1
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"  # no temp files left behind
    assert probe(build) == first
    assert len(fake_fetch) == 1  # hit: nothing launched
    st = os.stat(build.system)
    os.utime(build.system, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    probe(build)
    assert len(fake_fetch) == 2  # a rebuilt binary is asked again
    for f in cache.iterdir():
        f.write_text("{not json")
    probe(build)
    assert len(fake_fetch) == 3  # a corrupt entry is ignored, then rewritten
    assert probe(build) == first and len(fake_fetch) == 3
    probe(build, use_cache=False)
    assert len(fake_fetch) == 4


def test_cache_through_other_path_reports_that_path(
    tmp_path: Path, fake_fetch: list[QemuBuild]
) -> None:
    build = _stub(tmp_path / "qemu", "exit 1")
    link = tmp_path / "link"
    link.symlink_to(build.system)
    probe(build, cache=tmp_path / "c")
    via_link = probe(QemuBuild("l", str(link), *[str(link)] * 4), cache=tmp_path / "c")
    assert len(fake_fetch) == 1 and via_link.path == str(link)


def test_unwritable_cache_still_probes(tmp_path: Path, fake_fetch: list[QemuBuild]) -> None:
    build = _stub(tmp_path / "qemu", "exit 1")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert probe(build, cache=blocker / "sub").has_replication


# --- launcher failure modes (stub binaries, no real QEMU) ------------------


def test_qemu_that_dies_fails_at_once(tmp_path: Path) -> None:
    build = _stub(tmp_path / "qemu", "echo 'qemu: something broke' >&2; exit 1")
    with pytest.raises(ProbeError) as info:
        run_qmp(build, lambda qmp, tmp: qmp.execute("query-version"))
    assert "exited with status 1 before connecting to QMP: qemu: something broke" in str(info.value)
    assert info.value.exit_code == 11


def test_qemu_that_hangs_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    build = _stub(tmp_path / "qemu", f"echo $$ > {pidfile}; exec sleep 600")
    with pytest.raises(ProbeError, match=r"did not connect to QMP within 0\.5s"):
        run_qmp(build, lambda qmp, tmp: qmp.execute("query-version"), timeout=0.5)
    pid = int(pidfile.read_text())
    # Reaped, not just signalled: the pid is gone or belongs to someone else.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- real QEMU --------------------------------------------------------------


# (major, minor) of every release Debian ships (harness/releases.py)
RELEASED = {tuple(int(x) for x in r.upstream.split(".")[:2]) for r in RELEASES}


@pytest.mark.needs_qemu
def test_every_release_is_known(tmp_path: Path) -> None:
    """The tests must exercise every release, not whichever happens to exist."""
    versions = {probe(b, cache=tmp_path).version_tuple[:2] for b in BUILDS}
    assert versions >= RELEASED, f"known builds {BUILDS}: run scripts/setup.sh"


@pytest.mark.needs_qemu
@pytest.mark.parametrize("build", BUILDS, ids=[b.label for b in BUILDS])
def test_real_probe(build: QemuBuild, tmp_path: Path) -> None:
    p = probe(build, cache=tmp_path)
    assert p.version_tuple[:2] in RELEASED
    assert p.path == build.system
    assert replication_verdict(p) is None
    assert all(p.has_command(c) for c in REQUIRED_COMMANDS)
    assert list(tmp_path.glob("*.json"))


@pytest.mark.needs_qemu
@pytest.mark.parametrize("build", BUILDS, ids=[b.label for b in BUILDS])
def test_nbd_addr_form_matches_reality(build: QemuBuild, tmp_path: Path) -> None:
    """The schema-derived form is the one QEMU accepts; the other is refused."""
    form = probe(build, cache=tmp_path).nbd_addr_form

    async def attempt(qmp: QMPClient, tmp: Path) -> dict[str, str]:
        results: dict[str, str] = {}
        forms = {
            "legacy": {"type": "unix", "data": {"path": str(tmp / "l.sock")}},
            "flat": {"type": "unix", "path": str(tmp / "f.sock")},
        }
        for name, addr in forms.items():
            try:
                await qmp.execute("nbd-server-start", {"addr": addr})
                await qmp.execute("nbd-server-stop")
                results[name] = "ok"
            except ExecuteError as exc:
                results[name] = str(exc)
        return results

    results = run_qmp(build, attempt)
    assert results[str(form)] == "ok"
    other = "flat" if form == "legacy" else "legacy"
    assert results[other] != "ok"


# --- the qrc command ----------------------------------------------------------


def _qrc(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    assert QRC.exists(), f"{QRC} missing: run scripts/setup.sh (pip install -e .)"
    env = {**os.environ, "QRC_CACHE_DIR": str(cache)}
    return subprocess.run(
        [str(QRC), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_qrc_missing_qemu_dir_is_one_line(tmp_path: Path) -> None:
    r = _qrc("probe", "--qemu-dir", "/nonexistent", cache=tmp_path)
    assert r.returncode == 3
    assert r.stderr == "qrc: --qemu-dir /nonexistent: no such directory\n"
    assert r.stdout == ""


def test_qrc_unknown_option_is_one_line(tmp_path: Path) -> None:
    r = _qrc("probe", "--bogus", cache=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "--bogus" in r.stderr


@pytest.mark.needs_qemu
def test_qrc_probe_all_json(tmp_path: Path) -> None:
    r = _qrc("probe", "--all", "--json", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    versions = {tuple(d["probe"]["version_tuple"][:2]) for d in docs}
    assert versions >= RELEASED
    assert all(d["verdict"] is None and d["probe"]["has_replication"] for d in docs)


@pytest.mark.needs_qemu
def test_qrc_probe_human(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not any(b.label == ".qemu/10.0" for b in BUILDS):
        pytest.fail("no .qemu/10.0: run scripts/setup.sh")
    monkeypatch.setenv("QRC_CACHE_DIR", str(tmp_path))
    assert harness.cli.main(["probe", "--qemu-dir", str(ROOT / ".qemu" / "10.0")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("QEMU 10.0.")
    assert "replication driver            yes" in out
    assert "nbd-server-start addr form    legacy" in out


def test_main_maps_errors_and_interrupts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_: object, **__: object) -> Probe:
        raise KeyboardInterrupt

    def refused(*_: object, **__: object) -> Probe:
        raise NoReplication("QEMU 1.2.3 at /q has no replication block driver")

    monkeypatch.setattr(harness.cli, "find_build", lambda *_: _stub_build())
    monkeypatch.setattr(harness.cli, "probe", interrupted)
    assert harness.cli.main(["probe"]) == 130
    monkeypatch.setattr(harness.cli, "probe", refused)
    assert harness.cli.main(["probe"]) == 6
    assert capsys.readouterr().err == "qrc: QEMU 1.2.3 at /q has no replication block driver\n"
    assert harness.cli.main([]) == 2


def _stub_build() -> QemuBuild:
    return QemuBuild("stub", "/q", "/q", "/q", "/q", "/q")
