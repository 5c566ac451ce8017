"""The profiles: how many examples each of dev, ci and thorough draws, in one table.

``verify``, the CLI, the pytest plugin and this project's own Hypothesis profiles
(root ``conftest.py``) all read it, so "dev" means the same number everywhere.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Profile", "PROFILES"]


@dataclasses.dataclass(frozen=True)
class Profile:
    """Attributes:
    examples: examples drawn per case (``verify``) or per property (tests).
    shrink_seconds: how long each failed invariant may shrink its counterexample.
    timeout: seconds each case may take before it is reported as failed (None: no
      limit). The PR gate's profile has one, so a step that hangs fails the job
      instead of hanging it.
    sample: how many examples the expensive invariants (float64 replays, eager or
      mesh runs: ``Invariant.sampled``, see ``registry.COSTS``) must give a verdict
      on, beyond the first example of every shape bucket, which they always see;
      an invariant whose verdict is taken across examples runs on at least its
      ``Invariant.convincing`` examples (None: every example). The report shows
      how many examples each invariant ran on.
    """

    examples: int
    shrink_seconds: float
    timeout: float | None = None
    sample: int | None = None


PROFILES: dict[str, Profile] = {
    # a quick local look: one example per shape bucket and a few more; the
    # expensive invariants on every bucket and 3 examples.
    "dev": Profile(examples=10, shrink_seconds=10.0, sample=3),
    # the PR gate and `nox -s tests`: derandomized.
    "ci": Profile(examples=100, shrink_seconds=30.0, timeout=1200.0, sample=25),
    # before a release.
    "thorough": Profile(examples=1000, shrink_seconds=120.0, sample=200),
}
