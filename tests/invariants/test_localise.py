"""Localisation of a failed migration: each built-in semantic bug is placed in the
module it changes, on both sides; exact migrations place nothing; a backward-only
bug is placed by the gradients; a failure of the comparisons carries the lines,
a passing run never localises, and a localisation that breaks is only a line."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

import hybridcheck as hc
from hybridcheck import compat
from hybridcheck.cases import migrations
from hybridcheck.cases.migrations._shared import D, mse, vector_batches
from hybridcheck.invariants.migration import Deviation, equivalence
from hybridcheck.invariants.migration import localisation as loc
from hybridcheck.report.results import FAILED, HELD

MUTANTS = {m.name: m for m in migrations.mutants()}
BLOCK = next(c for c in migrations.cases() if c.name == "migrate-block")

# mutant -> (before module, after module, the last module that agrees when the
# input of the one placed already differs, else None)
PLACED = {
    "layernorm-eps": ("norm", "norm", None),  # epsilon inside LayerNorm
    "transposed-kernel": ("mix", "mix", None),  # mix's kernel, by the converter
    "heads-order": ("heads", "heads", None),  # heads' kernel flattened (K, H)
    "exact-gelu": ("mix", "mix", "heads"),  # the GELU between heads and mix
    "attention-heads-swapped": ("attn/query", "attn/query", None),
    "dropout-in-eval": ("Dropout_0", "drop", None),  # NNX still drops in eval
    # the encoder (Linen nn.scan over layers -> an NNX list): run 1 of the scan
    "encoder-layernorm-eps": ("layers/norm1", "layers/0/norm1", None),
    "encoder-exact-gelu": ("layers/mlp_out", "layers/0/mlp_out", "layers/mlp_in"),
    "encoder-out-heads-reversed": ("layers/attn/out", "layers/0/attn/out", None),
    # layer 0 gets layer 1's params: its first module with random params differs
    "encoder-layers-reversed": ("layers/attn/query", "layers/0/attn/query", None),
}
# mutants whose change is outside every module: after the last one, in the loss
PAST_THE_MODULES = ["residual-dropped", "sum-for-mean"]
# mutants whose deterministic loss is the original's: caught by the step, the
# converter, the distribution over keys or the partitioning, not the forward pass
SAME_FORWARD = [
    "bias-dropped",  # the mixing bias is zero at init: dropping it changes nothing
    "bn-momentum",
    "bn-not-threaded",
    "dropout-rate",
    "dropout-moved",
    "dropout-dropped",
    "partitioning-dropped",
    "partitioning-transposed",
]


def _path(row_call: Any) -> str:
    return "/".join(row_call.path)


def test_the_tables_cover_every_built_in_mutant():
    listed = {*PLACED, *PAST_THE_MODULES, *SAME_FORWARD}
    missing = set(MUTANTS) - listed
    assert not missing, f"say where these mutants are localised: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(n for n in PLACED if n in MUTANTS))
def test_a_semantic_bug_is_placed_in_the_module_it_changes(name):
    before, after, agreeing = PLACED[name]
    found = hc.localise(MUTANTS[name].make())
    row = found.forward
    assert row is not None, str(found)
    assert (_path(row.before), _path(row.after)) == (before, after), str(found)
    assert row.output is not None
    assert row.output.units > 16
    assert (row.input is not None and row.input.units > 1) == bool(agreeing)
    line = found.lines()[0]
    assert f"before '{before}'" in line
    assert f"after '{after}'" in line
    if agreeing:
        assert "its input already deviates" in line
        assert f"(the last that agrees: before '{agreeing}'" in line
    else:
        assert "the module itself differs" in line


@pytest.mark.parametrize("name", PAST_THE_MODULES)
def test_a_change_outside_the_modules_is_placed_past_the_last_of_them(name):
    found = hc.localise(MUTANTS[name].make())
    assert found.forward is None, str(found)
    assert found.loss.units > 16
    line = found.lines()[0]
    assert "past the 3 modules both sides have (the last: before 'mix'" in line
    assert "without a counterpart: before '(top)' (LinenBlock)" in line


@pytest.mark.parametrize("name", SAME_FORWARD)
def test_a_bug_outside_the_forward_pass_is_not_placed_in_it(name):
    found = hc.localise(MUTANTS[name].make())
    assert found.forward is None, str(found)
    assert found.gradient is None, str(found)
    assert "not in the forward pass" in found.lines()[0]


@pytest.mark.parametrize(
    "case", migrations.cases() + migrations.reorderings(), ids=lambda c: c.name
)
def test_an_exact_migration_is_placed_nowhere(case):
    found = hc.localise(case)
    assert found.pairs, str(found)  # modules were seen and paired
    assert found.forward is None, str(found)
    assert found.gradient is None, str(found)
    assert found.loss.units <= 1, str(found)


# A backward-only bug: the same forward, another gradient (a custom VJP that
# scales the cotangent), between modules or inside one.


@jax.custom_vjp
def _wrong_grad(x: Any) -> Any:
    return x


_wrong_grad.defvjp(lambda x: (x, None), lambda _, ct: (3.0 * ct,))


class _Tanh(compat.nnx.Module):
    def __call__(self, x: Any) -> Any:
        return jax.nn.tanh(x)


@jax.custom_vjp
def _tanh_by_module(x: Any) -> Any:  # an NNX module called inside a custom VJP
    return _Tanh()(x)


_tanh_by_module.defvjp(
    lambda x: (_Tanh()(x), x), lambda x, ct: (ct * (1 - jax.nn.tanh(x) ** 2),)
)


class _LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x: Any) -> Any:
        return nn.Dense(D, name="out")(jax.nn.tanh(nn.Dense(8, name="hidden")(x)))


def _mlp_migration(where: str) -> hc.MigrationCase:
    nnx = compat.nnx

    class Out(nnx.Linear):
        def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            x = _wrong_grad(inputs) if where == "inside" else inputs
            return super().__call__(x, *args, **kwargs)

    class NnxMLP(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.hidden = nnx.Linear(D, 8, rngs=rngs)
            self.out = Out(8, D, rngs=rngs)

        def __call__(self, x: Any) -> Any:
            tanh = _tanh_by_module if where == "custom_vjp" else jax.nn.tanh
            h = tanh(self.hidden(x))
            return self.out(_wrong_grad(h) if where == "between" else h)

    template, linen = NnxMLP(nnx.Rngs(0)), _LinenMLP()
    before = hc.HybridCase(
        name="linen-mlp",
        init=lambda key: {"linen": linen.init(key, jnp.zeros((1, D)))},
        loss=lambda p, b: mse(linen.apply(p["linen"], b[0]), b[1]),
        batches=vector_batches(),
    )
    after = hc.HybridCase(
        name="nnx-mlp",
        init=lambda key: {"nnx": compat.params_as_dict(NnxMLP(nnx.Rngs(key)))},
        loss=lambda p, b: mse(
            compat.module_with_params(template, p["nnx"])(b[0]), b[1]
        ),
        batches=vector_batches(),
    )
    return hc.MigrationCase(
        f"mlp: gradient scaled {where}",
        before,
        after,
        lambda p: {"nnx": {k: dict(v) for k, v in p["linen"]["params"].items()}},
    )


@pytest.mark.parametrize(
    ("where", "module", "says"),
    [
        ("inside", "out", "its backward pass differs (a custom VJP"),
        (
            "between",
            "hidden",
            "the backward pass differs in code after it, outside the modules both "
            "sides have (the next that agrees: before 'out' (Dense) vs after 'out'",
        ),
    ],
)
def test_a_backward_only_bug_is_placed_by_the_cotangents(where, module, says):
    found = hc.localise(_mlp_migration(where))
    assert found.forward is None, str(found)  # the same forward pass
    g = found.gradient
    assert g is not None, str(found)
    assert (_path(g.before), _path(g.after)) == (module, module), str(found)
    if where == "inside":  # its output's cotangent agrees, its input's does not
        assert g.output_grad is not None
        assert g.output_grad.units <= 1
        assert g.input_grad is not None
        assert g.input_grad.units > 16
    assert says in found.lines()[1]


def test_modules_inside_a_custom_vjp_leave_the_forward_comparison_standing():
    found = hc.localise(_mlp_migration("custom_vjp"))  # the exact migration
    assert found.forward is None, str(found)
    assert found.loss.units <= 1, str(found)
    assert len(found.pairs) == 3, str(found)  # hidden, out, the top
    assert found.lines()[1].startswith(
        "first gradient to differ, backward from the loss: not observed (the "
        "gradient pass raised"
    ), str(found)


def _loss_failure(case: hc.MigrationCase) -> str:
    """``loss_matches_before``'s failure message on ``case``."""
    report = hc.verify(
        case, profile="dev", invariants=["loss_matches_before"], shrink_seconds=0
    )
    (result,) = report.cases[0].results
    assert result.status == FAILED, report.table()
    return result.message


def test_the_failure_message_says_where_the_models_part():
    message = _loss_failure(MUTANTS["layernorm-eps"].make())
    lines = message.splitlines()
    assert lines[-2].startswith(
        "  where they part (on this example): before 'norm' (LayerNorm) vs after "
        "'norm' (LayerNorm): the same input, its output deviates"
    ), message
    assert lines[-1].startswith("  first gradient to differ, backward from the loss:")


def _subject_and_example(case: hc.MigrationCase) -> tuple[Any, Any]:
    e = loc._worst_example(case)[1]
    return case.subject(e.params), e


def test_a_verdict_across_examples_is_localised_on_the_worst_example():
    ms, e = _subject_and_example(MUTANTS["exact-gelu"].make())
    name = "loss_matches_before"
    ms.evidence[name] = [[Deviation("loss", 1e-6, 3.0, 1)]] * 8
    ms.memo[f"worst:{name}"] = (3.0, e)
    with pytest.raises(AssertionError, match="a systematic deviation") as caught:
        equivalence.conclude(name)(ms)
    assert (
        "where they part (on the example that deviates most): before 'mix' (Dense)"
        in str(caught.value)
    )


def test_a_localisation_that_raises_is_one_line_and_the_verdict_stands(monkeypatch):
    def broken(ms: Any, e: Any) -> Any:
        raise RuntimeError("no modules here\nsecond line")

    monkeypatch.setattr(loc, "localise_subject", broken)
    message = _loss_failure(MUTANTS["layernorm-eps"].make())
    assert message.endswith(
        "\n  where they part: not localised (on this example): the localisation "
        "raised RuntimeError: no modules here"
    ), message


def test_a_passing_run_never_localises(monkeypatch):
    def counted(ms: Any, e: Any) -> Any:
        raise AssertionError("localised a passing run")

    monkeypatch.setattr(loc, "localise_subject", counted)
    case = dataclasses.replace(BLOCK, name="block, no localisation")
    report = hc.verify(
        case,
        profile="dev",
        invariants=["loss_matches_before", "grads_match_before", "step_matches_before"],
        shrink_seconds=0,
    )
    assert all(r.status == HELD for r in report.cases[0].results), report.table()


def test_localise_takes_a_migration_case_only():
    with pytest.raises(TypeError, match="takes a hc.MigrationCase"):
        hc.localise(BLOCK.before)  # type: ignore[arg-type]


@pytest.mark.skipif(not compat.HAS_BRIDGE, reason="from_linen/from_nnx need Flax 0.9+")
def test_real_models_are_localised_through_their_own_losses():
    from tests.cases.test_migration_real import migration

    found = hc.localise(migration(activation=jax.nn.relu))  # GELU became ReLU
    row = found.forward
    assert row is not None, str(found)
    assert (_path(row.before), _path(row.after)) == ("out", "out"), str(found)
    assert "its input already deviates" in found.lines()[0]
    assert "(the last that agrees: before 'hidden' (Dense)" in found.lines()[0]
