"""Each invariant applied to a step under test on one example.

A :class:`Subject` is what is checked: a loss over parameters-by-half and a train
step. ``CHECKS`` maps each invariant name to a function ``(subject, example) ->
None`` that computes what that invariant needs (gradients, a float64 replay, an
eager run, a sharded run) and calls the assertion from :mod:`hybridcheck.invariants`.
Property tests and :func:`hybridcheck.verify` both drive these.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat, invariants, sharding
from hybridcheck._typing import PyTree
from hybridcheck.tracing import TraceCounter

__all__ = [
    "Subject",
    "Example",
    "CHECKS",
    "CROSS_EXAMPLE_CHECKS",
    "labelled",
    "unlabel",
]


class Example(NamedTuple):
    """One drawn input: parameters by half, a batch, a learning rate."""

    params: Any
    batch: Any
    lr: float


@dataclasses.dataclass
class Subject:
    """A hybrid model's loss and the training step under test.

    Attributes:
      loss: ``loss(params, batch) -> scalar``; params hold one pytree per half.
      step: ``step(params, batch, lr) -> new_params``.
      halves: labels of the halves, in order (used when params is a plain tuple).
      sgd: the step is plain SGD (``p - lr * g``): enables the exact-update and
        first-order invariants. Other optimizers still get descent and the rest.
      frozen: ``frozen(half, leaf_path) -> bool`` for leaves frozen on purpose.
      non_trainable: halves holding state (BatchNorm statistics), left out of the
        gradient and update invariants.
    """

    loss: Callable[[Any, Any], Any]
    step: Callable[[Any, Any, Any], Any]
    halves: tuple[str, ...]
    sgd: bool = True
    frozen: Callable[[str, str], bool] | None = None
    non_trainable: tuple[str, ...] = ()
    traced: TraceCounter = dataclasses.field(init=False)
    jitted: Callable[..., Any] = dataclasses.field(init=False)
    grad_fn: Callable[..., Any] = dataclasses.field(init=False)
    step64: Callable[..., Any] = dataclasses.field(init=False)
    loss64: Callable[..., Any] = dataclasses.field(init=False)
    loss_fn: Callable[..., Any] = dataclasses.field(init=False)
    shapes_seen: set[Any] = dataclasses.field(init=False, default_factory=set)
    grads_seen: list[Any] = dataclasses.field(init=False, default_factory=list)
    _memo_example: Example | None = dataclasses.field(init=False, default=None)
    _memo: dict[str, Any] = dataclasses.field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.loss) or not callable(self.step):
            raise TypeError("Subject.loss and Subject.step must be callables")
        self.traced = TraceCounter(self.step)
        self.jitted = jax.jit(self.traced)
        self.grad_fn = jax.jit(jax.grad(self.loss))
        self.loss_fn = jax.jit(self.loss)
        # Separate jit objects for the float64 replays, so their traces do not count
        # against the float32 step's retrace budget.
        self.step64 = jax.jit(lambda p, b, lr: self.step(p, b, lr))
        self.loss64 = jax.jit(lambda p, b: self.loss(p, b))

    def run_jitted(self, e: Example) -> Any:
        """The step under ``jax.jit``, recording the input shapes for the budget."""
        self.shapes_seen.add(str(_shape_key(e)))
        return self.jitted(e.params, e.batch, e.lr)

    def run_eager(self, e: Example) -> Any:
        """The step op by op (``jax.disable_jit``): what a Python-level bug changes."""
        with jax.disable_jit():
            return self.step(e.params, e.batch, e.lr)

    # -- per-example memo -----------------------------------------------------------
    # Several invariants need the same gradient, jitted step or eager step of one
    # example; the verifier runs them all on each example, so each is computed once.
    # The memo holds only the latest example (compared by identity).

    def _memoized(self, e: Example, key: str, compute: Callable[[], Any]) -> Any:
        if self._memo_example is not e:
            self._memo_example, self._memo = e, {}
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def has_run(self, e: Example) -> bool:
        """Whether the step already ran on ``e`` through the memo."""
        return self._memo_example is e and bool({"jitted", "eager"} & self._memo.keys())

    def grads(self, e: Example) -> Any:
        """``jax.grad(loss)`` at the example (jitted, memoized)."""
        return self._memoized(e, "grads", lambda: self.grad_fn(e.params, e.batch))

    def jitted_result(self, e: Example) -> Any:
        """New params from the jitted step (memoized)."""
        return self._memoized(e, "jitted", lambda: self.run_jitted(e))

    def eager_result(self, e: Example) -> Any:
        """New params from the eager step (memoized)."""
        return self._memoized(e, "eager", lambda: self.run_eager(e))

    def loss64_of(self, e: Example, key: str, params: Any) -> float:
        """The loss of ``params`` on the example's batch, replayed in float64.

        Cast first: under ``JAX_ENABLE_X64`` an eager and a jitted step can return
        leaves of different dtypes (float32 vs float64), and replaying each as is
        would compare a float32 loss with a float64 one.
        """

        def replay() -> Any:
            with compat.enable_x64():
                return self.loss64(_to64(params), _to64(e.batch))

        return float(self._memoized(e, f"loss64:{key}", replay))


def labelled(subject: Subject, tree: Any) -> dict[str, PyTree]:
    """``{half label: pytree}`` for params/grads given as NamedTuple, dict or tuple."""
    if isinstance(tree, tuple) and hasattr(tree, "_asdict"):
        return dict(tree._asdict())
    if isinstance(tree, dict):
        return {str(k): v for k, v in tree.items()}
    if isinstance(tree, tuple | list) and len(tree) == len(subject.halves):
        return dict(zip(subject.halves, tree, strict=True))
    raise TypeError(
        f"params must be one pytree per half {subject.halves} (tuple, NamedTuple or "
        f"dict), got {type(tree).__name__}"
    )


def trainable(subject: Subject, tree: Any) -> dict[str, PyTree]:
    """:func:`labelled` without the non-trainable halves."""
    return {
        k: v
        for k, v in labelled(subject, tree).items()
        if k not in subject.non_trainable
    }


def _to64(tree: PyTree) -> PyTree:
    def cast(x: Any) -> Any:
        arr = jnp.asarray(x)
        return (
            arr.astype(jnp.float64) if jnp.issubdtype(arr.dtype, jnp.floating) else arr
        )

    return jax.tree.map(cast, tree)


def _shape_key(example: Example) -> Any:
    return jax.tree.map(
        lambda x: (np.shape(x), str(jnp.result_type(x))),
        (example.params, example.batch),
    )


def check_structure(s: Subject, e: Example) -> None:
    g = s.grads(e)
    invariants.assert_grads_match_params(labelled(s, e.params), labelled(s, g))
    new = s.jitted_result(e)
    invariants.assert_grads_match_params(labelled(s, e.params), labelled(s, new))


def check_update(s: Subject, e: Example) -> None:
    g = s.grads(e)
    s.grads_seen.append(jax.tree.map(np.asarray, g))
    new = s.jitted_result(e)
    invariants.assert_update_changes_exactly_graded_leaves(
        trainable(s, e.params), trainable(s, new), trainable(s, g), lr=e.lr
    )


_SMALLEST_LR = 1e-6


def check_first_order(s: Subject, e: Example) -> None:
    if not s.sgd:
        raise invariants.InvariantNotApplicable("the step is not plain SGD")
    with compat.enable_x64():
        params, batch = _to64(e.params), _to64(e.batch)
        grad = s.grad_fn
        g = grad(params, batch)
        sq = float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(g)))
        # The limit lr -> 0 is only reachable in floats if no kink (a ReLU input near
        # 0) lies within the smallest step. Probe along *our* SGD direction, so the
        # verdict depends on the loss landscape only, never on the step under test.
        probe = jax.tree.map(lambda p, d: p - _SMALLEST_LR * d, params, g)
        jump = float(
            sum(
                jnp.sum(jnp.square(a - b))
                for a, b in zip(
                    jax.tree.leaves(grad(probe, batch)), jax.tree.leaves(g), strict=True
                )
            )
        )
        if jump > 1e-6 * sq:
            raise invariants.InvariantNotApplicable(
                f"the gradient jumps within a step of {_SMALLEST_LR:g} (a kink is in "
                "reach): the first-order limit cannot be observed at this example"
            )

        def loss_at(lr: float) -> float:
            if lr == 0.0:
                return float(s.loss64(params, batch))
            return float(s.loss64(s.step64(params, batch, jnp.float64(lr)), batch))

        invariants.assert_loss_decrease_first_order(
            loss_at, sq, loss_scale=abs(loss_at(0.0))
        )


def check_descent(s: Subject, e: Example) -> None:
    g = s.grads(e)
    new = s.jitted_result(e)
    invariants.assert_update_is_descent(
        trainable(s, e.params), trainable(s, new), trainable(s, g)
    )


def check_sgd_update(s: Subject, e: Example) -> None:
    if not s.sgd:
        raise invariants.InvariantNotApplicable("the step is not plain SGD")
    g = s.grads(e)
    new = s.jitted_result(e)
    invariants.assert_sgd_update(
        trainable(s, e.params), trainable(s, new), trainable(s, g), lr=e.lr
    )


def check_jit_eager(s: Subject, e: Example) -> None:
    eager, jitted = s.eager_result(e), s.jitted_result(e)
    before, after_eager, after_jit = (
        s.loss64_of(e, key, p)
        for key, p in (("before", e.params), ("eager", eager), ("jitted", jitted))
    )
    try:
        invariants.assert_trees_close_jit_eager(
            eager, jitted, old=e.params, losses=(before, after_eager, after_jit)
        )
    except AssertionError:
        _raise_if_ill_conditioned(s, e, with_loss=True)
        raise


# -- conditioning -------------------------------------------------------------------
# jit vs eager and sharded vs single device compare two evaluation orders of the same
# math. On an ill-conditioned example (BatchNorm over a batch of identical rows: its
# output is rounding noise divided by sqrt(eps), and a ReLU after it takes a branch
# by the sign of that noise) a *correct* step gives different results in the two
# orders, so the example cannot tell a bug from rounding. When a comparison fails we
# measure that: nudge every floating input by float32 rounding (relative 2**-23, a
# fixed sign pattern) and replay *our* SGD step (p - lr * grad of the loss) in
# float64 at both points. If that moves by more than a quarter of the invariant's
# tolerance the example is not applicable. The probe never runs the step under test,
# so a broken step cannot excuse itself; it runs only after a failure, so passing
# examples pay nothing.

NUDGE = float(np.finfo(np.float32).eps)


def _nudged(tree: PyTree, rel: float = NUDGE) -> PyTree:
    """Every floating leaf plus ``rel * max|leaf|`` times a fixed +-1 pattern."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(0)
    out = []
    for leaf in leaves:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and np.size(leaf):
            scale = float(jnp.max(jnp.abs(leaf))) or 1.0
            signs = rng.choice(np.array([-1.0, 1.0]), size=np.shape(leaf))
            leaf = leaf + jnp.asarray(rel * scale * signs, jnp.result_type(leaf))
        out.append(leaf)
    return jax.tree.unflatten(treedef, out)


def _reference_sgd(s: Subject, params: Any, batch: Any, lr: Any) -> Any:
    """``p - lr * grad`` on the trainable halves; the others as they were."""
    halves, grads = labelled(s, params), labelled(s, s.grad_fn(params, batch))
    return unlabel(
        s,
        params,
        {
            h: tree
            if h in s.non_trainable
            else jax.tree.map(lambda p, g: p - lr * g, tree, grads[h])
            for h, tree in halves.items()
        },
    )


def _raise_if_ill_conditioned(s: Subject, e: Example, *, with_loss: bool) -> None:
    """Raises InvariantNotApplicable if rounding-sized nudges move a correct step.

    The two reference results are compared with a quarter of the jit/eager
    tolerances (leaves, and with ``with_loss`` the loss after the step).
    """
    try:
        with compat.enable_x64():
            params, batch = _to64(e.params), _to64(e.batch)
            lr = jnp.float64(e.lr)
            ref = _reference_sgd(s, params, batch, lr)
            nudged_batch = _nudged(batch)
            nudged = _reference_sgd(s, _nudged(params), nudged_batch, lr)
            losses = (
                (
                    float(s.loss64(params, batch)),
                    float(s.loss64(ref, batch)),
                    float(s.loss64(nudged, nudged_batch)),
                )
                if with_loss
                else None
            )
        quarter = {k: v / 4 for k, v in invariants.JIT_EAGER_TOL.items()}
        problems = invariants.step_order_problems(
            ref,
            nudged,
            ("correct step", "nudged inputs"),
            old=params,
            losses=losses,
            **quarter,
        )
    except Exception:  # noqa: BLE001 - if the probe cannot run, the verdict stands
        return
    if problems:
        raise invariants.InvariantNotApplicable(
            f"ill-conditioned example: nudging the inputs by float32 rounding "
            f"(relative {NUDGE:.2g}) moves a correct SGD step by more than a quarter "
            f"of the tolerance ({problems[0]}); two evaluation orders of the same "
            "math differ here by rounding alone (for example BatchNorm over a batch "
            "of identical rows)"
        )


def unlabel(subject: Subject, like: Any, halves: dict[str, PyTree]) -> Any:
    """Inverse of :func:`labelled`: rebuild the container type of ``like``."""
    if isinstance(like, tuple) and hasattr(like, "_asdict"):
        return type(like)(**halves)
    if isinstance(like, dict):
        return dict(halves)
    return type(like)(halves[h] for h in subject.halves)


def check_finite_differences(s: Subject, e: Example) -> None:
    with compat.enable_x64():
        params, batch = labelled(s, _to64(e.params)), _to64(e.batch)
        train = {k: v for k, v in params.items() if k not in s.non_trainable}
        fd_loss = _fd_loss(s, e.params)
        fns: dict[str, Callable[[PyTree], Any]] = {
            label: functools.partial(fd_loss, label, halves=params, batch=batch)
            for label in train
        }
        invariants.assert_grads_match_finite_differences(
            fns,
            train,
        )


def _fd_loss(s: Subject, like: Any) -> Callable[..., Any]:
    """``f(label, half, all_halves, batch)``, jitted once per subject (label static)."""
    cached = getattr(s, "_fd_loss", None)
    if cached is None:

        def f(label: str, half: PyTree, halves: dict[str, PyTree], batch: Any) -> Any:
            return s.loss(unlabel(s, like, {**halves, label: half}), batch)

        cached = jax.jit(f, static_argnums=0)
        s._fd_loss = cached  # type: ignore[attr-defined]
    return cached  # type: ignore[no-any-return]


def check_deterministic(s: Subject, e: Example) -> None:
    # The memoized run is a real earlier run; the second is always a fresh one.
    invariants.assert_bitwise_deterministic(s.jitted_result(e), s.run_jitted(e))
    invariants.assert_bitwise_deterministic(s.eager_result(e), s.run_eager(e))


def check_finite(s: Subject, e: Example) -> None:
    new = s.jitted_result(e)
    invariants.assert_all_finite(labelled(s, new), what="new_params")
    invariants.assert_all_finite({"loss": s.loss_fn(new, e.batch)}, what="")


def check_inputs_unchanged(s: Subject, e: Example) -> None:
    # The snapshot must predate every run on this example: when another invariant
    # already ran the step (and may have mutated the inputs), run it afresh here.
    already_ran = s.has_run(e)
    snapshot = jax.tree.map(lambda x: np.array(x, copy=True), (e.params, e.batch))
    if already_ran:
        s.run_jitted(e)
        s.run_eager(e)
    else:
        s.jitted_result(e)
        s.eager_result(e)
    invariants.assert_inputs_unchanged(snapshot, (e.params, e.batch))


def check_retrace_budget(s: Subject, e: Example) -> None:
    s.jitted_result(e)
    # Eager runs elsewhere call ``s.step`` itself, so ``traced`` counts jit traces.
    invariants.assert_traces_within(s.traced.count, len(s.shapes_seen))


def check_sharded(s: Subject, e: Example) -> None:
    # Compared in float64: the two runs reduce the batch in different orders, and on
    # an ill-conditioned example (BatchNorm of a constant column divides by
    # sqrt(eps)) float32 rounding alone moves the result by O(1). The bugs this is
    # for (per-shard means or statistics, per-device RNG) change it at any precision.
    with compat.enable_x64():
        params, batch, lr = _to64(e.params), _to64(e.batch), jnp.float64(e.lr)
        single = s.step64(params, batch, lr)
        sharded = sharding.run_data_parallel(s.step, params, batch, lr)
    try:
        invariants.assert_sharded_matches_single_device(single, sharded)
    except AssertionError:
        _raise_if_ill_conditioned(s, e, with_loss=False)
        raise


def check_gradient_flow(s: Subject) -> None:
    """Cross-example: every half/leaf got a nonzero gradient on some example."""
    if not s.grads_seen:
        raise invariants.InvariantNotApplicable("no example reached the update check")
    invariants.assert_every_half_gets_gradient(
        [labelled(s, g) for g in s.grads_seen], frozen=s.frozen
    )


CHECKS: dict[str, Callable[[Subject, Example], None]] = {
    "grads_match_params": check_structure,
    "update_changes_exactly_graded_leaves": check_update,
    "loss_decrease_first_order": check_first_order,
    "update_is_descent": check_descent,
    "sgd_update": check_sgd_update,
    "jit_matches_eager": check_jit_eager,
    "grads_match_finite_differences": check_finite_differences,
    "deterministic": check_deterministic,
    "all_finite": check_finite,
    "inputs_unchanged": check_inputs_unchanged,
    "retrace_budget": check_retrace_budget,
    "sharded_matches_single_device": check_sharded,
}

CROSS_EXAMPLE_CHECKS: dict[str, Callable[[Subject], None]] = {
    "every_half_gets_gradient": check_gradient_flow,
}
