"""A case's fields checked at construction: one line naming the field, what it takes,
what was given and the fix.

A value of the wrong kind is refused here rather than misread later: a truthy
string as a flag (``sgd="no"``), a string where a sequence of labels is expected
(``non_trainable="linen"`` would be read letter by letter), a number given as text
(``lr="0.1"``), a bare function where a dict of them is expected. Wrong kinds raise
``TypeError``, values of the right kind out of range ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from hypothesis import strategies as st

from hybridcheck.describe.validate import MAX_SEED

__all__ = ["INVARIANT_NAMES", "Fields", "check_hybrid_case", "check_migration_case"]
__all__ += ["given"]

INVARIANT_NAMES: set[str] = set()
"""The registry's invariant names (``invariants.registry.register`` adds each): an
``extra_checks`` entry may not take one, or it would replace that invariant."""


def given(value: Any, limit: int = 60) -> str:
    """``value`` as an error message shows it: its type, then its repr, cut short."""
    text = repr(value)
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(value).__name__} {text}"


class Fields:
    """Checks of one owner's fields (``HybridCase('mine')``), each raising one line."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def error(
        self,
        field: str,
        expected: str,
        value: Any,
        fix: str = "",
        *,
        kind: type = TypeError,
    ) -> Exception:
        """The error for ``field``: what it must be, what it got, and the fix."""
        tail = f"; {fix}" if fix else ""
        return kind(
            f"{self.owner}.{field} must be {expected}, got {given(value)}{tail}"
        )

    def function(
        self, field: str, value: Any, signature: str, *, optional: bool, fix: str = ""
    ) -> None:
        """``value`` is callable (or None where ``optional``)."""
        if callable(value) or (optional and value is None):
            return
        expected = f"a function {signature}" + (", or None" if optional else "")
        if isinstance(value, str) and not fix:
            fix = "pass the function itself, not its name"
        raise self.error(field, expected, value, fix)

    def flag(self, field: str, value: Any, fix: str) -> bool | None:
        """``value`` is True, False or None (a truthy string or an int is refused)."""
        if value is None or isinstance(value, bool | np.bool_):
            return None if value is None else bool(value)
        raise self.error(field, "True, False or None", value, fix)

    def text(self, field: str, value: Any) -> None:
        if not isinstance(value, str):
            raise self.error(field, "a str", value, f"write {field}='...'")

    def labels(
        self, field: str, value: Any, *, optional: bool = False
    ) -> tuple[str, ...] | None:
        """A tuple of distinct non-empty half labels (a list is accepted)."""
        if optional and value is None:
            return None
        expected = "a tuple of half labels" + (" or None" if optional else "")
        if isinstance(value, str):
            fix = f"a str is read letter by letter: write {field}=({value!r},)"
            raise self.error(field, expected, value, fix)
        if not isinstance(value, tuple | list):
            raise self.error(field, expected, value, f"write {field}=('nnx', 'linen')")
        bad = [v for v in value if not isinstance(v, str) or not v]
        if bad:
            fix = f"{given(bad[0])} is not a label (a non-empty str)"
            raise self.error(field, expected, value, fix)
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise self.error(
                field,
                f"{expected}, each once",
                value,
                f"{repeated} repeat: give each half its own label",
                kind=ValueError,
            )
        return tuple(value)

    def count(self, field: str, value: Any, *, low: int, high: int, fix: str) -> int:
        """An int (not a bool, not a float) in ``[low, high]``."""
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, numbers.Integral
        ):
            raise self.error(field, f"an int >= {low}", value, fix)
        if not low <= int(value) <= high:
            raise self.error(
                field, f"an int in [{low}, {high}]", value, fix, kind=ValueError
            )
        return int(value)

    def rate(self, field: str, value: Any, fix: str) -> None:
        """A learning rate: a finite number > 0 (a 0-d array counts)."""
        number = value
        if isinstance(value, np.ndarray | jax.Array) and np.ndim(value) == 0:
            number = np.asarray(value).item()
        if isinstance(number, bool | np.bool_) or not isinstance(number, numbers.Real):
            raise self.error(field, "a number > 0 or a Hypothesis strategy", value, fix)
        if not (math.isfinite(float(number)) and float(number) > 0):
            raise self.error(field, "a finite number > 0", value, fix, kind=ValueError)

    def checks(self, field: str, value: Any, signature: str) -> None:
        """A mapping ``{name: check}`` whose names are not the registry's."""
        example = f"write {field}={{'my_check': fn}}"
        if callable(value):
            example = f"write {field}={{'{getattr(value, '__name__', 'name')}': fn}}"
        elif isinstance(value, list | tuple) and all(callable(v) for v in value):
            example = f"write {field}={{fn.__name__: fn for fn in checks}}"
        expected = f"a dict {{name: {signature}}}"
        if not isinstance(value, Mapping):
            raise self.error(field, expected, value, example)
        for name, check in value.items():
            if not isinstance(name, str) or not name:
                raise self.error(
                    field, f"{expected} with str names", value, f"name {given(name)}"
                )
            if not callable(check):
                raise self.error(f"{field}[{name!r}]", f"a function {signature}", check)
        shadowing = sorted(set(value) & INVARIANT_NAMES)
        if shadowing:
            raise self.error(
                field,
                "named unlike the built-in invariants",
                value,
                f"{shadowing} would replace the built-in check: rename yours",
                kind=ValueError,
            )


def check_hybrid_case(case: Any) -> dict[str, Any]:
    """Checks every field of a ``HybridCase``; returns the normalised values.

    Raises:
      TypeError: a field of the wrong kind.
      ValueError: a field of the right kind with a value that cannot work.
    """
    if not isinstance(case.name, str) or not case.name:
        raise TypeError(
            "HybridCase.name must be a non-empty str (shown in reports), got "
            f"{given(case.name)}; write name='my-model'"
        )
    f = Fields(f"HybridCase({case.name!r})")
    f.function("init", case.init, "init(key) -> params", optional=False)
    f.function("loss", case.loss, "loss(params, batch) -> scalar", optional=False)
    if not (isinstance(case.batches, st.SearchStrategy) or callable(case.batches)):
        raise f.error(
            "batches",
            "a Hypothesis strategy of batches or a function key -> batch",
            case.batches,
            "wrap fixed data in st.just(batch) or st.sampled_from([batch, ...])",
        )
    step_sig = "step(params, batch, lr) -> new params"
    f.function("step", case.step, step_sig, optional=True)
    out: dict[str, Any] = {
        "halves": f.labels("halves", case.halves, optional=True),
        "non_trainable": f.labels("non_trainable", case.non_trainable),
        "rng_halves": f.labels("rng_halves", case.rng_halves),
    }
    if case.lr is not None and not isinstance(case.lr, st.SearchStrategy):
        f.rate("lr", case.lr, "write lr=0.1, or lr=st.sampled_from([0.01, 0.1])")
    out["sgd"] = f.flag(
        "sgd", case.sgd, "write sgd=True for a plain SGD step, sgd=False for another"
    )
    f.function(
        "frozen",
        case.frozen,
        "frozen(half, path) -> bool",
        optional=True,
        fix="to freeze a whole half write frozen=lambda half, path: half == 'nnx'",
    )
    f.checks("extra_checks", case.extra_checks, "check(params, batch, lr)")
    out["param_seeds"] = f.count(
        "param_seeds",
        case.param_seeds,
        low=1,
        high=MAX_SEED + 1,
        fix="write param_seeds=8 (how many init keys examples draw from)",
    )
    f.text("description", case.description)
    f.function(
        "state_fn",
        case.state_fn,
        "state_fn(params, batch) -> {half: tree}",
        optional=True,
    )
    reseed_sig = "reseed(params, batch, key) -> (params, batch)"
    f.function("reseed", case.reseed, reseed_sig, optional=True)
    check_tx(f, case.tx)
    f.function(
        "partition_specs",
        case.partition_specs,
        "partition_specs(params) -> specs",
        optional=True,
        fix="for a fixed pytree write partition_specs=lambda params: specs",
    )
    terms, set_by = case.model_terms, "None (from_linen/from_nnx set it)"
    if terms is not None and not callable(getattr(terms, "converter_to", None)):
        raise f.error("model_terms", set_by, terms, "leave it out")
    if out["non_trainable"] and case.step is None:
        raise ValueError(
            f"HybridCase({case.name!r}).non_trainable {out['non_trainable']} needs "
            "a step: the library cannot know how your state is updated; pass "
            "step=your_train_step"
        )
    return out


def check_tx(f: Fields, tx: Any) -> None:
    """``tx`` is a function of the learning rate (or None), not an optimizer."""
    if tx is None or callable(tx):
        return
    fix = ""
    if callable(getattr(tx, "update", None)):
        fix = "pass optax.sgd, not optax.sgd(0.1): hybridcheck draws the lr"
    raise f.error("tx", "a function tx(lr) -> optax optimizer, or None", tx, fix)


def check_migration_case(case: Any, side_type: type) -> None:
    """Checks every field of a ``MigrationCase`` (``side_type``: ``HybridCase``).

    Raises:
      TypeError: a field of the wrong kind.
      ValueError: a field of the right kind with a value that cannot work.
    """
    if not isinstance(case.name, str) or not case.name:
        raise TypeError(
            "MigrationCase.name must be a non-empty str (shown in reports), got "
            f"{given(case.name)}; write name='my-block: linen -> nnx'"
        )
    f = Fields(f"MigrationCase({case.name!r})")
    sides = "a HybridCase (hc.HybridCase, hc.from_linen or hc.from_nnx)"
    for side in ("before", "after"):
        value = getattr(case, side)
        if not isinstance(value, side_type):
            raise f.error(side, sides, value, f"describe the {side} model as a case")
    for side in ("before_eval", "after_eval"):
        value = getattr(case, side)
        if value is not None and not isinstance(value, side_type):
            raise f.error(side, f"{sides} or None", value)
    if (case.before_eval is None) != (case.after_eval is None):
        raise ValueError(
            f"MigrationCase({case.name!r}): set both before_eval and after_eval "
            "(the two models with stochastic layers off) or neither"
        )
    convert_sig = "convert(before_params) -> after_params"
    f.function("convert", case.convert, convert_sig, optional=False)
    invert_sig = "invert(after_params) -> before_params"
    f.function("invert", case.invert, invert_sig, optional=True)
    f.count("steps", case.steps, low=1, high=10**6, fix="write steps=3")
    f.text("description", case.description)
    f.checks("extra_checks", case.extra_checks, "check(params, batch, lr)")
    _check_axis_rules(f, case.axis_rules)


def _check_axis_rules(f: Fields, rules: Any) -> None:
    expected = "a sequence of (logical name, mesh axis or None) pairs, or None"
    fix = "write axis_rules=(('embed', 'model'), ('batch', None))"
    if rules is None:
        return
    if isinstance(rules, str | Mapping) or not isinstance(rules, tuple | list):
        raise f.error("axis_rules", expected, rules, fix)
    for rule in rules:
        if not (
            isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)
        ):
            raise f.error("axis_rules", expected, rules, f"{given(rule)} is not one")
