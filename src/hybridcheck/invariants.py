"""Chex-style assertions about one hybrid training step.

Every function is host-side and pure: it returns ``None`` or raises
``AssertionError`` (prefix ``[hybridcheck]``) whose message names the invariant, the
half, the leaf path, the values and the tolerance, and says what it usually means.
Misuse (wrong argument types) raises ``TypeError``/``ValueError``. When an example
falls outside an invariant's precondition (a vanishing gradient for the first-order
check, a ReLU kink for finite differences) :class:`InvariantNotApplicable` is raised
instead, so callers can count such examples rather than pass or fail them.

Parameters of a hybrid model are given "by half": a NamedTuple (such as
:class:`hybridcheck.HybridParams`), a dict ``{label: pytree}`` or a tuple/list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck._typing import PyTree

__all__ = [
    "PREFIX",
    "JIT_EAGER_TOL",
    "SHARDED_TOL",
    "InvariantNotApplicable",
    "error_regex",
    "halves_of",
    "assert_grads_match_params",
    "assert_every_half_gets_gradient",
    "assert_update_changes_exactly_graded_leaves",
    "assert_loss_decrease_first_order",
    "assert_update_is_descent",
    "assert_sgd_update",
    "assert_trees_close_jit_eager",
    "assert_sharded_matches_single_device",
    "assert_grads_match_finite_differences",
    "assert_bitwise_deterministic",
    "assert_all_finite",
    "assert_inputs_unchanged",
    "assert_traces_within",
]

PREFIX = "[hybridcheck]"


class InvariantNotApplicable(Exception):  # noqa: N818 - a verdict, not an error
    """This example does not meet the invariant's precondition (not a failure)."""


def error_regex(invariant: str, *parts: str) -> str:
    """Regex matching an assertion message of ``invariant`` containing ``parts``.

    For ``pytest.raises(AssertionError, match=error_regex(...))`` in tests.
    """
    import re

    return "(?s)" + ".*".join(
        [re.escape(f"{PREFIX} {invariant}:")] + [re.escape(p) for p in parts]
    )


def _fail(invariant: str, problems: Sequence[str], hint: str) -> None:
    if problems:
        body = "\n  - ".join(problems)
        raise AssertionError(f"{PREFIX} {invariant}: \n  - {body}\n  {hint}")


def halves_of(tree: Any, *, name: str = "params") -> dict[str, PyTree]:
    """Splits a by-half container into ``{label: pytree}``.

    Raises:
      TypeError: if ``tree`` is not a NamedTuple, Mapping, tuple or list.
      ValueError: if it has fewer than two halves.
    """
    if isinstance(tree, tuple) and hasattr(tree, "_asdict"):
        halves = dict(tree._asdict())
    elif isinstance(tree, Mapping):
        halves = {str(k): v for k, v in tree.items()}
    elif isinstance(tree, tuple | list):
        halves = {f"half{i}": v for i, v in enumerate(tree)}
    else:
        raise TypeError(
            f"{name} must hold one pytree per half (a NamedTuple such as "
            "HybridParams, a dict {label: pytree} or a tuple), got "
            f"{type(tree).__name__}"
        )
    if len(halves) < 2:
        raise ValueError(
            f"{name} must have at least two halves (e.g. 'nnx' and 'linen'), got "
            f"{list(halves)}"
        )
    return halves


def _leaves(tree: PyTree) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in flat]


def _paired(a: Any, b: Any, names: tuple[str, str]) -> list[tuple[str, PyTree, PyTree]]:
    ha, hb = halves_of(a, name=names[0]), halves_of(b, name=names[1])
    if set(ha) != set(hb):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same halves, got "
            f"{list(ha)} and {list(hb)}"
        )
    return [(label, ha[label], hb[label]) for label in ha]


def _index(i: tuple[Any, ...]) -> str:
    return str([int(k) for k in i]) if i else ""


def _leaf_triples(old: Any, new: Any, grads: Any) -> Any:
    """Yields ``(half, leaf_path, old_leaf, new_leaf, grad_leaf)`` over all halves."""
    for (label, o, n), (_, _, g) in zip(
        _paired(old, new, ("old", "new")),
        _paired(old, grads, ("old", "grads")),
        strict=True,
    ):
        for (path, ol), (_, nl), (_, gl) in zip(
            _leaves(o), _leaves(n), _leaves(g), strict=True
        ):
            yield label, path, ol, nl, gl


def _sq_norm(tree: PyTree) -> float:
    return float(
        sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))
    )


# --- structure -----------------------------------------------------------------


def assert_grads_match_params(params: Any, grads: Any) -> None:
    """Each half's gradient pytree has that half's structure, shapes and dtypes.

    Example:
      >>> g = hybridcheck.grads(params, x, y)
      >>> assert_grads_match_params(params, g)
    """
    problems = []
    for label, p, g in _paired(params, grads, ("params", "grads")):
        try:
            chex.assert_trees_all_equal_structs(p, g)
        except AssertionError as exc:
            problems.append(
                f"half '{label}': gradient tree structure differs from the params: "
                f"{str(exc).splitlines()[0]}"
            )
            continue
        for (path, pl), (_, gl) in zip(_leaves(p), _leaves(g), strict=True):
            if np.shape(pl) != np.shape(gl) or jnp.result_type(pl) != jnp.result_type(
                gl
            ):
                problems.append(
                    f"half '{label}' leaf {path}: param {jnp.result_type(pl)}"
                    f"{list(np.shape(pl))} but gradient {jnp.result_type(gl)}"
                    f"{list(np.shape(gl))}"
                )
    _fail(
        "grads_match_params",
        problems,
        "A gradient must mirror its parameters leaf for leaf. Differentiate w.r.t. "
        "each half's params pytree (argnums=(0, 1)), not w.r.t. a Module or a "
        "reshaped/concatenated copy.",
    )


# --- gradient flow and updates ---------------------------------------------------


def assert_every_half_gets_gradient(
    grads_per_example: Sequence[Any],
    *,
    frozen: Callable[[str, str], bool] | None = None,
) -> None:
    """Across examples, every half, and every leaf, gets a nonzero gradient somewhere.

    One example with an all-zero gradient is legitimate (every ReLU unit dead for that
    batch); a half or leaf that is zero on *every* example is not trained at all.

    Args:
      grads_per_example: gradients of several examples (each by half).
      frozen: ``frozen(half, leaf_path) -> bool`` marks leaves exempt by design.
    """
    if not grads_per_example:
        raise ValueError("grads_per_example must hold at least one example's gradients")
    seen: dict[str, dict[str, bool]] = {}
    for grads in grads_per_example:
        for label, half in halves_of(grads, name="grads").items():
            leaves = seen.setdefault(label, {})
            for path, leaf in _leaves(half):
                nonzero = bool(np.any(np.asarray(leaf) != 0))
                leaves[path] = leaves.get(path, False) or nonzero
    n = len(grads_per_example)
    problems = []
    for label, leaves in seen.items():
        live = {p: v for p, v in leaves.items() if not (frozen and frozen(label, p))}
        dead = [p for p, v in live.items() if not v]
        if live and len(dead) == len(live):
            problems.append(
                f"half '{label}': gradient is identically zero on all {n} examples "
                f"(leaves {', '.join(dead)})"
            )
        elif dead:
            problems.append(
                f"half '{label}': leaves {', '.join(dead)} have an identically zero "
                f"gradient on all {n} examples"
            )
    _fail(
        "every_half_gets_gradient",
        problems,
        "That half is not connected to the loss: it is captured in a closure instead "
        "of being an argument of the differentiated function, behind "
        "jax.lax.stop_gradient, or missing from argnums (the default argnums=0 "
        "differentiates only the first half). Mark leaves frozen on purpose via "
        "`frozen`.",
    )


def _ulp_floor(p: np.ndarray) -> np.ndarray:
    """The smallest update a float step is sure to apply to ``p``: 4 ulp of ``p``,
    and at least 2 x the smallest normal number, because XLA flushes subnormal
    results to zero on CPU (``0 - 1e-3 * 1e-37 == -0.0`` under jit)."""
    finfo = np.finfo(p.dtype if np.issubdtype(p.dtype, np.floating) else np.float32)
    return np.maximum(4 * finfo.eps * np.abs(p), 2 * finfo.tiny)


def assert_update_changes_exactly_graded_leaves(
    old: Any,
    new: Any,
    grads: Any,
    *,
    lr: float,
    allow_change_without_grad: bool = False,
) -> None:
    """Leaves with an SGD-visible gradient change; zero-gradient leaves do not.

    "SGD-visible": some element has ``lr * |g|`` above 4 ulp of the param (and above
    the smallest normal float: subnormal updates are flushed), so a first-order
    step must move it (Adam/momentum move it even more at step 1). A leaf
    with an identically zero gradient must stay put, unless
    ``allow_change_without_grad`` (weight decay, EMA).
    """
    problems = []
    for label, path, ol, nl, gl in _leaf_triples(old, new, grads):
        ol_, nl_, gl_ = np.asarray(ol), np.asarray(nl), np.asarray(gl)
        changed = bool(np.any(ol_ != nl_))
        visible = bool(np.any(lr * np.abs(gl_) > _ulp_floor(ol_)))
        if visible and not changed:
            problems.append(
                f"half '{label}' leaf {path}: gradient max|g|="
                f"{float(np.max(np.abs(gl_))):.3g} (lr={lr:g}) but the leaf did "
                "not change"
            )
        if not allow_change_without_grad and not np.any(gl_ != 0) and changed:
            problems.append(
                f"half '{label}' leaf {path}: gradient is zero but the leaf "
                f"changed by max {float(np.max(np.abs(nl_ - ol_))):.3g}"
            )
    _fail(
        "update_changes_exactly_graded_leaves",
        problems,
        "An unchanged leaf with a gradient means the step dropped that half's update "
        "(e.g. returned the old params for it); a changed leaf without gradient means "
        "the update is not driven by the gradient (pass allow_change_without_grad "
        "for weight decay).",
    )


def assert_loss_decrease_first_order(
    loss_at: Callable[[float], float],
    grad_sq_norm: float,
    *,
    lrs: Sequence[float] = (1e-3, 1e-4, 1e-5, 1e-6),
    rtol: float = 1e-2,
    loss_scale: float = 1.0,
) -> None:
    """``(L(0) - L(lr)) / (lr * ||g||^2) -> 1`` as ``lr -> 0``, for an SGD step.

    ``loss_at(lr)`` is the loss after one step of size ``lr`` (``loss_at(0.0)`` the
    loss before). Evaluate it in float64 (``compat.enable_x64``). The ratio tends to 1
    exactly when the step moves every half along ``-g``; updating one half gives
    ``||g_half||^2 / ||g||^2 < 1``, a sign error gives ``< 0``, so a bare "the loss
    went down" check misses what this one catches. Passes if the best ratio over
    ``lrs`` is within ``rtol`` of 1.

    Raises:
      InvariantNotApplicable: when ``||g||^2`` is too small for the ratio to be
        measured (a flat point), relative to ``loss_scale``.
    """
    if not lrs or any(not (lr > 0) for lr in lrs):
        raise ValueError(f"lrs must be positive learning rates, got {list(lrs)}")
    if not math.isfinite(grad_sq_norm) or grad_sq_norm <= 1e-12 * max(1.0, loss_scale):
        raise InvariantNotApplicable(
            f"||g||^2 = {grad_sq_norm:.3g}: gradient vanishes, first order says nothing"
        )
    before = float(loss_at(0.0))
    ratios = []
    for lr in lrs:
        after = float(loss_at(lr))
        ratios.append((before - after) / (lr * grad_sq_norm))
    best = min(ratios, key=lambda r: abs(r - 1.0) if math.isfinite(r) else math.inf)
    if not (math.isfinite(best) and abs(best - 1.0) <= rtol):
        shown = ", ".join(
            f"lr={lr:g}: {r:.4g}" for lr, r in zip(lrs, ratios, strict=True)
        )
        _fail(
            "loss_decrease_first_order",
            [
                f"(loss_before - loss_after) / (lr * ||g||^2) should tend to 1; got "
                f"{shown} (loss_before={before:.6g}, ||g||^2={grad_sq_norm:.6g}, "
                f"rtol={rtol:g})"
            ],
            "A ratio near ||g_half||^2/||g||^2 means only one half is updated; a "
            "negative ratio means a sign error (p + lr*g); a ratio that scales with lr "
            "means the step size is not lr.",
        )


def assert_update_is_descent(old: Any, new: Any, grads: Any) -> None:
    """Per half, the update points downhill: ``<new - old, -g> > 0`` where g != 0.

    Holds at the first step for SGD, momentum and Adam (elementwise the update has
    the sign of ``-g``); catches a sign error confined to one half.
    """
    problems = []
    for (label, o, n), (_, _, g) in zip(
        _paired(old, new, ("old", "new")),
        _paired(old, grads, ("old", "grads")),
        strict=True,
    ):
        moved = any(
            not np.array_equal(np.asarray(ol), np.asarray(nl))
            for ol, nl in zip(jax.tree.leaves(o), jax.tree.leaves(n), strict=True)
        )
        # No gradient: nothing to descend. Not moved at all: a dropped update, which
        # update_changes_exactly_graded_leaves reports (or an update below float
        # resolution, which is no error).
        if _sq_norm(g) == 0.0 or not moved:
            continue
        inner = sum(
            float(
                np.sum(
                    (np.asarray(nl, np.float64) - np.asarray(ol, np.float64))
                    * -np.asarray(gl, np.float64)
                )
            )
            for ol, nl, gl in zip(
                jax.tree.leaves(o), jax.tree.leaves(n), jax.tree.leaves(g), strict=True
            )
        )
        if not inner > 0.0:
            problems.append(
                f"half '{label}': <new - old, -grad> = {inner:.4g}, must be > 0 "
                f"(||grad||^2 = {_sq_norm(g):.4g})"
            )
    _fail(
        "update_is_descent",
        problems,
        "The update of that half does not go downhill: a sign error (p + lr*g), or "
        "the update applied to the wrong half's gradient.",
    )


def assert_sgd_update(
    old: Any, new: Any, grads: Any, *, lr: float, ulps: float = 16.0
) -> None:
    """``new == old - lr * grads`` leaf by leaf, to ``ulps`` ulps of the operands.

    The tolerance per element is ``ulps * eps * (|old| + lr * max|grads of the
    leaf|)``: ``grads`` usually comes from another compiled program than the step's
    own gradient, and two programs reduce in different orders, agreeing to a few ulp
    of the leaf's largest gradient entry, not of each (possibly cancelled) entry.
    """
    problems = []
    for label, path, ol, nl, gl in _leaf_triples(old, new, grads):
        ol_, nl_, gl_ = (np.asarray(a) for a in (ol, nl, gl))
        expected = ol_.astype(np.float64) - lr * gl_.astype(np.float64)
        eps = np.finfo(ol_.dtype).eps if np.issubdtype(ol_.dtype, np.floating) else 0
        g_scale = float(np.max(np.abs(gl_), initial=0.0))
        tol = ulps * eps * (np.abs(ol_) + lr * g_scale) + np.finfo(np.float32).tiny
        err = np.abs(nl_.astype(np.float64) - expected)
        if np.any(err > tol):
            i = np.unravel_index(int(np.argmax(err - tol)), err.shape)
            problems.append(
                f"half '{label}' leaf {path}{_index(i)}: new="
                f"{float(nl_[i]):.8g}, old - lr*grad={float(expected[i]):.8g} "
                f"(|diff|={float(err[i]):.3g} > tol {float(tol[i]):.3g})"
            )
    _fail(
        "sgd_update",
        problems,
        f"An SGD step must be p - lr*g with lr={lr:g} on every leaf of every half.",
    )


# --- execution properties ---------------------------------------------------------


def _close_problems(
    expected: PyTree,
    actual: PyTree,
    names: tuple[str, str],
    rtol: float,
    atol: float | Sequence[float],
) -> list[str]:
    problems = []
    e_leaves, a_leaves = _leaves(expected), _leaves(actual)
    atols = [atol] * len(e_leaves) if isinstance(atol, float | int) else list(atol)
    if len(e_leaves) != len(a_leaves):
        problems.append(
            f"{len(e_leaves)} {names[0]} leaves vs {len(a_leaves)} {names[1]} leaves"
        )
    for (path, e), (_, a), leaf_atol in zip(e_leaves, a_leaves, atols, strict=False):
        e_, a_ = np.asarray(e, np.float64), np.asarray(a, np.float64)
        if e_.shape != a_.shape:
            problems.append(
                f"{path}: {names[0]} shape {e_.shape} vs {names[1]} {a_.shape}"
            )
            continue
        bad = ~np.isclose(a_, e_, rtol=rtol, atol=leaf_atol, equal_nan=True)
        if np.any(bad):
            i = tuple(np.argwhere(bad)[0])
            problems.append(
                f"{path}{_index(i)}: {names[0]}={e_[i]:.8g}, "
                f"{names[1]}={a_[i]:.8g} (rtol={rtol:g}, atol={leaf_atol:.3g})"
            )
    return problems


def step_order_problems(
    a: PyTree,
    b: PyTree,
    names: tuple[str, str],
    *,
    rtol: float,
    atol: float,
    old: PyTree = None,
    update_tol: float = 0.0,
    losses: tuple[float, float, float] | None = None,
    loss_rtol: float = 0.0,
    loss_atol: float = 0.0,
) -> list[str]:
    """What differs between two results of one step (see the jit/eager assertion)."""
    atols: float | list[float] = atol
    if old is not None:
        atols = [
            atol
            + update_tol
            * float(
                np.max(
                    np.abs(np.asarray(x, np.float64) - np.asarray(o, np.float64)),
                    initial=0.0,
                )
            )
            for o, x in zip(jax.tree.leaves(old), jax.tree.leaves(a), strict=False)
        ]
    problems = _close_problems(a, b, names, rtol, atols)
    if losses is not None:
        before, after_a, after_b = losses
        allowed = loss_rtol * abs(before - after_a) + loss_atol * (1.0 + abs(before))
        if not abs(after_a - after_b) <= allowed:
            problems.append(
                f"loss after the step: {names[0]}={after_a:.8g}, "
                f"{names[1]}={after_b:.8g} (before={before:.8g}; "
                f"allowed |diff| {allowed:.3g})"
            )
    return problems


# Default tolerances of the two "same math, another order" comparisons. The checks
# quarter them to decide whether an example is too ill-conditioned to compare at all.
JIT_EAGER_TOL: dict[str, float] = {
    "rtol": 1e-4,
    "atol": 1e-5,
    "update_tol": 0.05,
    "loss_rtol": 0.01,
    "loss_atol": 1e-6,
}
SHARDED_TOL: dict[str, float] = {"rtol": 1e-4, "atol": 1e-5}


def assert_trees_close_jit_eager(
    eager: PyTree,
    jitted: PyTree,
    *,
    rtol: float = JIT_EAGER_TOL["rtol"],
    atol: float = JIT_EAGER_TOL["atol"],
    old: PyTree = None,
    update_tol: float = JIT_EAGER_TOL["update_tol"],
    losses: tuple[float, float, float] | None = None,
    loss_rtol: float = JIT_EAGER_TOL["loss_rtol"],
    loss_atol: float = JIT_EAGER_TOL["loss_atol"],
) -> None:
    """Eager and jitted results of a step agree.

    Never bitwise: XLA fuses and reorders reductions (about 1 ulp apart on
    JAX >= 0.5). Each leaf must agree to ``rtol``/``atol``; with ``old`` (the params
    before the step) a leaf may also differ by ``update_tol`` times its largest
    update, because normalising optimizers (Adam at step 1: ``g / (|g| + eps)``)
    amplify rounding in gradient entries near ``eps``. With ``losses`` =
    ``(before, after_eager, after_jit)`` the two losses after the step must agree
    to ``loss_rtol`` (1%) of the decrease plus ``loss_atol * (1 + |before|)``: the
    observable that a baked-in Python value changes.
    """
    problems = step_order_problems(
        eager,
        jitted,
        ("eager", "jit"),
        rtol=rtol,
        atol=atol,
        old=old,
        update_tol=update_tol,
        losses=losses,
        loss_rtol=loss_rtol,
        loss_atol=loss_atol,
    )
    _fail(
        "jit_matches_eager",
        problems,
        "The step depends on Python-side state (a counter, a global, a cached array, "
        "host randomness) that jit bakes in at trace time, or it branches on values.",
    )


def assert_sharded_matches_single_device(
    single: PyTree,
    sharded: PyTree,
    *,
    rtol: float = SHARDED_TOL["rtol"],
    atol: float = SHARDED_TOL["atol"],
) -> None:
    """The step run data-parallel over several devices equals the one-device run.

    Tolerances as for jit vs eager: the batch mean is reduced across devices in a
    different order. Pass float64 runs where the model is ill-conditioned (see
    ``checks.check_sharded``): float32 rounding differences can be amplified.
    """
    _fail(
        "sharded_matches_single_device",
        _close_problems(single, sharded, ("single-device", "sharded"), rtol, atol),
        "The step is not batch-size-agnostic under sharding: a sum where a mean is "
        "meant (per-shard mean without a cross-device mean), batch statistics taken "
        "per shard, or a per-device RNG.",
    )


def assert_grads_match_finite_differences(
    loss_of_half: Mapping[str, Callable[[PyTree], Any]],
    params: Any,
    *,
    eps: Sequence[float] = (1e-4, 1e-5, 1e-6, 1e-3),
    tol: float = 1e-3,
) -> None:
    """Autodiff gradients equal central finite differences, half by half.

    Uses ``jax.test_util.check_grads`` (reverse mode, order 1). Call it under
    ``compat.enable_x64()`` with float64 params: float32 finite differences are too
    coarse to mean anything. Central differences converge as eps -> 0 until rounding
    takes over, and where that window lies depends on the curvature (BatchNorm of a
    near-constant column is very curved), so each eps in ``eps`` is tried until one
    agrees. At a kink (a ReLU input at exactly 0) finite differences disagree with any
    subgradient, so a failing half is re-checked at a nearby point (params plus a
    ``1e-3``-relative random offset). Only a disagreement at every eps at both points
    is a failure: a wrong gradient (a factor, a sign, a dropped term) is wrong at all.

    Args:
      loss_of_half: ``{label: f}`` where ``f(half_params)`` is the loss with the
        other halves held fixed.
      params: the model's params by half.
    """
    from jax.test_util import check_grads

    halves = halves_of(params)
    if set(loss_of_half) != set(halves):
        raise ValueError(
            f"loss_of_half must have one function per half {list(halves)}, got "
            f"{list(loss_of_half)}"
        )
    problems = []
    for label, half in halves.items():
        f = loss_of_half[label]
        errors: list[str] = []
        for point in (half, _nudge(half)):
            for step in eps:
                try:
                    check_grads(
                        f,
                        (point,),
                        order=1,
                        modes=("rev",),
                        eps=step,
                        atol=tol,
                        rtol=tol,
                    )
                    errors = []
                    break
                except AssertionError as exc:
                    errors.append(str(exc).strip().splitlines()[0][:300])
            if not errors:
                break
        if errors:
            problems.append(
                f"half '{label}': autodiff disagrees with finite differences "
                f"(eps in {list(eps)}, tol={tol:g}) at the example and at a nearby "
                "point: "
                f"{errors[0]}"
            )
    _fail(
        "grads_match_finite_differences",
        problems,
        "The gradient of that half is wrong: a custom_vjp/custom_jvp with a bug, a "
        "stop_gradient on part of the path, or a forward that is not the function "
        "being differentiated.",
    )


def _nudge(tree: PyTree) -> PyTree:
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(1234), max(len(leaves), 1))
    return jax.tree.unflatten(
        treedef,
        [
            leaf
            + 1e-3
            * (1.0 + jnp.abs(leaf))
            * jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
            for leaf, k in zip(leaves, keys, strict=False)
        ],
    )


def assert_bitwise_deterministic(first: PyTree, second: PyTree) -> None:
    """Two runs on the same inputs gave bitwise-equal outputs."""
    problems = []
    for (path, a), (_, b) in zip(_leaves(first), _leaves(second), strict=False):
        a_, b_ = np.asarray(a), np.asarray(b)
        if a_.shape != b_.shape or not np.array_equal(a_, b_, equal_nan=True):
            diff = (
                np.max(np.abs(a_.astype(np.float64) - b_.astype(np.float64)))
                if a_.shape == b_.shape
                else "shape"
            )
            problems.append(f"{path}: runs differ (max |diff| = {diff})")
    if len(_leaves(first)) != len(_leaves(second)):
        problems.append("the two runs returned different tree structures")
    _fail(
        "deterministic",
        problems,
        "Same params, batch and lr must give the same bits. Look for host randomness "
        "(numpy/random without a fixed key), a PRNG key that is not an input, or "
        "state carried between calls.",
    )


def assert_all_finite(tree: PyTree, *, what: str = "outputs") -> None:
    """Every leaf of ``tree`` is finite (no NaN/Inf)."""
    problems = []
    for path, leaf in _leaves(tree):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            n_bad = int(np.sum(~np.isfinite(arr)))
            problems.append(f"{what}{path}: {n_bad} of {arr.size} values are NaN/Inf")
    _fail(
        "all_finite",
        problems,
        "NaN/Inf after one step on finite inputs: a division by zero, log/sqrt of 0, "
        "an overflowing lr, or an uninitialised (NaN) variable.",
    )


def assert_inputs_unchanged(snapshot: PyTree, inputs: PyTree) -> None:
    """Inputs still hold the values of ``snapshot`` (a NumPy copy made before the
    step) and none of their buffers was donated/deleted."""
    problems = []
    for (path, s), (_, leaf) in zip(_leaves(snapshot), _leaves(inputs), strict=False):
        if isinstance(leaf, jax.Array) and leaf.is_deleted():
            problems.append(f"input{path}: buffer was deleted (donated to the step)")
            continue
        if not np.array_equal(np.asarray(s), np.asarray(leaf), equal_nan=True):
            problems.append(f"input{path}: value changed during the step")
    _fail(
        "inputs_unchanged",
        problems,
        "The step mutated or donated its inputs. Callers (and the loss before/after "
        "comparison) keep using them: copy before in-place NumPy ops, and do not "
        "donate_argnums arrays the caller still owns.",
    )


def assert_traces_within(traces: int, budget: int, *, what: str = "step") -> None:
    """``traces`` (from :class:`hybridcheck.tracing.TraceCounter`) <= ``budget``."""
    if traces > budget:
        _fail(
            "retrace_budget",
            [f"{what} traced {traces} times, budget is {budget} (one per input shape)"],
            "Something that should be a traced value is a Python constant baked into "
            "the trace (lr or seed passed as a Python float/int to a static argument, "
            "a Python scalar in the batch), or shapes vary more than expected.",
        )
