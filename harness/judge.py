"""Which model profile judges a build: the one its probed version picks, or one named.

In the middle of a bisection QEMU reports a development version (8.2.50 is on its way
to 9.0): the probed version's profile expects that version's behaviour, known bugs
included, so a case whose verdict should flip at the commit under search would not.
`--profile NAME` (qrc run, qrc bisect, pytest) judges every build against one
release's behaviour instead.
"""

from __future__ import annotations

from harness.errors import UsageError
from harness.model import Profile, profile_for
from harness.model import profiles as _profiles


def named_profile(name: str) -> Profile:
    """The profile called `name`; UsageError (one line) naming the known ones if none is."""
    try:
        return _profiles.profile_named(name)
    except KeyError:
        known = ", ".join(p.name for p in _profiles.PROFILES)
        raise UsageError(f"--profile {name}: no such model profile (known: {known})") from None


def judging_profile(name: str | None, version: tuple[int, int, int]) -> Profile:
    """`name`'s profile when given, else the probed `version`'s."""
    return named_profile(name) if name is not None else profile_for(version)
