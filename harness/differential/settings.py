"""The differential runner's hypothesis settings, and what the environment asks of it.

Two hypothesis settings profiles, registered as `qrc-differential-<name>`: `ci` (the
suite's: bounded, at a fixed seed) and `nightly` (long, at a drawn seed).
`settings_for(name, examples, steps)` is a profile's settings, optionally resized;
`Options.from_env` reads the QRC_DIFFERENTIAL_* variables.

One private use of hypothesis, kept on purpose: `shrink_budget` bounds the time
hypothesis spends shrinking one failure by setting
`hypothesis.internal.conjecture.engine.MAX_SHRINKING_SECONDS` (the engine's own comment
calls it monkeypatchable; there is no setting for it, and hypothesis declined to add one:
HypothesisWorks/hypothesis#3400), and words the warning the engine prints when the
budget runs out in our terms (its own speaks of five minutes and asks for a bug report).
Each try while shrinking is a fresh QEMU run: without the budget a failure shrinks for
up to hypothesis' 300 s where the CI profile allows 12 (SHRINK_SECONDS), and the public
alternative, `phases` without `Phase.shrink`, would report the failure unshrunk.
pyproject.toml bounds hypothesis (<7) and tests/test_differential_options.py fails when
an upgrade moves either name or stops honouring the budget.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

CI = "ci"
NIGHTLY = "nightly"
HYPOTHESIS_PROFILES = (CI, NIGHTLY)
# a profile's name as hypothesis knows it (HYPOTHESIS_PROFILE may name it)
PREFIX = "qrc-differential-"
CI_SEED = 0
# Seconds hypothesis may spend shrinking one divergence (each try is a fresh QEMU run).
SHRINK_SECONDS = {CI: 12, NIGHTLY: 300}

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "derandomize": False,  # the runner always gives an explicit seed (hypothesis.seed)
    "suppress_health_check": list(HealthCheck),
    "print_blob": False,
    "report_multiple_bugs": False,
}
settings.register_profile(PREFIX + CI, max_examples=10, stateful_step_count=20, **_COMMON)
settings.register_profile(PREFIX + NIGHTLY, max_examples=500, stateful_step_count=50, **_COMMON)


def settings_for(name: str, examples: int | None = None, steps: int | None = None) -> settings:
    """The hypothesis settings of profile `name` (ci, nightly), optionally resized."""
    if name not in HYPOTHESIS_PROFILES:
        known = ", ".join(HYPOTHESIS_PROFILES)
        raise ValueError(f"no differential profile {name!r}; known: {known}")
    s: settings = settings.get_profile(PREFIX + name)
    changes: dict[str, Any] = {}
    if examples is not None:
        changes["max_examples"] = examples
    if steps is not None:
        changes["stateful_step_count"] = steps
    return settings(s, **changes) if changes else s


@contextlib.contextmanager
def shrink_budget(seconds: int) -> Iterator[None]:
    """Bound hypothesis' shrinking time to `seconds` while the block runs (its engine
    allows 300 s and has no setting for it), and say so in our words when the budget
    runs out. The module docstring says why this reaches into hypothesis' engine."""
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError:  # pragma: no cover - tests/test_differential_options.py fails
        yield
        return
    old = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    old_report = getattr(engine, "report", None)  # hypothesis.reporting.report there
    if old is None or old_report is None:  # pragma: no cover - the same test fails
        yield
        return

    def report(text: object) -> None:
        if isinstance(text, str) and "working to shrink" in text:
            text = f"(shrinking stopped at its budget of {seconds} s)"
        old_report(text)

    engine.MAX_SHRINKING_SECONDS = int(seconds)
    setattr(engine, "report", report)  # noqa: B010 (not in the module's exports)
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = old
        setattr(engine, "report", old_report)  # noqa: B010


def _number(env: dict[str, str], name: str) -> int | None:
    v = env.get(name)
    if not v:
        return None
    try:
        return int(v, 0)
    except ValueError:
        raise ValueError(f"{name}={v!r} is not an integer") from None


@dataclass(frozen=True)
class Options:
    """What the environment asks for: profile, seed, sizes, where traces go."""

    profile: str = CI
    seed: int | None = None
    examples: int | None = None
    steps: int | None = None
    artifacts: Path | None = None
    # seconds hypothesis may shrink one divergence; None: the profile's (SHRINK_SECONDS)
    shrink_seconds: int | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Options:
        """QRC_DIFFERENTIAL_PROFILE (or HYPOTHESIS_PROFILE naming one of ours),
        QRC_DIFFERENTIAL_SEED, QRC_DIFFERENTIAL_EXAMPLES, QRC_DIFFERENTIAL_STEPS,
        QRC_DIFFERENTIAL_SHRINK_SECONDS, QRC_ARTIFACTS (traces go to its differential/
        subdirectory)."""
        env = dict(os.environ if environ is None else environ)
        prof = env.get("QRC_DIFFERENTIAL_PROFILE") or ""
        hyp = env.get("HYPOTHESIS_PROFILE", "")
        if not prof and hyp.removeprefix(PREFIX) in HYPOTHESIS_PROFILES:
            prof = hyp.removeprefix(PREFIX)
        prof = prof or CI
        if prof not in HYPOTHESIS_PROFILES:
            known = ", ".join(HYPOTHESIS_PROFILES)
            raise ValueError(f"QRC_DIFFERENTIAL_PROFILE={prof!r}: known {known}")
        art = env.get("QRC_ARTIFACTS")
        return cls(
            profile=prof,
            seed=_number(env, "QRC_DIFFERENTIAL_SEED"),
            examples=_number(env, "QRC_DIFFERENTIAL_EXAMPLES"),
            steps=_number(env, "QRC_DIFFERENTIAL_STEPS"),
            shrink_seconds=_number(env, "QRC_DIFFERENTIAL_SHRINK_SECONDS"),
            artifacts=Path(art) / "differential" if art else None,
        )

    def resolved_seed(self) -> int:
        """The CI profile's fixed seed unless one is given; nightly draws one."""
        if self.seed is not None:
            return self.seed
        if self.profile == CI:
            return CI_SEED
        return int.from_bytes(os.urandom(4), "little")

    def settings(self) -> settings:
        return settings_for(self.profile, self.examples, self.steps)

    def shrink_limit(self) -> int:
        """Seconds hypothesis may shrink one divergence: those asked for, else the
        profile's."""
        if self.shrink_seconds is None:
            return SHRINK_SECONDS[self.profile]
        return self.shrink_seconds
