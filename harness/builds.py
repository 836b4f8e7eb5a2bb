"""Which QEMU binaries a run uses.

A run must never mix binaries from two QEMU versions by accident, so a
build is found once, as a unit, and every later step takes its paths from
the resulting `QemuBuild` instead of looking at PATH again.

Discovery order (first match wins):
  1. ``--qemu-dir DIR``: a meson build tree, an install prefix, or unpacked
     Debian packages (DIR/usr/...).
  2. iotests' variables (QEMU_PROG, QEMU_IMG_PROG, QEMU_IO_PROG,
     QEMU_NBD_PROG, QSD_PROG); a missing one falls back to the sibling of
     QEMU_PROG, then to PATH.
  3. PATH.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BinaryMissing, BinaryNotExecutable, BuildNotFound

SYSTEM = "qemu-system-x86_64"
IMG = "qemu-img"
IO = "qemu-io"
NBD = "qemu-nbd"
QSD = "qemu-storage-daemon"

# The pinned second version: scripts/setup.sh unpacks it here.
PINNED_DIR = Path(".qemu") / "10.0"

# Where distributions put loadable modules under a prefix; Debian's
# binaries are not relocatable, so an unpacked copy would otherwise load
# the system's (other version's) modules and fail.
_MODULE_SUBDIRS = ("lib/x86_64-linux-gnu/qemu", "lib64/qemu", "lib/qemu")

# iotests' variable for each binary, in QemuBuild field order.
_ENV_VARS = {
    "system": "QEMU_PROG",
    "img": "QEMU_IMG_PROG",
    "io": "QEMU_IO_PROG",
    "nbd": "QEMU_NBD_PROG",
    "qsd": "QSD_PROG",
}
_NAMES = {"system": SYSTEM, "img": IMG, "io": IO, "nbd": NBD, "qsd": QSD}


@dataclass(frozen=True)
class QemuBuild:
    """One QEMU version's binaries, plus what they need in the environment."""

    label: str
    system: str
    img: str
    io: str
    nbd: str
    qsd: str
    module_dir: str | None = None
    # Firmware/data directory of an unpacked prefix (for ``-L``); None when
    # the binary finds its own.
    data_dir: str | None = None

    def env(self) -> dict[str, str]:
        """Variables to add to the environment when running these binaries."""
        if self.module_dir is None:
            return {}
        return {"QEMU_MODULE_DIR": self.module_dir}

    def binaries(self) -> dict[str, str]:
        """Field name -> path, for error messages and reports."""
        return {
            "system": self.system,
            "img": self.img,
            "io": self.io,
            "nbd": self.nbd,
            "qsd": self.qsd,
        }


def _check_executable(path: str) -> str:
    """Return `path` if it can be run, else raise BinaryNotExecutable."""
    if not os.path.isfile(path):
        raise BinaryNotExecutable(f"{path}: not a regular file")
    if not os.access(path, os.X_OK):
        raise BinaryNotExecutable(f"{path}: not executable")
    return path


def _module_dir_under(prefix: Path) -> str | None:
    """The first candidate module directory under `prefix` holding modules."""
    for sub in _MODULE_SUBDIRS:
        cand = prefix / sub
        if cand.is_dir() and any(cand.glob("*.so")):
            return str(cand)
    return None


def _data_dir_under(prefix: Path) -> str | None:
    cand = prefix / "share" / "qemu"
    return str(cand) if cand.is_dir() else None


def _from_qemu_dir(qemu_dir: str, environ: Mapping[str, str]) -> QemuBuild:
    """Recognise a build tree, an install prefix or unpacked Debian packages."""
    root = Path(os.path.abspath(qemu_dir))
    if not root.exists():
        raise BuildNotFound(f"--qemu-dir {qemu_dir}: no such directory")
    if not root.is_dir():
        raise BuildNotFound(f"--qemu-dir {qemu_dir}: not a directory")

    paths: dict[str, Path]
    module_dir: str | None = None
    data_dir: str | None = None
    if (root / SYSTEM).exists():
        # Meson build tree: modules are *.so in the tree itself and QEMU finds
        # them from its own location, so no module dir is set.
        paths = {k: root / n for k, n in _NAMES.items()}
        paths["qsd"] = root / "storage-daemon" / QSD
        layout = "build tree"
    else:
        for prefix in (root, root / "usr"):
            if (prefix / "bin" / SYSTEM).exists():
                paths = {k: prefix / "bin" / n for k, n in _NAMES.items()}
                module_dir = _module_dir_under(prefix)
                data_dir = _data_dir_under(prefix)
                layout = f"install prefix {prefix}"
                break
        else:
            raise BuildNotFound(
                f"--qemu-dir {qemu_dir}: no {SYSTEM} in {root}, {root}/bin or {root}/usr/bin "
                "(looked for a build tree, an install prefix and unpacked Debian packages)"
            )
    missing = [p.name for p in paths.values() if not p.exists()]
    if missing:
        raise BinaryMissing(
            f"--qemu-dir {qemu_dir}: {layout} has {SYSTEM} but not {', '.join(missing)}"
        )
    checked = {k: _check_executable(str(p)) for k, p in paths.items()}
    user_module_dir = environ.get("QEMU_MODULE_DIR")
    return QemuBuild(
        label=qemu_dir,
        module_dir=user_module_dir or module_dir,
        data_dir=data_dir,
        **checked,
    )


def _which(name: str, environ: Mapping[str, str]) -> str | None:
    found = shutil.which(name, path=environ.get("PATH", os.defpath))
    return os.path.abspath(found) if found else None


def _resolve_var(var: str, value: str, environ: Mapping[str, str]) -> str:
    """A path from an iotests variable; bare names are looked up on PATH."""
    if os.sep not in value:
        found = _which(value, environ)
        if found is None:
            raise BinaryMissing(f"{var}={value}: not found on PATH")
        return found
    path = os.path.abspath(value)
    if not os.path.exists(path):
        raise BinaryMissing(f"{var}={value}: no such file")
    return _check_executable(path)


def _sibling(system: str, key: str) -> str | None:
    """The binary next to qemu-system-x86_64 (build tree or bin dir)."""
    here = Path(system).parent
    cands = [here / _NAMES[key]]
    if key == "qsd":
        cands.insert(0, here / "storage-daemon" / QSD)
    for cand in cands:
        if cand.exists():
            return str(cand)
    return None


def _from_env_and_path(environ: Mapping[str, str]) -> QemuBuild:
    """iotests' variables, then siblings of QEMU_PROG, then PATH."""
    used = [v for v in _ENV_VARS.values() if environ.get(v)]
    system_var = environ.get("QEMU_PROG")
    resolved: dict[str, str] = {}
    if system_var:
        resolved["system"] = _resolve_var("QEMU_PROG", system_var, environ)
    else:
        found = _which(SYSTEM, environ)
        if found is None:
            raise BuildNotFound(
                f"no {SYSTEM} on PATH: install QEMU (apt-get install qemu-system-x86 "
                "qemu-utils), or pass --qemu-dir DIR, or set QEMU_PROG"
            )
        resolved["system"] = _check_executable(found)

    missing: list[str] = []
    for key, var in _ENV_VARS.items():
        if key == "system":
            continue
        value = environ.get(var)
        path: str | None
        if value:
            path = _resolve_var(var, value, environ)
        else:
            path = _sibling(resolved["system"], key) if system_var else None
            if path is None:
                path = _which(_NAMES[key], environ)
        if path is None:
            missing.append(_NAMES[key])
        else:
            resolved[key] = _check_executable(path)
    if missing:
        raise BinaryMissing(
            f"found {resolved['system']} but not {', '.join(missing)} "
            f"(looked {'next to it and ' if system_var else ''}on PATH)"
        )
    return QemuBuild(
        label="env" if used else "PATH",
        module_dir=environ.get("QEMU_MODULE_DIR") or None,
        system=resolved["system"],
        img=resolved["img"],
        io=resolved["io"],
        nbd=resolved["nbd"],
        qsd=resolved["qsd"],
    )


def find_build(qemu_dir: str | None, environ: Mapping[str, str]) -> QemuBuild:
    """The build the user asked for: --qemu-dir, then iotests' variables, then PATH."""
    if qemu_dir is not None:
        return _from_qemu_dir(qemu_dir, environ)
    return _from_env_and_path(environ)


def known_builds(
    project_root: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> list[QemuBuild]:
    """Every build the tests run against: PATH's QEMU and the pinned .qemu/10.0.

    iotests' variables are ignored here on purpose: this list is "what is
    installed", so that both QEMU versions are exercised on every run.
    """
    env = dict(os.environ if environ is None else environ)
    for var in _ENV_VARS.values():
        env.pop(var, None)
    builds: list[QemuBuild] = []
    with contextlib.suppress(BuildNotFound, BinaryNotExecutable):
        builds.append(_from_env_and_path(env))
    pinned = Path(project_root) / PINNED_DIR
    if (pinned / "usr" / "bin" / SYSTEM).exists():
        # The pinned copy always uses its own modules, whatever the user set.
        env.pop("QEMU_MODULE_DIR", None)
        build = _from_qemu_dir(str(pinned), env)
        builds.append(dataclasses.replace(build, label=str(PINNED_DIR)))
    seen: set[str] = set()
    unique: list[QemuBuild] = []
    for build in builds:
        key = os.path.realpath(build.system)
        if key not in seen:
            seen.add(key)
            unique.append(build)
    return unique
