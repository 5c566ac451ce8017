"""How the training-loop invariants are checked: state, randomness, trajectory, tx."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybridcheck import compat, invariants
from hybridcheck.checks import new_params
from hybridcheck.invariants import training
from hybridcheck.subject import TRAJECTORY_STEPS, Example, Subject, to64

RESEED_KEYS = (11, 12)
"""Two fixed keys: the randomness invariant compares the model under each."""


def check_state_is_threaded(s: Subject, e: Example) -> None:
    if s.forward_state is None:
        raise invariants.InvariantNotApplicable("the case has no state_fn")
    forward = s.forward_state(e.params, e.batch)
    old, new = s.split(e.params), s.split(new_params(s, e, "state_is_threaded"))
    unknown = set(forward) - set(old)
    if unknown:
        raise ValueError(
            f"{s.name}: state_fn returned halves {sorted(unknown)} that params lacks "
            f"(halves {list(old)})"
        )
    training.assert_state_is_threaded(
        {h: old[h] for h in forward}, {h: new[h] for h in forward}, forward
    )


def _loss(s: Subject, params: Any, batch: Any) -> Any:
    return np.asarray(s.loss_fn(params, batch))


def check_randomness_is_used(s: Subject, e: Example) -> None:
    if s.reseed is None:
        raise invariants.InvariantNotApplicable("the case has no reseed")
    (p1, b1), (p2, b2) = (
        s.reseed(e.params, e.batch, jax.random.PRNGKey(k)) for k in RESEED_KEYS
    )
    first, again, other = _loss(s, p1, b1), _loss(s, p1, b1), _loss(s, p2, b2)
    if not np.array_equal(first, again):
        invariants.fail(
            "randomness_is_used",
            [f"the same key gave different losses: {first!r} then {again!r}"],
            "Randomness must come from the key alone: host randomness or state "
            "carried between calls makes the same key give other results.",
        )
    s.evidence.setdefault("randomness_is_used:key", []).append(
        not np.array_equal(first, other)
    )
    if s.rng_halves:
        old = s.split(e.params)
        new = s.split(new_params(s, e, "randomness_is_used"))
        advanced = s.join(e.params, {**old, **{h: new[h] for h in s.rng_halves}})
        s.evidence.setdefault("randomness_is_used:advanced", []).append(
            not np.array_equal(_loss(s, e.params, e.batch), _loss(s, advanced, e.batch))
        )


def conclude_randomness_is_used(s: Subject) -> None:
    key = s.evidence.get("randomness_is_used:key", [])
    if not key:
        raise invariants.InvariantNotApplicable("no example was checked")
    training.assert_randomness_is_used(
        key, advanced=s.evidence.get("randomness_is_used:advanced", [])
    )


def check_every_trainable_is_trained(s: Subject, e: Example) -> None:
    points, grads = s.trajectory(e)
    training.assert_every_trainable_is_trained(
        [s.trainable(p) for p in points], grads, lr=e.lr, frozen=s.frozen
    )


def check_update_matches_tx(s: Subject, e: Example) -> None:
    import optax

    if s.tx is None:
        raise invariants.InvariantNotApplicable("the case has no tx")
    with compat.enable_x64():
        batch, lr = to64(e.batch), jnp.float64(e.lr)
        points = [to64(e.params)]
        for _ in range(TRAJECTORY_STEPS):
            points.append(s.step64(points[-1], batch, lr))
        tx = s.tx(e.lr)
        state = tx.init(s.trainable(points[0]))
        expected = []
        for p in points[:-1]:
            train = s.trainable(p)
            updates, state = tx.update(s.grad_fn(p, batch), state, train)
            expected.append(optax.apply_updates(train, updates))
        training.assert_update_matches_tx(
            expected,
            [s.trainable(p) for p in points[1:]],
            [s.trainable(p) for p in points[:-1]],
        )
