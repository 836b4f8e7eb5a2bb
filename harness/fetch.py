"""`qrc fetch`: unpack a Debian release's QEMU, with its whole library closure, into a prefix.

Why this shape: a trixie QEMU needs trixie's glibc and libraries, which a
bookworm host does not have.  apt resolves ``qemu-system-x86 qemu-utils`` at
the pinned version against an *empty* dpkg status, so it names every package
down to libc6; ``dpkg -x`` of each gives a prefix that carries its own dynamic
loader, and harness/builds.py runs the binaries through it.  Nothing is
installed on the host.

The apt configuration is private (``<cache>/apt/<name>``, the cache being
``$QRC_CACHE_DIR`` or ``~/.cache/qrc``, outside the checkout so that every clone
on the machine shares it): its sources are the mirror the host's own apt sources
name, with the release's suites; its package lists and downloaded archives stay
there, so a second fetch, from this checkout or another, downloads nothing.
The prefix is built beside its final place (``.qemu/<name>``) and swapped in whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.builds import find_build, version_line
from harness.errors import HarnessError, SetupError
from harness.releases import FETCHED, PACKAGES, Release

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MANIFEST = ".qrc-release.json"

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Mirror:
    """The Debian archive the host's apt uses: its URI and the key that signs it."""

    uri: str
    keyring: str


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
        elif line[0] in " \t" and key:
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            stanza[key] = value.strip()


def host_mirror(codename: str, etc: Path = Path("/etc/apt")) -> Mirror:
    """The mirror of the host's main archive entry for `codename` (not -security, not -updates).

    Read from deb822 ``.sources`` files first, then one-line ``.list`` files,
    so that no host name is ever written into the project.
    """
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for st in _deb822_stanzas(path.read_text(errors="replace")):
            if st.get("enabled", "yes").lower() == "no" or "deb" not in st.get("types", "").split():
                continue
            if codename in st.get("suites", "").split() and st.get("uris"):
                return Mirror(st["uris"].split()[0], st.get("signed-by", "") or DEFAULT_KEYRING)
    lists = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for raw in path.read_text(errors="replace").splitlines():
            line = raw.split("#", 1)[0]
            opts = re.search(r"\[([^]]*)\]", line)
            words = re.sub(r"\[[^]]*\]", " ", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                signed = re.search(r"signed-by=(\S+)", opts.group(1)) if opts else None
                return Mirror(words[1], signed.group(1) if signed else DEFAULT_KEYRING)
    raise SetupError(f"no apt source for Debian {codename} in {etc}: cannot derive a mirror")


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise SetupError(f"{os_release} names no VERSION_CODENAME: is this Debian?")


class PrivateApt:
    """apt-get and apt-cache on a private configuration: own sources, lists, cache, empty status."""

    def __init__(self, home: Path, release: Release, mirror: Mirror) -> None:
        self.home = home
        self.release = release
        self.sources = "".join(
            f"deb [signed-by={mirror.keyring}] {mirror.uri} {suite} main\n"
            for suite in release.suites
        )

    def options(self) -> list[str]:
        h = self.home
        opts = {
            "Dir::Etc::SourceList": h / "sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State::Lists": h / "lists",
            "Dir::State::status": "/dev/null",
            "Dir::State::extended_states": h / "extended_states",
            "Dir::Cache": h / "cache",
            "Dir::Cache::Archives": h / "archives",
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "APT::Install-Recommends": "false",
            "Acquire::Languages": "none",
        }
        if os.geteuid() == 0:
            opts["APT::Sandbox::User"] = "root"  # downloads into a root-owned private dir
        else:
            opts["Debug::NoLocking"] = "1"
        return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]

    def prepare(self) -> None:
        for sub in ("lists/partial", "archives/partial", "cache"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        src = self.home / "sources.list"
        if not src.is_file() or src.read_text() != self.sources:
            # Other sources: the old lists say nothing about them.
            shutil.rmtree(self.home / "lists", ignore_errors=True)
            (self.home / "lists" / "partial").mkdir(parents=True)
            src.write_text(self.sources)

    def has_lists(self) -> bool:
        # Packages files may be stored compressed (_Packages.lz4, .gz) by apt.conf.d
        return any("_Packages" in p.name for p in (self.home / "lists").glob("*"))

    def run(self, argv: Sequence[str], what: str) -> str:
        cmd = [argv[0], *self.options(), *argv[1:]]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except FileNotFoundError as exc:
            raise SetupError(f"{what}: {argv[0]} is not available (is this Debian?)") from exc
        except subprocess.TimeoutExpired as exc:
            raise SetupError(f"{what}: {argv[0]} did not finish within 900 s") from exc
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:]
            raise SetupError(f"{what} failed: {' '.join(tail) or f'exit {proc.returncode}'}")
        return proc.stdout

    def install_argv(self, *extra: str) -> list[str]:
        pins = [f"{p}={self.release.debian_version}" for p in PACKAGES]
        return ["apt-get", "install", "-y", "-q", "-t", self.release.suite, *extra, *pins]

    def closure(self) -> list[tuple[str, str, str]]:
        """(package, version, arch) of every package apt would unpack, resolved from the lists."""
        out = self.run(self.install_argv("-s"), f"resolving QEMU {self.release.name}")
        found = re.findall(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)", out, re.M)
        if not found:
            raise SetupError(f"resolving QEMU {self.release.name}: apt planned no package")
        return [(n.split(":", 1)[0], v, a) for n, v, a in found]

    def offered(self) -> str:
        """What the lists offer of qemu-system-x86 in the release's suite, for the refusal line."""
        out = self.run(["apt-cache", "madison", PACKAGES[0]], "apt-cache madison")
        vs = [
            f.split("|")[1].strip()
            for f in out.splitlines()
            if f.count("|") >= 2 and f" {self.release.suite}/" in f.split("|")[2]
        ]
        return ", ".join(vs) or "no version at all"

    def archive(self, name: str, version: str, arch: str) -> Path:
        # apt quotes ':' (the epoch) in archive file names.
        return self.home / "archives" / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where downloads are kept between runs: $QRC_CACHE_DIR, else $XDG_CACHE_HOME/qrc."""
    env = os.environ if environ is None else environ
    if env.get("QRC_CACHE_DIR"):
        return Path(env["QRC_CACHE_DIR"]).resolve()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).resolve() / "qrc"


def installed_version(prefix: Path) -> str | None:
    """The Debian version the manifest of an unpacked prefix records, or None."""
    try:
        data = json.loads((prefix / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    v = data.get("debian_version") if isinstance(data, dict) else None
    return v if isinstance(v, str) else None


def _reported_version(prefix: Path) -> str:
    """The ``(Debian ...)`` version qemu-system-x86_64 reports, run the way every run will
    run it: as the build harness/builds.py makes of the prefix (its loader, its modules)."""
    try:
        build = find_build(str(prefix), {})
    except HarnessError as exc:
        raise SetupError(f"{prefix}: not a usable QEMU prefix: {exc}") from exc
    if not build.launcher:
        raise SetupError(f"{prefix}: the unpacked packages carry no dynamic loader")
    line = version_line(build.command(build.system), build.env())
    m = re.search(r"\(Debian ([^)]+)\)", line or "")
    if m is None:
        raise SetupError(
            f"{build.system} does not run through its own loader: {line or 'no output'}"
        )
    return m.group(1)


def _unpack(debs: Sequence[Path], into: Path) -> None:
    def one(deb: Path) -> None:
        proc = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(into)], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise SetupError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()[-200:]}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, debs))


def fetch_release(release: Release, root: Path, mirror: Mirror, say: Say) -> bool:
    """Make ``.qemu/<name>`` hold exactly the pinned release; True when it had to change."""
    prefix = release.prefix(root)
    if installed_version(prefix) == release.debian_version:
        return False
    apt = PrivateApt(cache_dir() / "apt" / release.name, release, mirror)
    apt.prepare()
    plan: list[tuple[str, str, str]] | None = None
    if apt.has_lists():
        try:
            plan = apt.closure()
        except SetupError:
            plan = None  # stale lists: update and resolve again
    if plan is None:
        say(f"fetching QEMU {release.name} from {release.suite}")
        apt.run(["apt-get", "update", "-q"], f"apt-get update ({' '.join(release.suites)})")
        try:
            plan = apt.closure()
        except SetupError as exc:
            raise SetupError(
                f"{release.suite} offers qemu-system-x86 {apt.offered()}, not the pinned "
                f"{release.debian_version} (harness/releases.py): {exc}"
            ) from exc
    debs = [apt.archive(*p) for p in plan]
    if not all(d.is_file() for d in debs):
        apt.run(apt.install_argv("--download-only"), f"downloading QEMU {release.name}")
    missing = [d.name for d in debs if not d.is_file()]
    if missing:
        raise SetupError(f"apt downloaded QEMU {release.name} but {missing[0]} is not in its cache")

    partial = prefix.with_name(prefix.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _unpack(debs, partial)
    got = _reported_version(partial)
    if got != release.debian_version:
        raise SetupError(
            f"unpacked QEMU {release.name} reports Debian {got}, not the pinned "
            f"{release.debian_version}"
        )
    manifest = {
        "name": release.name,
        "suite": release.suite,
        "debian_version": got,
        "packages": [f"{n}={v}" for n, v, _ in plan],
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    # Swap in whole: readers see the old tree or the new one, never half of one.
    old = prefix.with_name(prefix.name + f".old.{os.getpid()}")
    if prefix.exists():
        prefix.rename(old)
    partial.rename(prefix)
    shutil.rmtree(old, ignore_errors=True)
    return True


def fetch(names: Sequence[str], root: Path, say: Say, etc: Path = Path("/etc/apt")) -> list[str]:
    """Fetch the named releases (all fetched ones when empty); the names that changed."""
    root = root.resolve()  # apt reads relative Dir:: paths against its own dirs
    by_name = {r.name: r for r in FETCHED}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SetupError(f"no fetched release {unknown[0]!r}; known: {', '.join(by_name)}")
    wanted = [by_name[n] for n in names] if names else list(FETCHED)
    todo = [r for r in wanted if installed_version(r.prefix(root)) != r.debian_version]
    if not todo:
        return []
    mirror = host_mirror(host_codename(), etc)
    return [r.name for r in todo if fetch_release(r, root, mirror, say)]
