"""Every field of HybridCase and MigrationCase, type-checked at construction.

One row per bad value: the exception, a regex on the field it names and one on the
fix it gives; every message is one line. Then rows of valid values of each field,
which must still construct (sequences normalised to tuples).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import strategies as st

import hybridcheck as hc
from hybridcheck.describe import fields
from hybridcheck.invariants import registry


def _init(key: Any) -> Any:
    return {"nnx": jnp.ones(2), "linen": jnp.ones(2)}


def _loss(params: Any, batch: Any) -> Any:
    return jnp.sum(params["nnx"] * params["linen"] * batch)


def _step(params: Any, batch: Any, lr: Any) -> Any:
    return params


def _check(params: Any, batch: Any, lr: Any) -> None:
    """A user's extra check (never fails)."""


BASE: dict[str, Any] = {
    "name": "mine",
    "init": _init,
    "loss": _loss,
    "batches": lambda key: jax.random.uniform(key),
}


def _case(**changes: Any) -> hc.HybridCase:
    return hc.HybridCase(**{**BASE, **changes})


def _migration(**changes: Any) -> hc.MigrationCase:
    case = _case()
    return hc.MigrationCase(
        **{"name": "mig", "before": case, "after": case, "convert": _step, **changes}
    )


@dataclasses.dataclass(frozen=True)
class Bad:
    field: str  # the regex on the field named
    value: Any
    error: type
    fix: str  # a regex on what the message says to do (or what is wrong)
    owner: str = "case"  # "case" (HybridCase) or "migration" (MigrationCase)
    also: tuple[tuple[str, Any], ...] = ()  # other fields the row sets


def _row(
    field: str, value: Any, error: type, fix: str, *, id: str, **kwargs: Any
) -> Any:
    return pytest.param(Bad(field, value, error, fix, **kwargs), id=id)


T, V = TypeError, ValueError
FN_NOT_NAME = "pass the function itself, not its name"
LETTERS = r"read letter by letter: write {}=\('{}',\)"

CASE_ROWS = [
    _row("name", 3, T, "name='my-model'", id="name-int"),
    _row("name", "", T, "name='my-model'", id="name-empty"),
    _row("name", None, T, "name='my-model'", id="name-none"),
    _row("init", None, T, r"init\(key\) -> params", id="init-none"),
    _row("init", 3, T, r"init\(key\)", id="init-int"),
    _row("init", "my_init", T, FN_NOT_NAME, id="init-name"),
    _row("loss", None, T, r"loss\(params, batch\)", id="loss-none"),
    _row("loss", "my_loss", T, FN_NOT_NAME, id="loss-name"),
    _row("batches", None, T, r"st\.just\(batch\)", id="batches-none"),
    _row("batches", [1, 2], T, r"st\.sampled_from", id="batches-list"),
    _row("batches", ((1.0,), (2.0,)), T, r"st\.just", id="batches-tuple-of-data"),
    _row("step", 3, T, r"step\(params, batch, lr\)", id="step-int"),
    _row("step", "sgd", T, FN_NOT_NAME, id="step-name"),
    _row("halves", "nnx", T, LETTERS.format("halves", "nnx"), id="halves-str"),
    _row("halves", 3, T, r"halves=\('nnx', 'linen'\)", id="halves-int"),
    _row("halves", ("nnx", "nnx"), V, r"\['nnx'\] repeat", id="halves-repeat"),
    _row("halves", ("nnx", 3), T, "int 3 is not a label", id="halves-int-label"),
    _row("halves", ("nnx", ""), T, "is not a label", id="halves-empty-label"),
    _row(
        "non_trainable",
        "linen",
        T,
        LETTERS.format("non_trainable", "linen"),
        id="non_trainable-str",
        also=(("step", _step),),
    ),
    _row("non_trainable", 3, T, "non_trainable=", id="non_trainable-int"),
    _row("non_trainable", (3,), T, "not a label", id="non_trainable-int-label"),
    _row("rng_halves", "rng", T, LETTERS.format("rng_halves", "rng"), id="rng-str"),
    _row("rng_halves", 3, T, "rng_halves=", id="rng_halves-int"),
    _row("lr", "0.1", T, r"lr=0\.1", id="lr-str"),
    _row("lr", [0.1], T, r"st\.sampled_from", id="lr-list"),
    _row("lr", True, T, r"lr=0\.1", id="lr-bool"),
    _row("lr", -0.1, V, "finite number > 0", id="lr-negative"),
    _row("lr", 0.0, V, "finite number > 0", id="lr-zero"),
    _row("lr", math.nan, V, "finite number > 0", id="lr-nan"),
    _row("lr", math.inf, V, "finite number > 0", id="lr-inf"),
    _row("lr", np.float32("nan"), V, "finite number > 0", id="lr-numpy-nan"),
    _row("sgd", "no", T, "sgd=False", id="sgd-truthy-str"),
    _row("sgd", 1, T, "sgd=True", id="sgd-int"),
    _row("sgd", 0, T, "sgd=False", id="sgd-zero"),
    _row("frozen", True, T, "frozen=lambda half, path", id="frozen-bool"),
    _row("frozen", "nnx/*", T, "frozen=lambda half, path", id="frozen-pattern"),
    _row("extra_checks", [_check], T, r"\{fn.__name__: fn", id="extra-list"),
    _row("extra_checks", _check, T, r"extra_checks=\{'_check': fn\}", id="extra-fn"),
    _row(r"extra_checks\['mine'\]", {"mine": 3}, T, "a function", id="extra-int"),
    _row("extra_checks", {3: _check}, T, "name int 3", id="extra-key-int"),
    _row("extra_checks", {"": _check}, T, "name str ''", id="extra-key-empty"),
    _row(
        "extra_checks",
        {"all_finite": _check},
        V,
        r"\['all_finite'\] would replace the built-in check: rename",
        id="extra-shadows-invariant",
    ),
    _row("param_seeds", "8", T, "param_seeds=8", id="param_seeds-str"),
    _row("param_seeds", 2.5, T, "param_seeds=8", id="param_seeds-float"),
    _row("param_seeds", True, T, "param_seeds=8", id="param_seeds-bool"),
    _row("param_seeds", 0, V, "param_seeds=8", id="param_seeds-zero"),
    _row("param_seeds", -1, V, "param_seeds=8", id="param_seeds-negative"),
    _row("param_seeds", 2**31, V, r"\[1, 2147483647\]", id="param_seeds-huge"),
    _row("description", 3, T, "description='...'", id="description-int"),
    _row("description", None, T, "description='...'", id="description-none"),
    _row("state_fn", 3, T, r"state_fn\(params, batch\)", id="state_fn-int"),
    _row("reseed", "x", T, FN_NOT_NAME, id="reseed-str"),
    _row("tx", 3, T, r"tx\(lr\)", id="tx-int"),
    _row("tx", optax.sgd(0.1), T, r"optax\.sgd, not optax\.sgd\(0\.1\)", id="tx-made"),
    _row("partition_specs", 3, T, "lambda params: specs", id="partition_specs-int"),
    _row("partition_specs", {}, T, "lambda params: specs", id="partition_specs-tree"),
    _row("model_terms", {}, T, "leave it out", id="model_terms-dict"),
    _row("non_trainable", ("linen",), V, "pass step=", id="non_trainable-no-step"),
]

MIGRATION_ROWS = [
    _row("name", 3, T, "name='my-block", id="m-name-int", owner="migration"),
    _row("before", None, T, "hc.from_linen", id="m-before-none", owner="migration"),
    _row("after", 3, T, "as a case", id="m-after-int", owner="migration"),
    _row("before", _migration(), T, "HybridCase", id="m-nested", owner="migration"),
    _row("convert", "x", T, FN_NOT_NAME, id="m-convert-str", owner="migration"),
    _row("convert", None, T, "convert", id="m-convert-none", owner="migration"),
    _row("invert", 3, T, r"invert\(after", id="m-invert-int", owner="migration"),
    _row("steps", 0, V, "steps=3", id="m-steps-zero", owner="migration"),
    _row("steps", "3", T, "steps=3", id="m-steps-str", owner="migration"),
    _row("steps", 2.5, T, "steps=3", id="m-steps-float", owner="migration"),
    _row("steps", True, T, "steps=3", id="m-steps-bool", owner="migration"),
    _row("description", 3, T, "description=", id="m-description", owner="migration"),
    _row("extra_checks", [_check], T, "fn.__name__", id="m-extra", owner="migration"),
    _row("axis_rules", "embed", T, "axis_rules=", id="m-rules-str", owner="migration"),
    _row(
        "axis_rules",
        {"embed": "model"},
        T,
        "axis_rules=",
        id="m-rules-dict",
        owner="migration",
    ),
    _row(
        "axis_rules",
        [("a", "b", "c")],
        T,
        "is not one",
        id="m-rules-triple",
        owner="migration",
    ),
    _row("before_eval", 3, T, "HybridCase", id="m-before_eval", owner="migration"),
    _row(
        "before_eval and after_eval",
        _case(),
        V,
        "or neither",
        id="m-eval-alone",
        owner="migration",
    ),
]


def _field_in(row: Bad) -> str:
    return row.field.split(" ")[0].split("[")[0].split("\\")[0]


@pytest.mark.parametrize("row", CASE_ROWS + MIGRATION_ROWS)
def test_a_bad_field_is_refused_at_construction(row: Bad) -> None:
    changes = {_field_in(row): row.value, **dict(row.also)}
    make = _case if row.owner == "case" else _migration
    with pytest.raises(row.error) as caught:
        make(**changes)
    message = str(caught.value)
    assert "\n" not in message, message
    assert re.search(rf"(?<!\w){row.field}(?!\w)", message), message
    assert re.search(row.fix, message), message
    owner = "HybridCase" if row.owner == "case" else "MigrationCase"
    assert message.startswith(owner), message  # names the owner and the case


def test_every_case_field_has_a_bad_row() -> None:
    """The table covers each field by its documented type, not by examples seen."""
    covered = {_field_in(p.values[0]) for p in CASE_ROWS}
    assert covered == {f.name for f in dataclasses.fields(hc.HybridCase)}
    covered = {_field_in(p.values[0]) for p in MIGRATION_ROWS}
    untyped = {"before_specs", "after_specs"}  # any pytree, or a function of params
    every = {f.name for f in dataclasses.fields(hc.MigrationCase)}
    assert covered | untyped | {"after_eval"} == every


def test_a_misspelt_field_is_named() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'sdg'"):
        _case(sdg=True)


GOOD_CASE = [
    ({"step": _step}, {}),
    ({"halves": ["nnx", "linen"]}, {"halves": ("nnx", "linen")}),
    ({"halves": None}, {"halves": None}),
    (
        {"non_trainable": ["linen"], "step": _step},
        {"non_trainable": ("linen",)},
    ),
    ({"rng_halves": ["rng"]}, {"rng_halves": ("rng",)}),
    ({"lr": 0.1}, {}),
    ({"lr": 1}, {}),
    ({"lr": np.float32(0.05)}, {}),
    ({"lr": jnp.asarray(0.05)}, {}),
    ({"lr": st.floats(0.01, 0.1)}, {}),
    ({"sgd": True}, {"sgd": True}),
    ({"sgd": False}, {"sgd": False}),
    ({"sgd": np.bool_(True)}, {"sgd": True}),
    ({"frozen": lambda half, path: half == "nnx"}, {}),
    ({"extra_checks": {"mine": _check}}, {}),
    ({"extra_checks": types.MappingProxyType({"mine": _check})}, {}),
    ({"param_seeds": 1}, {"param_seeds": 1}),
    ({"param_seeds": np.int64(3)}, {"param_seeds": 3}),
    ({"description": ""}, {}),
    ({"state_fn": lambda p, b: {}, "reseed": lambda p, b, k: (p, b)}, {}),
    ({"tx": optax.sgd}, {}),
    ({"partition_specs": lambda params: None}, {}),
    ({"batches": st.just(1.0)}, {}),
]


@pytest.mark.parametrize(
    ("changes", "normalised"), GOOD_CASE, ids=[str(i) for i in range(len(GOOD_CASE))]
)
def test_valid_case_fields_still_construct(
    changes: dict[str, Any], normalised: dict[str, Any]
) -> None:
    case = _case(**changes)
    for field, value in normalised.items():
        assert getattr(case, field) == value
        assert type(getattr(case, field)) is type(value)
    assert dataclasses.replace(case, name="again").name == "again"


GOOD_MIGRATION = [
    {"steps": 1},
    {"steps": np.int64(2)},
    {"invert": _step},
    {"axis_rules": (("embed", "model"), ("batch", None))},
    {"axis_rules": [("embed", ("data", "model"))]},
    {"before_eval": _case(), "after_eval": _case()},
    {"before_specs": {"nnx": None, "linen": None}, "after_specs": lambda p: None},
    {"extra_checks": {"mine": _check}, "description": "a migration"},
]


@pytest.mark.parametrize("changes", GOOD_MIGRATION)
def test_valid_migration_fields_still_construct(changes: dict[str, Any]) -> None:
    assert _migration(**changes).name == "mig"


def test_every_registered_invariant_name_is_reserved() -> None:
    assert set(registry.REGISTRY) <= fields.INVARIANT_NAMES
    toy = registry.Invariant("toy_reserved", "toy", check=lambda s, e: None)
    registry.register(toy)
    try:
        with pytest.raises(ValueError, match="toy_reserved"):
            _case(extra_checks={"toy_reserved": _check})
    finally:
        registry.unregister("toy_reserved")
    assert _case(extra_checks={"toy_reserved": _check}).extra_checks


def test_the_builtin_cases_construct_again() -> None:
    """Every built-in case passes its own field checks (rebuilt field by field)."""
    from hybridcheck.cases import builtin_cases, mutant_cases

    for case in builtin_cases() + mutant_cases():
        assert dataclasses.replace(case).name == case.name
