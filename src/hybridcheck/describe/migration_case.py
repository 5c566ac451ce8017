"""MigrationCase: a model before and after a Linen -> NNX migration, and the converter.

A migration PR replaces Linen code with NNX code and converts the checkpoint. Its
bugs are semantic (an epsilon, an activation, a transposed kernel, a dropped bias),
so the migrated step is consistent with itself and only a comparison with the model
before the PR catches them. The comparisons are in
:mod:`hybridcheck.invariants.migration`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from hypothesis import strategies as st

from hybridcheck.describe import specs as _partitioning
from hybridcheck.describe.converters import case_layout_converter
from hybridcheck.describe.fields import check_migration_case
from hybridcheck.describe.hybrid_case import HybridCase
from hybridcheck.describe.subject import Example, Subject, to64
from hybridcheck.describe.trees import leaves

__all__ = ["MigrationCase", "MigrationSubject"]


@dataclasses.dataclass
class MigrationSubject:
    """Both sides of a migration made runnable, and the converters.

    ``before`` and ``after`` are ordinary Subjects (each side may have a single
    half); ``evidence`` collects per-example deviations for the verdicts taken
    across examples; ``memo`` holds what the comparisons compile once per case.
    """

    name: str
    before: Subject
    after: Subject
    convert: Callable[[Any], Any]
    invert: Callable[[Any], Any] | None
    steps: int
    evidence: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    sgd: bool = True
    before_specs: _partitioning.Specs | None = None
    after_specs: _partitioning.Specs | None = None
    specs_source: str = "before: none declared; after: none declared"
    placement_memo: dict[Any, Any] = dataclasses.field(default_factory=dict)
    memo: dict[str, Any] = dataclasses.field(default_factory=dict)
    stochastic: tuple[Subject, Subject] | None = None
    pulled_grad: Callable[..., Any] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.pulled_grad = jax.jit(self._pulled_grad)

    @property
    def traced(self) -> Any:
        return self.after.traced

    @property
    def shapes_seen(self) -> Any:
        return self.after.shapes_seen

    def convert64(self, params: Any) -> Any:
        """``convert`` of the float64 params (call under ``compat.enable_x64()``).

        A converter that casts to float32 (``np.asarray(x, np.float32)``, as
        checkpoint scripts do) would round the float64 params and the comparisons
        would measure that rounding. Where its output narrows, each float64 leaf
        is split into a float32 head and tail (``x = hi + lo``) and the converter,
        a re-layout and so affine, is applied to both: ``convert(hi) +
        convert(lo) - convert(0)`` is ``convert(x)`` without the rounding."""
        p64 = to64(params)
        out = self.convert(p64)
        if not any(_narrow(x) for x in jax.tree.leaves(out)):
            return to64(out)
        hi = jax.tree.map(_head, p64)
        lo = jax.tree.map(lambda x, h: x - h if _floating(x) else x, p64, hi)
        lo = jax.tree.map(_head, lo)
        zero = jax.tree.map(lambda x: jnp.zeros_like(x) if _floating(x) else x, hi)
        parts = [to64(self.convert(p)) for p in (hi, lo, zero)]
        return jax.tree.map(
            lambda o, head, tail, z: head + tail - z if _narrow(o) else jnp.asarray(o),
            out,
            *parts,
        )

    def _pulled_grad(self, params: Any, batch: Any) -> Any:
        """The gradient of ``after.loss(convert(p))`` w.r.t. the before model's
        trainable halves: by the chain rule it equals the before model's gradient
        when both compute the same function, whatever layout ``convert`` produces."""
        b = self.before
        halves = b.split(params)

        def loss_of(train: Any) -> Any:
            return self.after.loss(
                self.convert(b.join(params, {**halves, **train})), batch
            )

        return jax.grad(loss_of)(b.trainable(params))


def _floating(x: Any) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.floating))


def _narrow(x: Any) -> bool:
    """A floating leaf of less than float64 precision."""
    return _floating(x) and jnp.finfo(jnp.result_type(x)).bits < 64


def _head(x: Any) -> Any:
    """A float64 leaf rounded to float32 (others as they are)."""
    return jnp.asarray(x, jnp.float32) if _floating(x) else x


def _leaf_paths(tree: Any) -> set[str]:
    return {path for path, _ in leaves(tree)}


@dataclasses.dataclass(frozen=True)
class MigrationCase:
    """A migration: the case before, the case after, and the checkpoint converter.

    Attributes:
      name: shown in reports.
      before: the model before the PR (usually pure Linen), as a HybridCase in any
        form (functional, ``from_linen``, ``from_nnx``); it may have a single half.
        Its ``init``, ``batches`` and ``lr`` draw the examples.
      after: the model after the PR (may be pure NNX), consuming the same batches.
      convert: the PR's checkpoint converter; it must accept float64 params
        (comparisons are in float64). Either on the case layout,
        ``convert(before_params) -> after_params`` (every half, ``opt``
        included), or, where both sides are ``from_linen``/``from_nnx`` cases, in
        the models' own terms: the Linen variables dict in, the NNX model's state
        (``nnx.State`` or its pure dict) out. In that form hybridcheck lays the
        result out on the after case's halves, converts the optimizer state's
        moments with the same converter, copies its counters (cast to the after
        dtype) and takes the after side's RNG state from its own ``init``
        (``describe.converters``).
      invert: the converter back, if there is one (enables ``roundtrip``).
      steps: consecutive steps compared by ``trajectory_matches_before``.
      description: one line for ``--list``.
      before_specs, after_specs: each side's partitioning, for
        ``sharding_matches_before``: a pytree with the structure of that side's
        params whose leaves are a ``PartitionSpec``, a tuple of (mesh or logical)
        axis names, or ``None`` (replicated); or ``specs(params) -> that pytree``.
        Left ``None``, a side's specs are its case's ``partition_specs`` (of
        ``<side>_eval`` if set, else ``<side>``): ``from_linen``/``from_nnx``
        read them from the model (``nn.with_partitioning`` boxes,
        ``nnx.with_partitioning`` metadata) and lay them out on its halves. For
        other cases read them with ``compat.linen_partition_specs(variables)`` and
        ``compat.nnx_partition_specs(module)``. Explicit specs win. A side that
        declares none while the other does counts as fully replicated.
      before_eval, after_eval: the same two models with their stochastic layers
        off (Linen ``deterministic=True`` or no ``'dropout'`` rng; NNX
        ``model.eval()`` or ``nnx.Dropout(..., deterministic=True)``), on the same
        params. Two models rarely consume a dropout key the same way (Linen folds
        the module path into it, NNX counts its stream), so with these set the
        loss, gradient, step and trajectory comparisons are made deterministic, the
        stochastic models are compared too, and the report says which agreed.
      axis_rules: logical axis rules ``((logical name, mesh axis or None), ...)``
        applied to both sides' names, as ``nn.logical_to_mesh_axes`` does; names
        without a rule are replicated. ``None``: names are mesh axes.
    """

    name: str
    before: HybridCase
    after: HybridCase
    convert: Callable[[Any], Any]
    invert: Callable[[Any], Any] | None = None
    steps: int = 3
    description: str = ""
    extra_checks: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    before_specs: Any = None
    after_specs: Any = None
    axis_rules: Sequence[tuple[str, Any]] | None = None
    before_eval: HybridCase | None = None
    after_eval: HybridCase | None = None

    def __post_init__(self) -> None:
        """Checks every field (``describe.fields``): one line naming the field,
        what it takes, what was given and the fix."""
        check_migration_case(self, HybridCase)

    def init(self, key: jax.Array) -> Any:
        """The before model's params (the checkpoint the PR converts)."""
        return self.before.init(key)

    def subject(self, before_params: Any) -> MigrationSubject:
        """Both sides made runnable; the after side from ``convert(before_params)``."""
        what = f"MigrationCase({self.name!r})"
        convert, after_params = case_layout_converter(
            self.convert,
            self.before,
            self.after,
            before_params,
            _leaf_paths(self.after.init(jax.random.PRNGKey(0))),
            what=f"{what}.convert",
        )
        invert = self.invert
        if invert is not None:
            try:
                invert, _ = case_layout_converter(
                    invert,
                    self.after,
                    self.before,
                    after_params,
                    _leaf_paths(before_params),
                    what=f"{what}.invert",
                )
            except ValueError:
                pass  # as given: roundtrip reports what it returns
        before = self.before.subject(before_params, min_halves=1)
        after = self.after.subject(after_params, min_halves=1)
        stochastic = None
        if self.before_eval is not None and self.after_eval is not None:
            stochastic = (before, after)
            before = self.before_eval.subject(before_params, min_halves=1)
            after = self.after_eval.subject(after_params, min_halves=1)
        rules = None if self.axis_rules is None else tuple(self.axis_rules)
        specs = {
            side: self._side_specs(side, params, rules)
            for side, params in (("before", before_params), ("after", after_params))
        }
        return MigrationSubject(
            name=self.name,
            before=before,
            after=after,
            convert=convert,
            invert=invert,
            steps=self.steps,
            sgd=before.sgd and after.sgd,
            stochastic=stochastic,
            before_specs=specs["before"][0],
            after_specs=specs["after"][0],
            specs_source="; ".join(f"{side}: {s[1]}" for side, s in specs.items()),
        )

    def _side_specs(
        self, side: str, params: Any, rules: Any
    ) -> tuple[_partitioning.Specs | None, str]:
        """A side's resolved specs and where they come from: ``<side>_specs`` if
        given, else the ``partition_specs`` of the case that runs the side."""
        given = getattr(self, f"{side}_specs")
        if given is not None:
            where = f"MigrationCase({self.name!r}).{side}_specs"
            source = f"MigrationCase.{side}_specs"
        else:
            cases = (getattr(self, f"{side}_eval"), getattr(self, side))
            case = next(
                (c for c in cases if c is not None and c.partition_specs is not None),
                None,
            )
            if case is None:
                return None, "none declared"
            given = case.partition_specs
            where = f"HybridCase({case.name!r}).partition_specs"
            default = "HybridCase.partition_specs"
            source = f"{getattr(given, 'source', default)} (case {case.name!r})"
        return _partitioning.resolve_specs(given, params, rules, where), source

    def examples(self) -> st.SearchStrategy[Example]:
        """The before case's examples: its params, batches and learning rates."""
        return self.before.examples()
