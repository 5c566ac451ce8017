"""A case made runnable: its compiled loss, gradient and step, and a per-example memo.

A :class:`Subject` is what the checks run: a loss over parameters-by-half and the
train step under test, each compiled once (per shape) and shared by every invariant.
Gradients are taken over the floating leaves of the trainable halves only; each
gradient computed is recorded (as a "was it nonzero" summary per leaf) where it is
computed, for the cross-example ``every_half_gets_gradient`` verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat
from hybridcheck.describe._grad import trainable_grad
from hybridcheck.describe._typing import PyTree
from hybridcheck.describe.returns import check_step_output
from hybridcheck.describe.tracing import TraceCounter
from hybridcheck.describe.trees import join_halves, split_halves

__all__ = ["Example", "Subject", "TRAJECTORY_STEPS", "to64", "shape_key"]

TRAJECTORY_STEPS = 2
"""Consecutive steps taken from each example for the trajectory invariants: two is
the fewest that shows a leaf whose gradient is zero only at initialisation (LoRA's
``lora_a`` while ``lora_b = 0``)."""


class Example(NamedTuple):
    """One drawn input: parameters by half, a batch, a learning rate, and the
    ``init`` seed the parameters came from (None when they were given)."""

    params: Any
    batch: Any
    lr: float
    seed: int | None = None


def to64(tree: PyTree) -> PyTree:
    """Every floating leaf cast to float64 (call under ``compat.enable_x64()``)."""

    def cast(x: Any) -> Any:
        arr = jnp.asarray(x)
        return (
            arr.astype(jnp.float64) if jnp.issubdtype(arr.dtype, jnp.floating) else arr
        )

    return jax.tree.map(cast, tree)


def shape_key(example: Example) -> Any:
    """The example's shapes and dtypes: one jit trace per distinct key."""
    return jax.tree.map(
        lambda x: (np.shape(x), str(jnp.result_type(x))),
        (example.params, example.batch),
    )


@dataclasses.dataclass
class Subject:
    """A hybrid model's loss and the training step under test.

    Attributes:
      loss: ``loss(params, batch) -> scalar``; params hold one pytree per half.
      step: ``step(params, batch, lr) -> new_params``.
      halves: labels of the halves, in order (used when params is a plain tuple).
      name: the case's name, for error messages.
      sgd: the step is plain SGD (``p - lr * g``): enables the exact-update and
        first-order invariants. Other optimizers still get descent and the rest.
      frozen: ``frozen(half, leaf_path) -> bool`` for leaves frozen on purpose: their
        gradient counts as zero everywhere (so the step must leave them alone).
      non_trainable: halves holding state (BatchNorm statistics): no gradient is
        taken for them and the gradient and update invariants skip them.
      state_fn: ``state_fn(params, batch) -> {state half: pytree}``, the state
        halves as one training forward pass leaves them (``state_is_threaded``).
      reseed: ``reseed(params, batch, key) -> (params, batch)``, the example with
        other randomness (``randomness_is_used``).
      rng_halves: halves holding RNG state that the step must advance.
      tx: ``tx(lr) -> optax.GradientTransformation``, the optimizer the step
        applies, its state threaded through the params (``update_matches_tx``).
    """

    loss: Callable[[Any, Any], Any]
    step: Callable[[Any, Any, Any], Any]
    halves: tuple[str, ...]
    name: str = "subject"
    sgd: bool = True
    frozen: Callable[[str, str], bool] | None = None
    non_trainable: tuple[str, ...] = ()
    state_fn: Callable[[Any, Any], Any] | None = None
    reseed: Callable[[Any, Any, Any], Any] | None = None
    rng_halves: tuple[str, ...] = ()
    tx: Callable[[Any], Any] | None = None
    traced: TraceCounter = dataclasses.field(init=False)
    jitted: Callable[..., Any] = dataclasses.field(init=False)
    grad_fn: Callable[..., Any] = dataclasses.field(init=False)
    step64: Callable[..., Any] = dataclasses.field(init=False)
    loss64: Callable[..., Any] = dataclasses.field(init=False)
    loss_fn: Callable[..., Any] = dataclasses.field(init=False)
    half_loss: Callable[..., Any] = dataclasses.field(init=False)
    forward_state: Callable[..., Any] | None = dataclasses.field(init=False)
    shapes_seen: set[Any] = dataclasses.field(init=False, default_factory=set)
    grads_seen: list[Any] = dataclasses.field(init=False, default_factory=list)
    evidence: dict[str, list[Any]] = dataclasses.field(init=False, default_factory=dict)
    _memo_example: Example | None = dataclasses.field(init=False, default=None)
    _memo: dict[str, Any] = dataclasses.field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.loss) or not callable(self.step):
            raise TypeError(
                f"Subject({self.name!r}).loss and .step must be callables, got "
                f"{type(self.loss).__name__} and {type(self.step).__name__}"
            )
        self.traced = TraceCounter(self.step)
        self.jitted = jax.jit(self.traced)
        self.grad_fn = jax.jit(self._trainable_grad)
        self.loss_fn = jax.jit(self.loss)
        # Separate jit objects for the float64 replays, so their traces do not count
        # against the float32 step's retrace budget.
        self.step64 = jax.jit(lambda p, b, lr: self.step(p, b, lr))
        self.loss64 = jax.jit(lambda p, b: self.loss(p, b))
        self.half_loss = jax.jit(self._loss_of_half, static_argnums=0)
        self.forward_state = None if self.state_fn is None else jax.jit(self.state_fn)

    # -- the one reading of the params container ---------------------------------

    def split(self, tree: Any, *, name: str = "params") -> dict[str, PyTree]:
        """``{half label: pytree}`` for params, new params or gradients."""
        # One half is enough here: HybridCase requires two for a hybrid model, while
        # a side of a migration may be pure Linen or pure NNX.
        return split_halves(
            tree, labels=self.halves, name=f"{self.name}: {name}", min_halves=1
        )

    def trainable(self, tree: Any, *, name: str = "params") -> dict[str, PyTree]:
        """:meth:`split` without the non-trainable halves."""
        return {
            k: v
            for k, v in self.split(tree, name=name).items()
            if k not in self.non_trainable
        }

    def join(self, like: Any, halves: dict[str, PyTree]) -> Any:
        """``halves`` in the container of ``like``, in the order of its halves."""
        return join_halves(like, {label: halves[label] for label in self.split(like)})

    # -- compiled pieces -------------------------------------------------------------

    def _trainable_grad(self, params: Any, batch: Any) -> dict[str, PyTree]:
        """``jax.grad(loss)`` w.r.t. the floating leaves of the trainable halves
        (see :func:`~hybridcheck.describe._grad.trainable_grad`)."""
        return trainable_grad(self, params, batch)

    def _loss_of_half(
        self, label: str, half: PyTree, halves: dict[str, PyTree], like: Any, batch: Any
    ) -> Any:
        """The loss as a function of one half, the others held at ``halves``."""
        return self.loss(self.join(like, {**halves, label: half}), batch)

    # -- runs --------------------------------------------------------------------------

    def run_jitted(self, e: Example) -> Any:
        """The step under ``jax.jit``, recording the input shapes for the budget."""
        self.shapes_seen.add(str(shape_key(e)))
        return check_step_output(
            self.name, e.params, self.jitted(e.params, e.batch, e.lr)
        )

    def run_eager(self, e: Example) -> Any:
        """The step op by op (``jax.disable_jit``): what a Python-level bug changes."""
        with jax.disable_jit():
            return check_step_output(
                self.name, e.params, self.step(e.params, e.batch, e.lr)
            )

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

    def inputs_snapshot(self, e: Example) -> tuple[bool, Any]:
        """A host copy of the example's ``(params, batch)``, taken on the first call
        (memoized), and whether no step had run on it yet then."""
        return self._memoized(  # type: ignore[no-any-return]
            e,
            "inputs_snapshot",
            lambda: (
                not self.has_run(e),
                jax.tree.map(lambda x: np.array(x, copy=True), (e.params, e.batch)),
            ),
        )

    def grads(self, e: Example) -> dict[str, PyTree]:
        """Gradients of the trainable halves at the example (jitted, memoized)."""
        return self._memoized(  # type: ignore[no-any-return]
            e, "grads", lambda: self.grads_at(e.params, e.batch)
        )

    def grads_at(self, params: Any, batch: Any) -> dict[str, PyTree]:
        """Gradients of the trainable halves at ``params``, recorded.

        Each computed gradient is recorded in ``grads_seen`` as one boolean per leaf
        ("some entry is nonzero"): what ``every_half_gets_gradient`` needs, at a
        memory cost independent of the model's size.
        """
        g = self.grad_fn(params, batch)
        # One scalar per leaf leaves the device, not the whole gradient.
        self.grads_seen.append(jax.tree.map(lambda x: bool(jnp.any(x != 0)), g))
        return g  # type: ignore[no-any-return]

    def trajectory(self, e: Example) -> tuple[list[Any], list[Any]]:
        """``TRAJECTORY_STEPS`` consecutive jitted steps from the example on its batch.

        Returns the params ``p0 .. pK`` and the gradients ``g0 .. g(K-1)`` at the
        first K of them (memoized; ``p1`` and ``g0`` are the example's own).
        """

        def compute() -> Any:
            points, grads = [e.params, self.jitted_result(e)], [self.grads(e)]
            for _ in range(TRAJECTORY_STEPS - 1):
                grads.append(self.grads_at(points[-1], e.batch))
                points.append(self.jitted(points[-1], e.batch, e.lr))
            return points, grads

        return self._memoized(e, "trajectory", compute)  # type: ignore[no-any-return]

    def jitted_result(self, e: Example) -> Any:
        """New params from the jitted step (memoized)."""
        return self._memoized(e, "jitted", lambda: self.run_jitted(e))

    def eager_result(self, e: Example) -> Any:
        """New params from the eager step (memoized)."""
        return self._memoized(e, "eager", lambda: self.run_eager(e))

    def example64(self, e: Example) -> tuple[Any, Any]:
        """The example's ``(params, batch)`` with every floating leaf in float64
        (memoized: several replays start from it). Use under ``enable_x64``."""

        def cast() -> Any:
            with compat.enable_x64():
                return to64(e.params), to64(e.batch)

        return self._memoized(e, "example64", cast)  # type: ignore[no-any-return]

    def loss64_of(self, e: Example, key: str, params: Any) -> float:
        """The loss of ``params`` on the example's batch, replayed in float64.

        Cast first: under ``JAX_ENABLE_X64`` an eager and a jitted step can return
        leaves of different dtypes (float32 vs float64), and replaying each as is
        would compare a float32 loss with a float64 one.
        """

        def replay() -> Any:
            with compat.enable_x64():
                if params is e.params:
                    return self.loss64(*self.example64(e))
                return self.loss64(to64(params), self.example64(e)[1])

        return float(self._memoized(e, f"loss64:{key}", replay))
