"""Build discovery: which binaries a run uses, and the errors for bad input."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from harness.builds import (
    IMG,
    IO,
    NBD,
    QSD,
    SYSTEM,
    QemuBuild,
    find_build,
    known_builds,
)
from harness.errors import BinaryNotExecutable, BuildNotFound
from harness.probe import probe

ROOT = Path(__file__).resolve().parents[1]
TOOLS = (IMG, IO, NBD)


def _stub(path: Path, mode: int = 0o755) -> Path:
    """An executable placeholder; discovery only looks at names and modes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def _build_tree(root: Path) -> Path:
    """The layout of a meson build directory (qsd lives in storage-daemon/)."""
    for name in (SYSTEM, *TOOLS):
        _stub(root / name)
    _stub(root / "storage-daemon" / QSD)
    return root


def _bin_dir(bindir: Path, names: tuple[str, ...] = (SYSTEM, *TOOLS, QSD)) -> Path:
    for name in names:
        _stub(bindir / name)
    return bindir


def _env(**extra: str) -> dict[str, str]:
    """An environment with an empty PATH unless given: no host binaries leak in."""
    return {"PATH": "/nonexistent-path-for-tests", **extra}


def test_qemu_dir_missing() -> None:
    with pytest.raises(BuildNotFound) as info:
        find_build("/nonexistent", _env())
    assert str(info.value) == "--qemu-dir /nonexistent: no such directory"
    assert info.value.exit_code == 3


def test_qemu_dir_is_a_file(tmp_path: Path) -> None:
    f = _stub(tmp_path / "file")
    with pytest.raises(BuildNotFound, match="not a directory"):
        find_build(str(f), _env())


def test_qemu_dir_without_system_binary(tmp_path: Path) -> None:
    _bin_dir(tmp_path / "bin", TOOLS)
    with pytest.raises(BuildNotFound) as info:
        find_build(str(tmp_path), _env())
    msg = str(info.value)
    assert SYSTEM in msg and f"{tmp_path}/usr/bin" in msg and "build tree" in msg


def test_build_tree_layout(tmp_path: Path) -> None:
    tree = _build_tree(tmp_path / "build")
    b = find_build(str(tree), _env())
    assert b.system == str(tree / SYSTEM)
    assert b.img == str(tree / IMG)
    assert b.io == str(tree / IO)
    assert b.nbd == str(tree / NBD)
    assert b.qsd == str(tree / "storage-daemon" / QSD)
    assert b.module_dir is None and b.env() == {}
    assert b.label == str(tree)


def test_build_tree_missing_tool_is_named(tmp_path: Path) -> None:
    tree = _build_tree(tmp_path)
    (tree / IO).unlink()
    with pytest.raises(BuildNotFound, match=f"build tree has {SYSTEM} but not {IO}$"):
        find_build(str(tree), _env())


def test_install_prefix_layout(tmp_path: Path) -> None:
    _bin_dir(tmp_path / "bin")
    b = find_build(str(tmp_path), _env())
    assert b.system == str(tmp_path / "bin" / SYSTEM)
    assert b.qsd == str(tmp_path / "bin" / QSD)
    assert b.module_dir is None  # no modules installed: nothing to point at
    moddir = tmp_path / "lib" / "qemu"
    moddir.mkdir(parents=True)
    (moddir / "block-curl.so").write_bytes(b"")
    b = find_build(str(tmp_path), _env())
    assert b.module_dir == str(moddir)
    assert b.env() == {"QEMU_MODULE_DIR": str(moddir)}


def test_debian_unpacked_layout(tmp_path: Path) -> None:
    _bin_dir(tmp_path / "usr" / "bin")
    moddir = tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "qemu"
    moddir.mkdir(parents=True)
    (moddir / "block-ssh.so").write_bytes(b"")
    (tmp_path / "usr" / "share" / "qemu").mkdir(parents=True)
    b = find_build(str(tmp_path), _env())
    assert b.system == str(tmp_path / "usr" / "bin" / SYSTEM)
    assert b.module_dir == str(moddir)
    assert b.data_dir == str(tmp_path / "usr" / "share" / "qemu")


def test_user_module_dir_wins(tmp_path: Path) -> None:
    """QEMU itself gives QEMU_MODULE_DIR priority, so the harness does too."""
    _bin_dir(tmp_path / "usr" / "bin")
    moddir = tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "qemu"
    moddir.mkdir(parents=True)
    (moddir / "x.so").write_bytes(b"")
    b = find_build(str(tmp_path), _env(QEMU_MODULE_DIR="/my/modules"))
    assert b.module_dir == "/my/modules"
    path_build = find_build(None, _env(PATH=str(_bin_dir(tmp_path / "p")), QEMU_MODULE_DIR="/m"))
    assert path_build.env() == {"QEMU_MODULE_DIR": "/m"}


def test_non_executable_binary(tmp_path: Path) -> None:
    tree = _build_tree(tmp_path)
    (tree / IMG).chmod(0o644)
    with pytest.raises(BinaryNotExecutable) as info:
        find_build(str(tree), _env())
    assert str(info.value) == f"{tree / IMG}: not executable"
    assert info.value.exit_code == 4


def test_path_discovery(tmp_path: Path) -> None:
    bindir = _bin_dir(tmp_path / "bin")
    b = find_build(None, _env(PATH=f"/nonexistent:{bindir}"))
    assert b.label == "PATH"
    assert b.system == str(bindir / SYSTEM) and b.qsd == str(bindir / QSD)


def test_path_skips_non_executable(tmp_path: Path) -> None:
    """A non-executable file on PATH is not a match, as in the shell."""
    first = _bin_dir(tmp_path / "first", (SYSTEM,))
    (first / SYSTEM).chmod(0o644)
    second = _bin_dir(tmp_path / "second")
    b = find_build(None, _env(PATH=f"{first}:{second}"))
    assert b.system == str(second / SYSTEM)


def test_nothing_on_path(tmp_path: Path) -> None:
    with pytest.raises(BuildNotFound, match=f"no {SYSTEM} on PATH"):
        find_build(None, _env(PATH=str(tmp_path)))


def test_path_missing_tool_is_named(tmp_path: Path) -> None:
    bindir = _bin_dir(tmp_path, (SYSTEM, IMG, IO, QSD))
    with pytest.raises(BuildNotFound, match=f"not {NBD} "):
        find_build(None, _env(PATH=str(bindir)))


def test_env_vars_select_and_fall_back_to_siblings(tmp_path: Path) -> None:
    tree = _build_tree(tmp_path / "tree")
    other_img = _stub(tmp_path / "elsewhere" / IMG)
    b = find_build(None, _env(QEMU_PROG=str(tree / SYSTEM), QEMU_IMG_PROG=str(other_img)))
    assert b.label == "env"
    assert b.system == str(tree / SYSTEM)
    assert b.img == str(other_img)
    assert b.io == str(tree / IO)  # sibling of QEMU_PROG
    assert b.qsd == str(tree / "storage-daemon" / QSD)  # build-tree sibling


def test_env_vars_fall_back_to_path(tmp_path: Path) -> None:
    lonely = _stub(tmp_path / "lonely" / SYSTEM)
    bindir = _bin_dir(tmp_path / "bin")
    b = find_build(None, _env(PATH=str(bindir), QEMU_PROG=str(lonely), QSD_PROG=str(lonely)))
    assert b.system == str(lonely)
    assert b.qsd == str(lonely)
    assert b.nbd == str(bindir / NBD)


def test_env_var_bare_name_and_errors(tmp_path: Path) -> None:
    bindir = _bin_dir(tmp_path / "bin")
    b = find_build(None, _env(PATH=str(bindir), QEMU_PROG=SYSTEM))
    assert b.system == str(bindir / SYSTEM)
    with pytest.raises(BuildNotFound, match="QEMU_PROG=/nope: no such file"):
        find_build(None, _env(PATH=str(bindir), QEMU_PROG="/nope"))
    with pytest.raises(BuildNotFound, match="QEMU_IO_PROG=nope: not found on PATH"):
        find_build(None, _env(PATH=str(bindir), QEMU_IO_PROG="nope"))
    (bindir / NBD).chmod(0o600)
    with pytest.raises(BinaryNotExecutable):
        find_build(None, _env(PATH=str(bindir), QEMU_NBD_PROG=str(bindir / NBD)))


def test_priority_qemu_dir_then_env_then_path(tmp_path: Path) -> None:
    on_path = _bin_dir(tmp_path / "path")
    by_env = _build_tree(tmp_path / "env")
    by_dir = _build_tree(tmp_path / "dir")
    env = _env(PATH=str(on_path), QEMU_PROG=str(by_env / SYSTEM))
    assert find_build(str(by_dir), env).system == str(by_dir / SYSTEM)
    assert find_build(None, env).system == str(by_env / SYSTEM)
    assert find_build(None, _env(PATH=str(on_path))).system == str(on_path / SYSTEM)


def test_known_builds_fake_root(tmp_path: Path) -> None:
    """PATH's build in the system release's place, each .qemu/<release> oldest first;
    iotests' variables do not change the list."""
    on_path = _bin_dir(tmp_path / "path")
    for name in ("11.1", "5.2"):
        _bin_dir(tmp_path / "root" / ".qemu" / name / "usr" / "bin")
    pinned = tmp_path / "root" / ".qemu" / "10.0"
    _bin_dir(pinned / "usr" / "bin")
    moddir = pinned / "usr" / "lib" / "x86_64-linux-gnu" / "qemu"
    moddir.mkdir(parents=True)
    (moddir / "m.so").write_bytes(b"")
    loader = pinned / "usr" / "lib" / "x86_64-linux-gnu" / "ld-linux-x86-64.so.2"
    loader.write_bytes(b"")
    env = _env(PATH=str(on_path), QEMU_PROG="/nope", QEMU_MODULE_DIR="/user/modules")
    builds = known_builds(tmp_path / "root", env)
    assert [b.label for b in builds] == [".qemu/5.2", "PATH", ".qemu/10.0", ".qemu/11.1"]
    assert builds[1].system == str(on_path / SYSTEM)
    assert builds[1].module_dir == "/user/modules"
    assert builds[2].module_dir == str(moddir)  # its own, never the user's
    # A prefix with its own libc runs through its own loader; one without, directly.
    assert builds[2].launcher[0] == str(loader)
    assert builds[2].command(builds[2].img)[-1] == builds[2].img
    assert builds[0].launcher == () and builds[1].launcher == ()
    # The same binary reached twice is one build.
    same = known_builds(tmp_path / "root", _env(PATH=str(pinned / "usr" / "bin")))
    assert len(same) == 3
    assert known_builds(tmp_path / "empty", _env()) == []


def _real_build() -> QemuBuild | None:
    """An installed build that runs without a loader of its own (symlinks keep no loader)."""
    return next((b for b in known_builds(ROOT) if not b.launcher), None)


@pytest.mark.needs_qemu
def test_build_tree_of_real_binaries_probes(tmp_path: Path) -> None:
    """A fake meson tree of symlinks to a real QEMU is found and runs."""
    real = _real_build()
    if real is None:
        pytest.fail("no QEMU installed: run scripts/setup.sh")
    tree = tmp_path / "build"
    (tree / "storage-daemon").mkdir(parents=True)
    for name, target in ((SYSTEM, real.system), (IMG, real.img), (IO, real.io), (NBD, real.nbd)):
        (tree / name).symlink_to(target)
    (tree / "storage-daemon" / QSD).symlink_to(real.qsd)
    b = find_build(str(tree), {"PATH": os.defpath})
    assert b.system == str(tree / SYSTEM) and b.module_dir is None
    # These symlinks stand in for a tree but point into a prefix, whose
    # modules QEMU only finds through the module dir.
    got = probe(dataclasses.replace(b, module_dir=real.module_dir), cache=tmp_path)
    want = probe(real, cache=tmp_path / "c2")
    assert got.version == want.version
    assert got.path == str(tree / SYSTEM)
