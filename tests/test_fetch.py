"""`qrc fetch` and the release prefixes: mirror derivation, pins, loaders, flat bin dirs.

The parsing and the no-op paths run without a network; the prefixes that
scripts/setup.sh unpacked are checked for real (each reports its pinned Debian
version through its own loader).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.builds import QSD, SYSTEM, find_build, known_builds, loader_launcher
from harness.errors import BinaryMissing, SetupError
from harness.fetch import MANIFEST, Mirror, PrivateApt, fetch, host_mirror, installed_version
from harness.releases import FETCHED, RELEASES, release_named

ROOT = Path(__file__).resolve().parent.parent
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _apt_etc(tmp_path: Path, sources: str = "", lst: str = "") -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources:
        (etc / "sources.list.d" / "debian.sources").write_text(sources)
    if lst:
        (etc / "sources.list").write_text(lst)
    return etc


def test_mirror_from_deb822_skips_security_and_disabled(tmp_path: Path) -> None:
    etc = _apt_etc(
        tmp_path,
        sources=(
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\n"
            "Components: main\nEnabled: no\n\n"
            "# a comment\nTypes: deb\nURIs: http://sec.example/debian-security\n"
            "Suites: bookworm-security\nComponents: main\n\n"
            "Types: deb deb-src\nURIs: http://m.example/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n"
            "Signed-By: /k.gpg\n"
        ),
    )
    assert host_mirror("bookworm", etc) == Mirror("http://m.example/debian", "/k.gpg")


def test_mirror_from_one_line_list(tmp_path: Path) -> None:
    etc = _apt_etc(
        tmp_path,
        lst=(
            "# deb http://commented.example/debian bookworm main\n"
            "deb http://sec.example/debian-security bookworm-security main\n"
            "deb [arch=amd64 signed-by=/s.gpg] http://l.example/debian bookworm main\n"
        ),
    )
    assert host_mirror("bookworm", etc) == Mirror("http://l.example/debian", "/s.gpg")
    etc2 = _apt_etc(tmp_path / "2", lst="deb http://l.example/debian bookworm main\n")
    assert host_mirror("bookworm", etc2).keyring == KEYRING


def test_no_mirror_is_one_line(tmp_path: Path) -> None:
    etc = _apt_etc(tmp_path, lst="deb http://x.example/debian trixie main\n")
    with pytest.raises(SetupError, match=r"^no apt source for Debian bookworm in "):
        host_mirror("bookworm", etc)


def test_private_apt_names_only_the_release_suites(tmp_path: Path) -> None:
    apt = PrivateApt(tmp_path / "a", release_named("11.1"), Mirror("http://m/debian", "/k"))
    assert apt.sources == (
        "deb [signed-by=/k] http://m/debian trixie main\n"
        "deb [signed-by=/k] http://m/debian trixie-backports main\n"
    )
    opts = apt.options()
    # Relative Dir:: paths would be read against apt's own directories.
    dirs = [o.split("=", 1)[1] for o in opts if o.startswith("Dir::") and "/dev/null" not in o]
    assert dirs and all(os.path.isabs(d) for d in dirs)
    assert "Dir::State::status=/dev/null" in opts
    assert apt.install_argv("-s")[-2:] == [
        "qemu-system-x86=1:11.1.3+ds-2~bpo13+1",
        "qemu-utils=1:11.1.3+ds-2~bpo13+1",
    ]
    assert apt.archive("libc6", "2.41-12", "amd64").name == "libc6_2.41-12_amd64.deb"
    assert apt.archive("q", "1:2.0", "amd64").name == "q_1%3a2.0_amd64.deb"


def test_releases_are_oldest_first_and_named_uniquely() -> None:
    assert [r.upstream for r in RELEASES] == ["5.2", "7.2", "10.0.2", "10.0.13", "11.1.3"]
    assert len({r.name for r in RELEASES}) == len(RELEASES)
    assert [r.name for r in RELEASES if r.system] == ["7.2"]
    with pytest.raises(KeyError, match=r"known: 5\.2, 7\.2"):
        release_named("9.9")


def test_unknown_release_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"^no fetched release '7\.2'; known: 5\.2, 10\.0-bpo"):
        fetch(["7.2"], tmp_path, print)


def test_fetch_is_a_no_op_when_every_prefix_holds_its_pin(tmp_path: Path) -> None:
    """No apt, no mirror (an empty /etc/apt), nothing printed: all is in place."""
    for r in FETCHED:
        prefix = r.prefix(tmp_path)
        prefix.mkdir(parents=True)
        (prefix / MANIFEST).write_text(json.dumps({"debian_version": r.debian_version}))
    said: list[str] = []
    assert fetch([], tmp_path, said.append, etc=tmp_path / "no-apt") == []
    assert said == []


def test_a_prefix_with_another_version_or_a_bad_manifest_is_not_in_place(tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    prefix.mkdir()
    assert installed_version(prefix) is None
    (prefix / MANIFEST).write_text("{not json")
    assert installed_version(prefix) is None
    (prefix / MANIFEST).write_text(json.dumps({"debian_version": "1:5.2+dfsg-11+deb11u2"}))
    assert installed_version(prefix) != release_named("5.2").debian_version


def test_loader_launcher(tmp_path: Path) -> None:
    assert loader_launcher(Path("/")) is None
    assert loader_launcher(tmp_path) is None  # no libc of its own
    lib = tmp_path / "usr" / "lib" / "x86_64-linux-gnu"
    (lib / "sub").mkdir(parents=True)
    (lib / "ld-linux-x86-64.so.2").write_bytes(b"")
    (tmp_path / "etc" / "ld.so.conf.d").mkdir(parents=True)
    (tmp_path / "etc" / "ld.so.conf.d" / "x.conf").write_text(
        "# comment\n/usr/lib/x86_64-linux-gnu/sub\n/not/there\n"
    )
    assert loader_launcher(tmp_path) == (
        str(lib / "ld-linux-x86-64.so.2"),
        "--library-path",
        f"{lib}:{lib / 'sub'}",
    )


def test_flat_bin_directory_is_a_build(tmp_path: Path) -> None:
    """/usr/bin holds the five binaries side by side: that is a build, not a broken tree."""
    flat = tmp_path / "bin"
    flat.mkdir()
    for name in (SYSTEM, "qemu-img", "qemu-io", "qemu-nbd", QSD):
        (flat / name).write_text("#!/bin/sh\n")
        (flat / name).chmod(0o755)
    b = find_build(str(flat), {"PATH": os.defpath})
    assert b.qsd == str(flat / QSD) and b.launcher == ()
    (flat / QSD).unlink()
    with pytest.raises(BinaryMissing, match="directory has qemu-system-x86_64 but not"):
        find_build(str(flat), {"PATH": os.defpath})


@pytest.mark.needs_qemu
def test_system_bin_dir_is_a_build() -> None:
    if not os.access(f"/usr/bin/{QSD}", os.X_OK):
        pytest.skip("the system's QEMU is not installed (scripts/setup.sh)")
    b = find_build("/usr/bin", os.environ)
    assert b.qsd == f"/usr/bin/{QSD}" and b.launcher == ()


def _prefixes() -> list[pytest.param]:  # type: ignore[valid-type]
    return [pytest.param(r, id=r.name, marks=pytest.mark.needs_qemu) for r in FETCHED]


@pytest.mark.parametrize("release", _prefixes())
def test_each_prefix_runs_its_pinned_version_through_its_own_loader(release) -> None:
    prefix = release.prefix(ROOT)
    if installed_version(prefix) is None:
        pytest.fail(f"{prefix} is not there: run scripts/setup.sh")
    assert installed_version(prefix) == release.debian_version
    for qemu_dir in (prefix, prefix / "usr" / "bin"):  # the prefix, or its flat bin dir
        b = find_build(str(qemu_dir), os.environ)
        assert b.launcher and b.launcher[0].startswith(str(prefix))
        assert b.module_dir is not None and b.module_dir.startswith(str(prefix))
        for binary in (b.system, b.img, b.io, b.nbd, b.qsd):
            out = subprocess.run(
                [*b.command(binary), "--version"],
                capture_output=True,
                text=True,
                env={**os.environ, **b.env()},
                timeout=30,
            )
            assert f"(Debian {release.debian_version})" in out.stdout, (binary, out.stderr)
    assert str(prefix) in {str(Path(b.system).parents[2]) for b in known_builds(ROOT) if b.launcher}


def test_downloads_live_outside_the_checkout(tmp_path: Path) -> None:
    """Every clone on the machine shares the lists and packages (CI clones afresh)."""
    from harness.fetch import cache_dir

    assert cache_dir({"QRC_CACHE_DIR": str(tmp_path / "c")}) == (tmp_path / "c").resolve()
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path.resolve() / "qrc"
    apt = PrivateApt(tmp_path / "a", release_named("5.2"), Mirror("http://m/debian", "/k"))
    apt.prepare()
    assert not apt.has_lists()
    # apt.conf.d may keep the indexes compressed
    (tmp_path / "a" / "lists" / "m_debian_dists_bullseye_main_binary-amd64_Packages.lz4").touch()
    assert apt.has_lists()


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    """A pytest run of the project's own, serial, in its root."""
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-p", "no:xdist", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_qemu_dir_is_one_pytest_usage_line(tmp_path: Path) -> None:
    """Checked once at configure time, not once per case module."""
    proc = _pytest(f"--qemu-dir={tmp_path / 'nope'}", "cases", "-q")
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert lines == [f"ERROR: --qemu-dir {tmp_path / 'nope'}: no such directory"]


@pytest.mark.needs_qemu
def test_full_on_ends_keeps_only_the_quick_set_between_oldest_and_newest() -> None:
    def collect(*extra: str) -> list[str]:
        proc = _pytest(
            "--all-builds",
            "--collect-only",
            "-q",
            "cases/test_smoke.py",
            "cases/test_geometry.py",
            *extra,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [ln for ln in proc.stdout.splitlines() if "::" in ln]

    every = collect()
    ends = collect("--full-on", "ends")
    quick = collect("-m", "quick")
    versions = sorted(
        {ln.split("[")[1].split("-")[0].rstrip("]") for ln in every},
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    if len(versions) < 3:
        pytest.skip("fewer than three builds: no build between the oldest and the newest")
    oldest, newest = versions[0], versions[-1]

    def ends_or_quick(ln: str) -> bool:
        return f"[{oldest}" in ln or f"[{newest}" in ln or ln in quick

    assert ends == [ln for ln in every if ends_or_quick(ln)]
    assert len(ends) < len(every)
