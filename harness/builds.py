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
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness import project_root
from harness.errors import BinaryMissing, BinaryNotExecutable, BuildNotFound
from harness.releases import RELEASES

SYSTEM = "qemu-system-x86_64"
IMG = "qemu-img"
IO = "qemu-io"
NBD = "qemu-nbd"
QSD = "qemu-storage-daemon"

# The dynamic loader an unpacked Debian prefix carries (merged-/usr suites
# keep it in usr/lib, bullseye in lib); its lib64 link is absolute (the host's).
_LOADERS = (
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
)
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")

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
    # What runs each binary: empty for a host build; an unpacked prefix's own
    # dynamic loader and library path, so a trixie build runs on bookworm.
    launcher: tuple[str, ...] = ()

    def command(self, binary: str | os.PathLike[str]) -> list[str]:
        """argv[0..] that runs `binary` through this build's loader, if it has one and
        `binary` is one of its own (anything else runs as it is)."""
        path = os.fspath(binary)
        if self.launcher and path in self.binaries().values():
            return [*self.launcher, path]
        return [path]

    def data_args(self) -> list[str]:
        """``-L DIR`` for an unpacked prefix: run through its loader, QEMU cannot find
        its data directory from its own location."""
        return ["-L", self.data_dir] if self.data_dir else []

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


def loader_launcher(root: Path) -> tuple[str, ...] | None:
    """``(loader, --library-path, dirs)`` of an unpacked prefix with its own libc, else None.

    Debian's packages unpacked with ``dpkg -x`` (harness/fetch.py) hold the whole
    library closure, loader included.  Running the binaries through that loader
    with the prefix's library directories first keeps the host's glibc and
    libraries out; ``/`` itself is the host, never a prefix.
    """
    root = Path(os.path.abspath(root))
    if root == Path("/"):
        return None
    for rel in _LOADERS:
        cand = root / rel
        if cand.exists():
            loader = cand
            break
    else:
        return None
    dirs = [root / d for d in _LIB_DIRS]
    for conf in sorted((root / "etc" / "ld.so.conf.d").glob("*.conf")):
        for line in conf.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("/"):
                dirs.append(root / line.lstrip("/"))
    seen = [str(d) for d in dict.fromkeys(dirs) if d.is_dir()]
    return (str(loader), "--library-path", ":".join(seen))


def version_line(argv: list[str], env: Mapping[str, str]) -> str | None:
    """The first line of ``argv --version``, or None when it does not run."""
    try:
        proc = subprocess.run(
            [*argv, "--version"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout or proc.stderr).splitlines()
    return lines[0].strip() if lines else None


def _dist_root(prefix: Path) -> Path:
    """The root of an unpacked tree: PREFIX for PREFIX/usr, PREFIX itself otherwise."""
    return prefix.parent if prefix.name == "usr" else prefix


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
    launcher: tuple[str, ...] | None = None
    prefix_of_bin = root
    if (root / SYSTEM).exists() and (
        (root / "build.ninja").exists() or (root / "storage-daemon").is_dir()
    ):
        # Meson build tree: modules are *.so in the tree itself and QEMU finds
        # them from its own location, so no module dir is set.
        paths = {k: root / n for k, n in _NAMES.items()}
        paths["qsd"] = root / "storage-daemon" / QSD
        layout = "build tree"
    elif (root / SYSTEM).exists():
        # A flat directory of binaries (/usr/bin, PREFIX/usr/bin): when it is a
        # prefix's bin, the prefix's modules, data and loader go with it.
        paths = {k: root / n for k, n in _NAMES.items()}
        layout = "directory"
        if root.name == "bin":
            prefix_of_bin = root.parent
            module_dir = _module_dir_under(root.parent)
            data_dir = _data_dir_under(root.parent)
            launcher = loader_launcher(_dist_root(root.parent))
    else:
        for prefix in (root, root / "usr"):
            if (prefix / "bin" / SYSTEM).exists():
                paths = {k: prefix / "bin" / n for k, n in _NAMES.items()}
                prefix_of_bin = prefix
                module_dir = _module_dir_under(prefix)
                data_dir = _data_dir_under(prefix)
                launcher = loader_launcher(_dist_root(prefix))
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
    if launcher is not None:
        # Its own modules, whatever the user set: another version's do not load.
        # Even a prefix that unpacked none (bullseye's modules are all in
        # recommended packages) names its own, never the host's directory.
        user_module_dir = None
        module_dir = module_dir or str(prefix_of_bin / _MODULE_SUBDIRS[0])
    return QemuBuild(
        label=qemu_dir,
        module_dir=user_module_dir or module_dir,
        data_dir=data_dir,
        launcher=launcher or (),
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
    """Every build the tests run against, oldest release first: PATH's QEMU in the
    system release's place, and each fetched release's prefix (``.qemu/<name>``).

    iotests' variables are ignored here on purpose: this list is "what is
    installed", so that every QEMU release is exercised on every run.
    """
    env = dict(os.environ if environ is None else environ)
    for var in _ENV_VARS.values():
        env.pop(var, None)
    builds: list[QemuBuild] = []
    for release in RELEASES:
        if release.system:
            with contextlib.suppress(BuildNotFound, BinaryNotExecutable):
                builds.append(_from_env_and_path(env))
            continue
        prefix = release.prefix(project_root)
        if (prefix / "usr" / "bin" / SYSTEM).exists():
            build = _from_qemu_dir(str(prefix), env)
            label = str(prefix.relative_to(project_root))
            builds.append(dataclasses.replace(build, label=label))
    seen: set[str] = set()
    unique: list[QemuBuild] = []
    for build in builds:
        key = os.path.realpath(build.system)
        if key not in seen:
            seen.add(key)
            unique.append(build)
    return unique


def installed_builds() -> list[QemuBuild]:
    """known_builds of this checkout (PATH's QEMU and each .qemu/<release>);
    BuildNotFound when there is none."""
    builds = known_builds(project_root())
    if not builds:
        raise BuildNotFound("no QEMU on PATH and no .qemu/<release>: run scripts/setup.sh")
    return builds
