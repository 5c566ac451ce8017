"""HybridCase: how a user describes their hybrid model and train step."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from hypothesis import strategies as st

from hybridcheck.describe import strategies as hst
from hybridcheck.describe.fields import check_hybrid_case
from hybridcheck.describe.returns import check_batch, checked_loss
from hybridcheck.describe.subject import Example, Subject
from hybridcheck.describe.trees import split_halves
from hybridcheck.describe.usercode import call
from hybridcheck.describe.validate import MAX_SEED

__all__ = ["HybridCase", "sgd_step"]

ExtraCheck = Callable[[Any, Any, float], None]


def sgd_step(
    loss: Callable[[Any, Any], Any], trainable: Sequence[bool] | None = None
) -> Callable[[Any, Any, Any], Any]:
    """The library's reference step: ``p - lr * grad`` on every trainable half."""

    def step(params: Any, batch: Any, lr: Any) -> Any:
        grads = jax.grad(loss)(params, batch)
        if trainable is None:
            return jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return type(params)(
            jax.tree.map(lambda p, g: p - lr * g, p_half, g_half) if train else p_half
            for p_half, g_half, train in zip(params, grads, trainable, strict=True)
        )

    return step


def _named(case: str, where: str, fn: Any) -> Any:
    """``fn`` whose exceptions say that the case's ``where`` raised them."""
    if fn is None:
        return None

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        return call(case, where, fn, *args)

    return wrapped


@dataclasses.dataclass(frozen=True)
class HybridCase:
    """A hybrid model, its loss, its data and the training step under test.

    Attributes:
      name: short identifier shown in reports (``"nnx-mlp->linen-head"``).
      init: ``init(key) -> params`` with one pytree per half: a tuple (labelled by
        ``halves``), a NamedTuple or a dict ``{label: pytree}``. Pull nnx params out
        with ``hybridcheck.compat.params_as_dict(module)``; Linen params are
        ``variables['params']``.
      loss: ``loss(params, batch) -> scalar``; pure; the params of *every* half must
        be read from ``params`` (closing over one half is exactly the bug we catch).
      batches: a Hypothesis strategy of batches, or ``batch_fn(key) -> batch``.
        A batch is any pytree; RNG keys for Dropout go in the batch.
      step: ``step(params, batch, lr) -> new_params``, the user's own train step.
        ``None``: the library's SGD step (then ``sgd`` is implied).
      halves: labels for a tuple ``params`` (default ``half0, half1, ...``).
      non_trainable: labels of halves that hold state, not parameters (BatchNorm
        statistics): no gradient invariants for them; the step must still return
        them with the same structure, finite and deterministic.
      lr: learning rates to draw: a strategy or one float.
      sgd: whether ``step`` is plain SGD (enables exact-update and first-order
        checks). Default: ``step is None``.
      frozen: ``frozen(half, leaf_path) -> bool``: leaves untrained on purpose.
      extra_checks: ``{name: check(params, batch, lr)}``, case-specific invariants
        (raise ``AssertionError`` to fail).
      state_fn: ``state_fn(params, batch) -> {state half: pytree}``: the
        ``non_trainable`` halves as one training forward pass leaves them; enables
        ``state_is_threaded``.
      reseed: ``reseed(params, batch, key) -> (params, batch)``: the same example
        with other randomness (a new dropout key); enables ``randomness_is_used``.
      rng_halves: halves of ``params`` holding RNG state the step must advance.
      tx: ``tx(lr) -> optax.GradientTransformation``: the optimizer ``step``
        applies, with its state threaded through a ``non_trainable`` half;
        enables ``update_matches_tx``.
      param_seeds: how many distinct ``init`` keys to draw from (inits are cached).
      description: one line for ``--list``.
      partition_specs: ``partition_specs(params) -> pytree`` with the structure of
        ``params``, each leaf the partitioning the model declares for it (a
        ``PartitionSpec``, a tuple of axis names, or ``None``: replicated).
        ``from_linen``/``from_nnx`` set it from ``nn.with_partitioning`` boxes /
        ``nnx.with_partitioning`` metadata (``None`` when the model declares
        none); a ``MigrationCase`` side without explicit specs uses it.
      model_terms: set by ``from_linen``/``from_nnx`` (``None`` otherwise): how the
        params read in the model's own terms (Linen variables, the NNX state's pure
        dict), so that a ``MigrationCase`` converter may be written in them.

    Example:
      >>> case = HybridCase(
      ...     name="mine", init=init, loss=loss, halves=("nnx", "linen"),
      ...     batches=hnp.arrays(np.float32, (4, 3)).map(lambda x: (x, x[:, :1])),
      ... )
      >>> hybridcheck.engine.verify(case).ok
    """

    name: str
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any], Any]
    batches: st.SearchStrategy[Any] | Callable[[jax.Array], Any]
    step: Callable[[Any, Any, Any], Any] | None = None
    halves: tuple[str, ...] | None = None
    non_trainable: tuple[str, ...] = ()
    lr: st.SearchStrategy[float] | float | None = None
    sgd: bool | None = None
    frozen: Callable[[str, str], bool] | None = None
    extra_checks: Mapping[str, ExtraCheck] = dataclasses.field(default_factory=dict)
    param_seeds: int = 8
    description: str = ""
    state_fn: Callable[[Any, Any], Any] | None = None
    reseed: Callable[[Any, Any, Any], Any] | None = None
    rng_halves: tuple[str, ...] = ()
    tx: Callable[[Any], Any] | None = None
    partition_specs: Callable[[Any], Any] | None = None
    model_terms: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Checks every field (``describe.fields``): one line naming the field,
        what it takes, what was given and the fix; sequences become tuples."""
        for field, value in check_hybrid_case(self).items():
            object.__setattr__(self, field, value)

    # -- what the verifier needs -------------------------------------------------

    def labels(self, params: Any, *, min_halves: int = 2) -> tuple[str, ...]:
        """Half labels for ``params`` (from the container, else ``halves``).

        Raises:
          TypeError: ``params`` is not one pytree per half.
          ValueError: fewer than ``min_halves`` (trainable) halves, ``halves`` does
            not match ``params``, or ``non_trainable`` names a half that is not
            there.
        """
        labels = tuple(
            split_halves(
                params,
                labels=self.halves,
                name=f"HybridCase({self.name!r}): init()",
                min_halves=min_halves,
            )
        )
        for field in ("non_trainable", "rng_halves"):
            unknown = set(getattr(self, field)) - set(labels)
            if unknown:
                raise ValueError(
                    f"HybridCase({self.name!r}).{field} names {sorted(unknown)}, "
                    f"not among its halves {labels}"
                )
        trainable = [label for label in labels if label not in self.non_trainable]
        if len(trainable) < min_halves:
            raise ValueError(
                f"[{self.name}] found {len(trainable)} trainable half {trainable}; a "
                "hybrid case needs a second trainable half: the other framework's "
                "part (from_nnx: a Linen module in bridge.ToNNX, its variables made "
                "by bridge.lazy_init in model_fn; from_linen: an NNX module in "
                "bridge.to_linen), or one model split by path with "
                "halves={'encoder': 'encoder/*', ...}. (A single half is fine as the "
                "before or after side of a MigrationCase.)"
            )
        return labels

    def subject(self, example_params: Any, *, min_halves: int = 2) -> Subject:
        """A fresh :class:`Subject` for this case (own jit cache and counters).

        ``min_halves=1`` for a side of a migration, which may be pure Linen or NNX.
        """
        labels = self.labels(example_params, min_halves=min_halves)
        loss = checked_loss(self.name, self.loss)
        step = (
            _named(self.name, "step", self.step)
            if self.step is not None
            else sgd_step(loss)  # the library's step: only the loss is the user's
        )
        is_state = set(self.non_trainable)
        user_frozen = self.frozen

        def frozen(half: str, path: str) -> bool:
            return half in is_state or bool(user_frozen and user_frozen(half, path))

        return Subject(
            loss=loss,
            step=step,
            halves=labels,
            name=self.name,
            sgd=self.step is None if self.sgd is None else self.sgd,
            frozen=frozen,
            non_trainable=tuple(self.non_trainable),
            state_fn=_named(self.name, "state_fn", self.state_fn),
            reseed=_named(self.name, "reseed", self.reseed),
            rng_halves=tuple(self.rng_halves),
            tx=self.tx,
        )

    def lr_strategy(self) -> st.SearchStrategy[float]:
        if self.lr is None:
            return hst.learning_rates(min_value=1e-3, max_value=0.1)
        if isinstance(self.lr, st.SearchStrategy):
            return self.lr
        return st.just(float(self.lr))

    def batch_strategy(self) -> st.SearchStrategy[Any]:
        """Batches, each checked (a tree of finite arrays: ``check_batch``)."""
        if isinstance(self.batches, st.SearchStrategy):
            drawn = self.batches
        else:
            batch_fn = self.batches
            drawn = st.integers(0, MAX_SEED).map(
                lambda s: call(self.name, "batches", batch_fn, jax.random.PRNGKey(s))
            )
        return drawn.map(functools.partial(check_batch, self.name))

    def examples(self) -> st.SearchStrategy[Example]:
        """Examples: params from one of ``param_seeds`` cached inits, a batch, an lr."""
        cache: dict[int, Any] = {}

        def params_for(seed: int) -> Any:
            if seed not in cache:
                cache[seed] = self.init(jax.random.PRNGKey(seed))
            return cache[seed]

        return st.builds(
            lambda seed, batch, lr: Example(params_for(seed), batch, lr, seed),
            st.integers(0, self.param_seeds - 1),
            self.batch_strategy(),
            self.lr_strategy(),
        )
