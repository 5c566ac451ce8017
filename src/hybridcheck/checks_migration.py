"""How the migration invariants are checked on one example of a MigrationSubject."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import _partitioning, compat, invariants, sharding
from hybridcheck.invariants import migration as mig
from hybridcheck.invariants._tree import leaves
from hybridcheck.invariants.partitioning import assert_sharding_matches_before
from hybridcheck.migration import MigrationSubject
from hybridcheck.subject import Example, to64

_ASSERT = {
    "loss_matches_before": mig.assert_loss_matches_before,
    "grads_match_before": mig.assert_grads_match_before,
    "step_matches_before": mig.assert_step_matches_before,
    "trajectory_matches_before": mig.assert_trajectory_matches_before,
}


DETERMINISTIC = (
    "compared with the stochastic layers off (MigrationCase.before_eval / after_eval)"
)


def _with_note(ms: MigrationSubject, check: Any, *args: Any) -> None:
    """Runs an assertion; its failure says when the comparison was deterministic."""
    try:
        check(*args)
    except AssertionError as exc:
        if ms.stochastic is None:
            raise
        raise AssertionError(f"{exc}\n  ({DETERMINISTIC})") from None


def _record(ms: MigrationSubject, name: str, devs: list[mig.Deviation]) -> None:
    """Records one example's deviations; fails at once past the hard limit (so the
    example can be shrunk), otherwise the verdict waits for all examples."""
    ms.evidence.setdefault(name, []).append(devs)
    if any(d.units > mig.HARD_UNITS for d in devs):
        _with_note(ms, _ASSERT[name], [devs])


def stochastic_note(ms: MigrationSubject) -> str:
    """What the report says when the comparison was made deterministic: whether
    the two models, stochastic layers on, agreed as well."""
    if ms.stochastic is None:
        return ""
    evidence = ms.evidence.get("stochastic_loss", [])
    worst = max((d.units for ex in evidence for d in ex), default=0.0)
    try:
        mig.assert_loss_matches_before(evidence)
    except AssertionError:
        return (
            f"{DETERMINISTIC}: with them on, the two losses differ (worst {worst:.3g}x "
            "float32 noise): the models consume the random key differently, which "
            "alone is no bug"
        )
    return f"{DETERMINISTIC}; with them on, the two models agree as well"


def conclude(name: str) -> Any:
    def run(ms: MigrationSubject) -> str | None:
        evidence = ms.evidence.get(name, [])
        if not evidence:
            raise invariants.InvariantNotApplicable("no example was compared")
        _with_note(ms, _ASSERT[name], evidence)
        return stochastic_note(ms) or None

    run.__name__ = f"conclude_{name}"
    return run


def _random_like(key: Any, x: Any) -> Any:
    """A random array like ``x``; ``float0`` zeros for integer leaves (JAX's
    tangent and cotangent type for them)."""
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jax.random.normal(key, jnp.shape(x), jnp.float64).astype(
            jnp.result_type(x)
        )
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _nonzero(x: Any) -> Any:
    """Which elements were reached; integer leaves (float0) are not traced."""
    arr = np.asarray(x)
    if arr.dtype == jax.dtypes.float0:
        return np.ones(arr.shape, bool)
    return arr != 0


def check_convert_covers_every_param(ms: MigrationSubject, e: Example) -> None:
    with compat.enable_x64():
        p64 = to64(e.params)
        key = jax.random.PRNGKey(0)
        try:
            out, pullback = jax.vjp(ms.convert, p64)
            (back,) = pullback(jax.tree.map(lambda x: _random_like(key, x), out))
            tangent = jax.tree.map(lambda x: _random_like(key, x), p64)
            _, forward = jax.jvp(ms.convert, (p64,), (tangent,))
        except Exception as exc:  # noqa: BLE001 - a host-side converter
            raise invariants.InvariantNotApplicable(
                f"convert is not differentiable by JAX ({type(exc).__name__}), so "
                "element coverage cannot be traced"
            ) from exc
        reach = jax.tree.map(_nonzero, back)
        source = jax.tree.map(_nonzero, forward)
    mig.assert_convert_covers_every_param(reach, source)


def check_loss_matches_before(ms: MigrationSubject, e: Example) -> None:
    before32 = ms.before.loss_fn(e.params, e.batch)
    with compat.enable_x64():
        p64, b64 = to64(e.params), to64(e.batch)
        before64 = ms.before.loss64(p64, b64)
        after64 = ms.after.loss64(ms.convert64(e.params), b64)
    _record(
        ms,
        "loss_matches_before",
        [mig.deviation("loss", before64, after64, before32)],
    )
    if ms.stochastic is not None:  # the same comparison, stochastic layers on
        before, after = ms.stochastic
        with compat.enable_x64():
            train64 = before.loss64(p64, b64)
            after_train64 = after.loss64(ms.convert64(e.params), b64)
        # Random draws differ between float32 and float64 (the uniform samples
        # are drawn in the input dtype), so the stochastic model's own float32 run
        # is no measure of rounding: the deterministic model's noise is the unit.
        noise = np.float64(before32) - np.float64(before64)
        train = np.asarray(train64, np.float64)
        dev = mig.deviation("stochastic loss", train, after_train64, train + noise)
        ms.evidence.setdefault("stochastic_loss", []).append([dev])


def check_grads_match_before(ms: MigrationSubject, e: Example) -> None:
    before32 = ms.before.grad_fn(e.params, e.batch)
    with compat.enable_x64():
        p64, b64 = to64(e.params), to64(e.batch)
        before64 = ms.before.grad_fn(p64, b64)
        try:
            after64 = ms.pulled_grad(p64, b64)
        except Exception as exc:  # noqa: BLE001 - a host-side converter
            raise invariants.InvariantNotApplicable(
                f"convert is not differentiable by JAX ({type(exc).__name__}): the "
                "after gradient cannot be pulled back to the before params"
            ) from exc
    scale = mig.tree_norm(before64)
    devs = [
        mig.deviation(
            f"gradient {half}{path}", b64_leaf, a64_leaf, b32_leaf, scale=scale
        )
        for half in before64
        for (path, b64_leaf), (_, a64_leaf), (_, b32_leaf) in zip(
            leaves(before64[half]),
            leaves(after64[half]),
            leaves(before32[half]),
            strict=True,
        )
    ]
    _record(ms, "grads_match_before", devs)


def _update_devs(
    ms: MigrationSubject, start: Any, before_end: tuple[Any, Any], after_end: Any
) -> list[mig.Deviation]:
    """Deviations of the after model's update from the converted before update."""
    before64, before32 = before_end
    with compat.enable_x64():
        origin = ms.convert64(start)
        want64, want32 = ms.convert64(before64), ms.convert64(before32)
    moved = jax.tree.map(
        lambda w, o: (
            np.asarray(w, np.float64) - np.asarray(o, np.float64)
            if jnp.issubdtype(jnp.result_type(o), jnp.inexact)
            else np.zeros(())
        ),
        want64,
        origin,
    )
    scale = mig.tree_norm(moved)
    devs = []
    for (path, o), (_, w64), (_, w32), (_, got) in zip(
        leaves(origin), leaves(want64), leaves(want32), leaves(after_end), strict=True
    ):
        if not jnp.issubdtype(jnp.result_type(o), jnp.inexact):
            if not np.array_equal(np.asarray(w64), np.asarray(got)):
                devs.append(mig.Deviation(f"update {path}", np.inf, np.inf, 0))
            continue
        o_ = np.asarray(o, np.float64)
        devs.append(
            mig.deviation(
                f"update {path}",
                np.asarray(w64, np.float64) - o_,
                np.asarray(got, np.float64) - o_,
                np.asarray(w32, np.float64) - o_,
                scale=scale,
            )
        )
    return devs


def _run(ms: MigrationSubject, e: Example, steps: int) -> tuple[Any, Any, Any]:
    """``steps`` steps of both models from the example: before in float64 and in
    float32, after (from the converted params) in float64."""
    before32 = e.params
    for _ in range(steps):
        before32 = ms.before.jitted(before32, e.batch, e.lr)
    with compat.enable_x64():
        b64, lr = to64(e.batch), jnp.float64(e.lr)
        before64, after64 = to64(e.params), ms.convert64(e.params)
        for _ in range(steps):
            before64 = ms.before.step64(before64, b64, lr)
            after64 = ms.after.step64(after64, b64, lr)
    return before64, before32, after64


def check_step_matches_before(ms: MigrationSubject, e: Example) -> None:
    before64, before32, after64 = _run(ms, e, 1)
    _record(
        ms,
        "step_matches_before",
        _update_devs(ms, e.params, (before64, before32), after64),
    )


def check_trajectory_matches_before(ms: MigrationSubject, e: Example) -> None:
    before64, before32, after64 = _run(ms, e, ms.steps)
    _record(
        ms,
        "trajectory_matches_before",
        _update_devs(ms, e.params, (before64, before32), after64),
    )


def check_roundtrip(ms: MigrationSubject, e: Example) -> None:
    if ms.invert is None:
        raise invariants.InvariantNotApplicable("the case has no invert")
    mig.assert_roundtrip(e.params, ms.invert(ms.convert(e.params)))


def _replicated(params: Any) -> _partitioning.Specs:
    return [(path, jax.sharding.PartitionSpec()) for path, _ in leaves(params)]


def check_sharding_matches_before(ms: MigrationSubject, e: Example) -> None:
    reason = compat.sharding_support()
    if reason:
        raise invariants.InvariantNotApplicable(reason)
    if not _partitioning.mesh_axes(ms.before_specs, ms.after_specs):
        raise invariants.InvariantNotApplicable(
            f"neither side declares any partitioning ({ms.specs_source}): "
            "from_linen / from_nnx cases read nn.with_partitioning / "
            "nnx.with_partitioning from the model; for other cases set "
            "MigrationCase.before_specs / after_specs"
        )
    with compat.enable_x64():
        p64, b64, lr = to64(e.params), to64(e.batch), jnp.float64(e.lr)
        a64 = ms.convert64(e.params)
        before_specs = ms.before_specs or _replicated(p64)
        after_specs = ms.after_specs or _replicated(a64)
        # The placement depends on the converter's layout, not on the values: one
        # trace per params shape.
        key = str(jax.tree.map(np.shape, p64))
        if key not in ms.placement_memo:
            ms.placement_memo[key] = _partitioning.placements(
                ms.convert, p64, before_specs, after_specs
            )
        try:
            assert_sharding_matches_before(ms.placement_memo[key])
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n  Specs: {ms.specs_source}.") from None
        axes = _partitioning.mesh_axes(after_specs)
        if not axes:  # nothing is partitioned after (and nothing was misplaced)
            return
        mesh = sharding.device_mesh(axes)
        single = ms.after.step64(a64, b64, lr)
        on_mesh = sharding.run_partitioned(
            ms.after.step64, a64, [s for _, s in after_specs], mesh, b64, lr
        )
    assert_sharding_matches_before([], single, on_mesh)
