"""The optimizer's state as the ``opt`` half: plain arrays threaded from step to step.

``from_nnx``/``from_linen`` read the optimizer's state (``nnx.Optimizer``'s step and
optax state, or a ``TrainState``'s ``step`` and ``opt_state``) into a nested
``dict`` of plain arrays with a :class:`PlainTree`, and install it into the
optimizer each step builds afresh (from ``tx(lr)`` or the user's factory). A
``TrainState``'s fields are read and replaced here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from hybridcheck.flaxmodels.halves import OPT, path_entry

LR0, LR1 = 0.1, 0.01
"""The learning rate ``init`` builds the optimizer with, and a second one: optimizer
state leaves that differ between the two (``optax.inject_hyperparams``) are taken
from each step's own ``tx(lr)`` instead of being carried over."""


@dataclasses.dataclass(frozen=True)
class PlainTree:
    """Any pytree (an optimizer's state) as a nested ``dict`` of plain arrays, and
    back into a new tree of the template's structure.

    ``keep`` marks leaves taken from the tree given to :meth:`rebuild` instead of
    from the plain dict (an optimizer state's hyperparameters that depend on the
    learning rate, e.g. ``optax.inject_hyperparams``: they come from this step's
    ``tx(lr)``, not from the state carried over).
    """

    treedef: Any
    keys: tuple[tuple[str, ...], ...]
    keep: tuple[bool, ...]

    @classmethod
    def of(cls, tree: Any, other: Any = None) -> PlainTree:
        """The layout of ``tree``; leaves that differ in ``other`` (the same state
        built with another learning rate) are marked ``keep``."""
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        keys = tuple(
            tuple(str(path_entry(k)) for k in keypath) or ("value",)
            for keypath, _ in flat
        )
        if other is None:
            keep = (False,) * len(flat)
        else:
            pairs = zip(jax.tree.leaves(tree), jax.tree.leaves(other), strict=True)
            keep = tuple(
                np.shape(a) != np.shape(b) or not np.array_equal(a, b) for a, b in pairs
            )
        return cls(treedef, keys, keep)

    def plain(self, tree: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in zip(self.keys, jax.tree.leaves(tree), strict=True):
            node = out
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = jax.numpy.asarray(value)
        return out

    def rebuild(self, plain: Mapping[str, Any], fresh: Any) -> Any:
        """A new tree from ``plain``, ``keep`` leaves from ``fresh``."""
        leaves = []
        for key, keep, new in zip(
            self.keys, self.keep, jax.tree.leaves(fresh), strict=True
        ):
            if keep:
                leaves.append(new)
                continue
            value: Any = plain
            for part in key:
                value = value[part]
            leaves.append(jax.numpy.asarray(value))
        return jax.tree.unflatten(self.treedef, leaves)


def plain_opt_state(
    name: str, tree: PlainTree, state: Any, after: str
) -> dict[str, Any]:
    """The optimizer state ``state`` as plain arrays, its structure checked."""
    treedef = jax.tree.structure(state)
    if treedef != tree.treedef:
        raise ValueError(
            f"[{name}] after {after} the optimizer's state has another structure "
            f"than the one tx(lr).init gives ({treedef} vs {tree.treedef}); "
            "hybridcheck threads the optimizer state from step to step and needs it "
            "to keep its structure"
        )
    return tree.plain(state)


def model_part(params: Any) -> Any:
    """``params`` without the optimizer half (what the model's layout rebuilds)."""
    if isinstance(params, Mapping) and OPT in params:
        return {k: v for k, v in params.items() if k != OPT}
    return params


def read_train_state(name: str, state: Any, variables: Mapping[str, Any]) -> Any:
    """The collections of ``variables`` that the train state ``state`` has a field
    of the same name for (``params``, ``batch_stats``, ...)."""
    if not dataclasses.is_dataclass(state):
        raise TypeError(
            f"[{name}] the user's train_step must return a TrainState or (state, "
            f"metrics), got {type(state).__name__}; or pass read_state=fn(state) -> "
            "{collection: tree}"
        )
    fields = {f.name for f in dataclasses.fields(state)}
    if "params" not in fields:
        raise TypeError(
            f"[{name}] the state from the user's train_step has no 'params' field; "
            "pass read_state=fn(state) -> {collection: tree}"
        )
    return {c: getattr(state, c) for c in variables if c in fields}


def opt_fields(state: Any) -> dict[str, Any] | None:
    """A train state's ``step`` and ``opt_state`` (None: it has no such fields)."""
    if not dataclasses.is_dataclass(state) or isinstance(state, type):
        return None
    fields = {f.name for f in dataclasses.fields(state)}
    if not {"step", "opt_state"} <= fields:
        return None
    return {"step": getattr(state, "step"), "opt_state": getattr(state, "opt_state")}  # noqa: B009


def replace_fields(state: Any, **changes: Any) -> Any:
    """``state`` with ``changes`` (its own ``replace``, else a dataclass replace)."""
    if callable(getattr(state, "replace", None)):
        return state.replace(**changes)
    return dataclasses.replace(state, **changes)
