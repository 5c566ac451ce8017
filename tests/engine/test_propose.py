"""propose_convert: the converter of each built-in migration from its two models
alone, equal to the hand-written one; semantic bugs in the after model get no
passing proposal; the oracle settles what names and order cannot."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hybridcheck as hc
from hybridcheck.cases.migrations import cases, mutants
from hybridcheck.cases.migrations._shared import mse, vector_batches
from hybridcheck.describe.trees import leaves

BUILT_IN = {m.name: m for m in cases()}


@functools.cache
def _proposal(name: str) -> Any:
    m = BUILT_IN[name]
    return hc.propose_convert(
        m.before, m.after, before_eval=m.before_eval, after_eval=m.after_eval
    )


def _same_leaves(a: Any, b: Any) -> list[str]:
    """Paths where two trees differ (structure, dtype class or value)."""
    la, lb = dict(leaves(a)), dict(leaves(b))
    problems = [f"paths {sorted(set(la) ^ set(lb))}"] if set(la) != set(lb) else []
    for path in sorted(set(la) & set(lb)):
        x, y = np.asarray(la[path]), np.asarray(lb[path])
        if x.shape != y.shape or not np.array_equal(x, y):
            problems.append(path)
    return problems


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_a_built_in_migration_is_proposed_from_its_two_models(name):
    m, proposal = BUILT_IN[name], _proposal(name)
    assert proposal.passed, proposal.summary()
    params = m.before.init(jax.random.PRNGKey(5))
    assert _same_leaves(proposal.convert(params), m.convert(params)) == []
    assert _same_leaves(proposal.invert(proposal.convert(params)), params) == []
    # every before leaf is mapped (RNG state aside) and each how is a known one
    hows = {e.how.split(" ")[0] for e in proposal.mapping}
    assert hows <= {"name", "shape", "order", "oracle", "follows"}, hows
    assert not [u for u in proposal.unmatched if "RNG" not in u[2]], proposal.unmatched


def test_the_source_is_standalone_and_is_the_converter():
    name = "migrate-seed:linen-mlp->hybrid"
    m, proposal = BUILT_IN[name], _proposal(name)
    text = proposal.source()
    assert "hybridcheck" not in "".join(
        line for line in text.splitlines() if "import" in line
    )
    namespace: dict[str, Any] = {}
    exec(compile(text, "converter.py", "exec"), namespace)  # noqa: S102
    params = m.before.init(jax.random.PRNGKey(2))
    got = namespace["convert"](params)
    assert [p for p, _ in leaves(got)] == [p for p, _ in leaves(m.convert(params))]
    assert _same_leaves(got, proposal.convert(params)) == []
    assert _same_leaves(namespace["invert"](got), params) == []


def _after_bug(mutant: Any) -> bool:
    """A mutant whose after model is broken (not its converter), caught by an
    invariant the proposal's verdict runs."""
    hand_written = {c.convert for c in cases()}
    return mutant.make().convert in hand_written and mutant.caught_by in {
        "loss_matches_before",
        "step_matches_before",
        "loss_distribution_matches_before",
    }


AFTER_BUGS = [m for m in mutants() if _after_bug(m)]


@pytest.mark.parametrize("mutant", AFTER_BUGS, ids=[m.name for m in AFTER_BUGS])
def test_a_semantic_bug_in_the_after_model_gets_no_passing_proposal(mutant):
    case = mutant.make()
    proposal = hc.propose_convert(
        case.before,
        case.after,
        before_eval=case.before_eval,
        after_eval=case.after_eval,
        cap=32,
    )
    assert not proposal.passed, proposal.summary()
    assert "FAILED" in proposal.source()
    # the closest mapping goes to localisation, which says where the models part
    assert proposal.localisation, proposal.summary()
    assert "could not run" not in proposal.localisation, proposal.localisation


# -- what names cannot decide ----------------------------------------------------

D = 4


def _before_loss(p: Any, b: Any) -> Any:
    h = jnp.tanh(b[0] @ p["linen"]["a"]["w"])
    return mse(jnp.tanh(h @ p["linen"]["b"]["w"]) @ p["linen"]["c"]["w"], b[1])


def _after_loss(p: Any, b: Any) -> Any:  # kernels stored (out, in), other names
    q = p["nnx"]
    h = jnp.tanh(b[0] @ q["first"]["kernel"].T)
    return mse(jnp.tanh(h @ q["second"]["kernel"].T) @ q["third"]["kernel"].T, b[1])


def _init(names: tuple[str, ...], leaf: str, half: str) -> Any:
    def init(key: Any) -> Any:
        keys = jax.random.split(key, len(names))
        return {
            half: {
                n: {leaf: jax.random.normal(k, (D, D))}
                for n, k in zip(names, keys, strict=True)
            }
        }

    return init


def _three_w() -> Any:
    return hc.HybridCase(
        name="three-w",
        init=_init(("a", "b", "c"), "w", "linen"),
        loss=_before_loss,
        batches=vector_batches(),
    )


def test_same_shaped_kernels_are_paired_by_order_and_laid_out_by_the_oracle():
    before = _three_w()
    after = hc.HybridCase(
        name="three-kernels-transposed",
        init=_init(("third", "first", "second"), "kernel", "nnx"),
        loss=_after_loss,
        batches=vector_batches(),
    )
    proposal = hc.propose_convert(before, after)
    assert proposal.passed, proposal.summary()
    pairs = {e.before: (e.after, e.transform, e.how) for e in proposal.mapping}
    assert pairs["['linen']['a']['w']"][0] == "['nnx']['first']['kernel']"
    assert pairs["['linen']['c']['w']"][0] == "['nnx']['third']['kernel']"
    assert {t for _, t, _ in pairs.values()} == {"transpose (1, 0)"}
    assert proposal.decided.get("oracle", 0) == 3, proposal.summary()


def test_a_model_that_computes_something_else_is_no_proposal():
    before = _three_w()
    after = hc.HybridCase(
        name="relu-instead",
        init=_init(("a", "b", "c"), "w", "linen"),
        loss=lambda p, b: _before_loss(jax.tree.map(jax.nn.relu, p), b),
        batches=vector_batches(),
    )
    proposal = hc.propose_convert(before, after, check=False)
    assert not proposal.passed
    assert "no converter tried makes the losses agree" in proposal.verdict


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"before": "x"}, "before must be a HybridCase"),
        ({"after": 3}, "after must be a HybridCase"),
        ({"before_eval": 1}, "before_eval must be a HybridCase"),
        ({"cap": 0}, "cap must be a positive int"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    m = BUILT_IN["migrate-embed"]
    args = {"before": m.before, "after": m.after, **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        hc.propose_convert(args.pop("before"), args.pop("after"), **args)


@pytest.mark.skipif(not hc.compat.HAS_BRIDGE, reason="needs Flax 0.9+")
def test_optimizer_state_and_counters_follow_the_params_between_real_models():
    import optax

    from tests.cases import test_migration_real as real

    before = hc.from_linen(
        "linen-mlp",
        module=real.LinenMLP(),
        loss_fn=real.linen_loss,
        train_step=real.linen_step,
        tx=optax.adam,
        init_args=(jnp.zeros((1, 3)),),
        batches=real.BATCHES,
    )
    after = hc.from_nnx(
        "nnx-mlp",
        model_fn=real._nnx_mlp(jax.nn.gelu),
        loss_fn=real.nnx_loss,
        train_step=real.nnx_step,
        tx=optax.adam,
        batches=real.BATCHES,
    )
    proposal = hc.propose_convert(before, after)
    assert proposal.passed, proposal.summary()
    assert proposal.decided == {"follows": 8, "name": 6}, proposal.summary()
    step = [e for e in proposal.mapping if e.before == "['opt']['step']"]
    assert step[0].after == "['opt']['step']['value']"
    assert "cast int32 -> uint32" in step[0].transform
