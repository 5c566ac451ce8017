"""The registry of invariants: each name, what it catches, how it is checked, its cost.

A row (:class:`Invariant`) is declared in its family module, beside its assertion
and its check, with :func:`register`. Each check runs on a
:class:`~hybridcheck.describe.subject.Subject` and one
:class:`~hybridcheck.describe.subject.Example`; invariants judged across examples
also have a ``conclude`` step, run once after the search. :func:`hybridcheck.verify`,
the CLI, the pytest plugin and the README's table all read :data:`REGISTRY`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from hybridcheck.describe.fields import INVARIANT_NAMES
from hybridcheck.describe.subject import TRAJECTORY_STEPS

__all__ = [
    "COSTS",
    "register",
    "unregister",
    "EXPENSIVE",
    "Invariant",
    "REGISTRY",
    "cost_text",
    "readme_row",
    "static_not_applicable",
]


COSTS: dict[str, str] = {
    "step": "the jitted step (once per example, shared by every invariant)",
    "grad": "the jitted gradient (once per example, shared)",
    "trajectory": f"{TRAJECTORY_STEPS} consecutive jitted steps and gradients (shared)",
    "reduce": "per-leaf summaries reduced on the device (a pass over the params)",
    "host": "the inputs copied to the host (a pass over the params)",
    "convert": "the migration's converter (and its inverse)",
    "eager": "the step op by op under `jax.disable_jit` (several jitted steps)",
    "float64": "float64 replays of loss, gradient or step (compiled once per shape)",
    "mesh": "a run on a mesh of forced host devices",
    "batches": "the jitted step on a few other batches of the example's shape (one "
    "per batch leaf, two halves of the rows), their gradients only where a leaf "
    "did not move differently",
}
"""The units of ``Invariant.cost``: what an invariant spends per example."""
EXPENSIVE = frozenset({"eager", "float64", "mesh", "batches"})
"""Units that cost several train steps each: invariants that need one are sampled."""


@dataclasses.dataclass(frozen=True)
class Invariant:
    """One invariant of the registry.

    Attributes:
      name: ``<name>`` of ``assert_<name>``, the report line and the README row.
      catches: one line (Markdown) saying what a failure means.
      check: ``check(subject, example)``: raises ``AssertionError`` on a failure,
        :class:`InvariantNotApplicable` outside its precondition.
      conclude: ``conclude(subject)`` for a verdict across all examples, run once
        after the search (``check`` then only gathers evidence); a string it
        returns is a note for the report (how a held invariant was compared).
      needs_sgd: applies only to plain SGD steps.
      needs_devices: applies only with two or more devices.
      needs_field: applies only to cases that set this HybridCase field.
      kind: ``"step"`` (a HybridCase's step) or ``"migration"`` (a MigrationCase).
      cost: what it needs per example, in the units of :data:`COSTS`. One with an
        :data:`EXPENSIVE` unit is *sampled*: it runs on the first example of every
        shape bucket, then on ``max(Profile.sample, convincing)`` examples in all;
        the others run on every example.
      convincing: the fewest examples a sampled invariant needs for its verdict:
        1 where the bug it exists for shows on any example; more where the verdict
        is taken across examples.
      enough: the most examples a sampled invariant runs on (None: the profile's
        sample), for one whose bug cannot depend on the values drawn, only on
        their shapes: a step jit can trace cannot branch on values, so a
        mutated input or host randomness shows on every example where the update
        is not zero. A few cover the degenerate ones (a zero batch).
      prepare: ``prepare(subject, example)``, run on each example the invariant
        runs on before the case's own code touches it (a copy of the inputs).
    """

    name: str
    catches: str
    check: Callable[[Any, Any], None]
    conclude: Callable[[Any], str | None] | None = None
    needs_sgd: bool = False
    needs_devices: bool = False
    needs_field: str = ""
    kind: str = "step"
    cost: tuple[str, ...] = ("step", "grad", "reduce")
    convincing: int = 1
    enough: int | None = None
    prepare: Callable[[Any, Any], None] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.cost) - set(COSTS))
        if unknown:
            raise ValueError(
                f"Invariant({self.name!r}).cost names unknown units {unknown}; the "
                f"units are {list(COSTS)}"
            )
        if not isinstance(self.convincing, int) or self.convincing < 1:
            raise ValueError(
                f"Invariant({self.name!r}).convincing must be an int >= 1, got "
                f"{self.convincing!r}"
            )
        if self.enough is not None and (
            not isinstance(self.enough, int) or self.enough < self.convincing
        ):
            raise ValueError(
                f"Invariant({self.name!r}).enough must be None or an int >= "
                f"convincing ({self.convincing}), got {self.enough!r}"
            )

    @property
    def sampled(self) -> bool:
        """Whether it runs on a sample of the examples (see ``cost``)."""
        return bool(EXPENSIVE & set(self.cost))

    def target(self, sample: int | None) -> int | None:
        """How many examples a sampled invariant runs on under a profile's
        ``sample`` (None: every example)."""
        if sample is None:
            return None
        target = max(sample, self.convincing)
        return target if self.enough is None else min(target, self.enough)


REGISTRY: dict[str, Invariant] = {}
"""Every invariant by name, in report order: each family module of
:mod:`hybridcheck.invariants` registers its rows where it defines them, and the
families are imported in report order. ``verify``, the CLI's ``--invariant``, the
pytest plugin and the README's table all read this one table."""


def register(*rows: Invariant) -> None:
    """Adds ``rows`` to :data:`REGISTRY`, in order (a family module's last statement).

    Raises:
      TypeError: a row that is not an :class:`Invariant`.
      ValueError: a name already registered.
    """
    for row in rows:
        if not isinstance(row, Invariant):
            raise TypeError(
                f"register() takes Invariant rows, got {type(row).__name__}: {row!r}"
            )
        if row.name in REGISTRY:
            raise ValueError(
                f"invariant {row.name!r} is registered twice; names are unique (the "
                "report line, the README row and assert_<name>)"
            )
        REGISTRY[row.name] = row
        INVARIANT_NAMES.add(row.name)  # no case's extra_checks may take it


def unregister(name: str) -> Invariant:
    """Removes and returns the row ``name`` (for tests that register a toy)."""
    if name not in REGISTRY:
        raise KeyError(f"no invariant {name!r} is registered; known: {list(REGISTRY)}")
    INVARIANT_NAMES.discard(name)
    return REGISTRY.pop(name)


def cost_text(inv: Invariant) -> str:
    """The README's cost cell: the units it spends per example, and its sample."""
    text = ", ".join(f"`{unit}`" for unit in inv.cost)
    if inv.sampled:
        at_least = f", >= {inv.convincing} examples" if inv.convincing > 1 else ""
        at_most = f", <= {inv.enough} examples" if inv.enough is not None else ""
        text += f" (sampled{at_least}{at_most})"
    return text


def readme_row(inv: Invariant) -> str:
    """The invariant's row of the README's table: name, what it catches, its cost."""
    return f"| `{inv.name}` | {inv.catches} | {cost_text(inv)} |"


def static_not_applicable(inv: Invariant, subject: Any) -> str | None:
    """Why ``inv`` cannot apply to ``subject`` at all (None if it may)."""
    if inv.needs_sgd and not subject.sgd:
        return "the step is not plain SGD (HybridCase.sgd is False)"
    if inv.needs_field and getattr(subject, inv.needs_field) is None:
        owner = "MigrationCase" if inv.kind == "migration" else "HybridCase"
        return (
            f"the case does not set {owner}.{inv.needs_field} (see the README's "
            "invariant table)"
        )
    if inv.needs_devices and len(jax.devices()) < 2:
        return (
            f"only {len(jax.devices())} device; run with XLA_FLAGS="
            "--xla_force_host_platform_device_count=4 (nox -s multidevice)"
        )
    return None
