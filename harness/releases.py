"""The QEMU releases Debian ships, as data: which suite, which exact package version.

Adding a release is one row here (where to fetch it) and one profile in
harness/model/profiles.py (how it behaves).  Every row but the system's is
fetched by `qrc fetch` into ``.qemu/<name>`` with its whole library closure and
run through that prefix's own dynamic loader (harness/builds.py), so a
trixie build runs on a bookworm host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# What the harness runs: the emulator (qemu-system-x86_64, and through its
# dependencies qemu-system-common's storage daemon) and the tools (qemu-img,
# qemu-io, qemu-nbd).
PACKAGES = ("qemu-system-x86", "qemu-utils")

QEMU_ROOT = Path(".qemu")


@dataclass(frozen=True, slots=True)
class Release:
    """One Debian-shipped QEMU: where its packages come from and which version is pinned."""

    name: str
    # The suite holding the pinned version, and the suites its dependencies
    # resolve against (a backports suite needs its base suite).
    suite: str
    suites: tuple[str, ...]
    # The exact Debian version of qemu-system-x86 and qemu-utils; a mirror
    # offering anything else is refused, never silently taken.
    debian_version: str
    # The system's QEMU (apt-installed on the host) is not fetched.
    system: bool = False

    @property
    def upstream(self) -> str:
        """ "11.1.3" from "1:11.1.3+ds-2~bpo13+1"; Debian's 7.2 packages say "7.2"."""
        v = self.debian_version.split(":", 1)[-1]
        return v.split("+", 1)[0].split("-", 1)[0]

    def prefix(self, root: str | os.PathLike[str]) -> Path:
        return Path(root) / QEMU_ROOT / self.name


# Oldest first: the order of the matrix's columns and of `qrc probe --all`.
RELEASES: tuple[Release, ...] = (
    Release("5.2", "bullseye", ("bullseye",), "1:5.2+dfsg-11+deb11u3"),
    Release("7.2", "bookworm", ("bookworm",), "1:7.2+dfsg-7+deb12u18+b3", system=True),
    Release(
        "10.0-bpo",
        "bookworm-backports",
        ("bookworm", "bookworm-backports"),
        "1:10.0.2+ds-2+deb13u1~bpo12+1",
    ),
    Release("10.0", "trixie", ("trixie",), "1:10.0.13+ds-0+deb13u1"),
    Release("11.1", "trixie-backports", ("trixie", "trixie-backports"), "1:11.1.3+ds-2~bpo13+1"),
)

FETCHED: tuple[Release, ...] = tuple(r for r in RELEASES if not r.system)


def release_named(name: str) -> Release:
    """The row called `name`; KeyError names the known ones."""
    for r in RELEASES:
        if r.name == name:
            return r
    raise KeyError(f"no release {name!r}; known: {', '.join(r.name for r in RELEASES)}")
