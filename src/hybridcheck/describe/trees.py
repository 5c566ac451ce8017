"""The one place that splits parameters into halves, walks leaves, and fails.

Parameters of a hybrid model are given "by half": a NamedTuple (such as
:class:`hybridcheck.HybridParams`), a dict ``{label: pytree}`` or a tuple/list
(labelled by the caller's ``labels``, else ``half0, half1, ...``).
:func:`split_halves` turns any of these into ``{label: pytree}`` and
:func:`join_halves` rebuilds the caller's container, so every module reads the
container by the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from hybridcheck.describe._typing import PyTree

PREFIX = "[hybridcheck]"
"""Every assertion message starts with ``[hybridcheck] <invariant>:``."""


class InvariantNotApplicable(Exception):  # noqa: N818 - a verdict, not an error
    """This example does not meet the invariant's precondition (not a failure)."""


def error_regex(invariant: str, *parts: str) -> str:
    """Regex matching an assertion message of ``invariant`` containing ``parts``.

    For ``pytest.raises(AssertionError, match=error_regex(...))`` in tests.
    """
    return "(?s)" + ".*".join(
        [re.escape(f"{PREFIX} {invariant}:")] + [re.escape(p) for p in parts]
    )


def fail(invariant: str, problems: Sequence[str], hint: str) -> None:
    """Raises one ``AssertionError`` listing every problem, if there is any."""
    if problems:
        body = "\n  - ".join(problems)
        raise AssertionError(f"{PREFIX} {invariant}: \n  - {body}\n  {hint}")


def _is_namedtuple(tree: Any) -> bool:
    return isinstance(tree, tuple) and hasattr(tree, "_fields")


def split_halves(
    tree: Any,
    *,
    labels: Sequence[str] | None = None,
    name: str = "params",
    min_halves: int = 2,
) -> dict[str, PyTree]:
    """Splits a by-half container into ``{label: pytree}``.

    Args:
      tree: a NamedTuple, a Mapping ``{label: pytree}`` or a tuple/list.
      labels: labels of a tuple/list's halves, in order (default ``half<i>``).
      name: the argument's name, for error messages.
      min_halves: fewest halves accepted.

    Raises:
      TypeError: if ``tree`` is not a NamedTuple, Mapping, tuple or list.
      ValueError: if it has fewer than ``min_halves`` halves, or ``labels`` does not
        name each half of a tuple.
    """
    if _is_namedtuple(tree):
        halves = dict(tree._asdict())
    elif isinstance(tree, Mapping):
        halves = {str(k): v for k, v in tree.items()}
    elif isinstance(tree, tuple | list):
        if labels is not None and len(labels) != len(tree):
            raise ValueError(
                f"{name} has {len(tree)} halves but labels name {len(labels)}: "
                f"{list(labels)}"
            )
        names = labels if labels is not None else [f"half{i}" for i in range(len(tree))]
        halves = dict(zip(names, tree, strict=True))
    else:
        raise TypeError(
            f"{name} must hold one pytree per half (a NamedTuple such as "
            "HybridParams, a dict {label: pytree} or a tuple), got "
            f"{type(tree).__name__}"
        )
    if len(halves) < min_halves:
        raise ValueError(
            f"{name} must have at least {'two' if min_halves == 2 else min_halves} "
            f"halves (e.g. 'nnx' and 'linen'), got {list(halves)}"
        )
    return halves


def join_halves(like: Any, halves: Mapping[str, PyTree]) -> Any:
    """Inverse of :func:`split_halves`: ``halves`` in the container type of ``like``.

    A tuple/list takes the halves in ``like``'s order (the order of ``halves``).
    """
    if _is_namedtuple(like):
        return type(like)(**halves)
    if isinstance(like, Mapping):
        return dict(halves)
    return type(like)(halves.values())


def leaves(tree: PyTree) -> list[tuple[str, Any]]:
    """``[(path, leaf)]`` with paths as ``jax.tree_util.keystr`` writes them."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in flat]


def paired_halves(
    a: Any, b: Any, names: tuple[str, str], *, min_halves: int = 1
) -> list[tuple[str, PyTree, PyTree]]:
    """``[(label, a_half, b_half)]``; both must have the same half labels."""
    ha = split_halves(a, name=names[0], min_halves=min_halves)
    hb = split_halves(b, name=names[1], min_halves=min_halves)
    if set(ha) != set(hb):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same halves, got "
            f"{list(ha)} and {list(hb)}"
        )
    return [(label, ha[label], hb[label]) for label in ha]


def leaf_triples(
    old: Any, new: Any, grads: Any, *, min_halves: int = 1
) -> Iterator[tuple[str, str, Any, Any, Any]]:
    """Yields ``(half, leaf_path, old_leaf, new_leaf, grad_leaf)`` over all halves."""
    for (label, o, n), (_, _, g) in zip(
        paired_halves(old, new, ("old", "new"), min_halves=min_halves),
        paired_halves(old, grads, ("old", "grads"), min_halves=min_halves),
        strict=True,
    ):
        for (path, ol), (_, nl), (_, gl) in zip(
            leaves(o), leaves(n), leaves(g), strict=True
        ):
            yield label, path, ol, nl, gl


def index_str(i: tuple[Any, ...]) -> str:
    """``[1, 0]`` for an element index, ``""`` for a scalar."""
    return str([int(k) for k in i]) if i else ""


def sq_norm(tree: PyTree) -> float:
    """``||tree||^2`` over every leaf, accumulated in float64."""
    return float(
        sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))
    )
