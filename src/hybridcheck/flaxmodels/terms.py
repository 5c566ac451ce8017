"""A real model's params in the model's own terms, for converters written by users.

A migration's checkpoint converter is written the way Flax users write one: Linen
variables in (``{'params': ..., 'batch_stats': ...}``), the NNX model's state out (an
``nnx.State`` or its pure dict, ``nnx.to_pure_dict``), or the reverse. The cases
``from_linen``/``from_nnx`` build keep params in halves of plain arrays, with the
optimizer's state in the ``opt`` half. :class:`ModelTerms` goes between the two:

* :meth:`ModelTerms.read` gives the model's variables (Linen) or its state as a pure
  dict (NNX) from a case's params;
* :meth:`ModelTerms.write` lays such a tree out on the case's halves; leaves may be
  ``nnx.Variable`` objects or ``{'value': ...}`` wrappers, list indices ints or strs.

:func:`terms_converter` makes a case-layout converter of a user's one: the model
part goes through it once; the optimizer's state follows the same converter (each
moment, a tree with the params' paths, is converted as if it were the params) and
its counters are copied by path, cast to the other side's dtype (``int32`` step vs
``uint32``). RNG state is never converted (Linen and NNX keep it differently): the
other side's comes from its own ``init``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from hybridcheck import compat
from hybridcheck.flaxmodels.halves import OPT, RNG, Layout, path_entry

__all__ = ["ModelTerms", "plain_paths", "terms_converter"]

Path = tuple[str, ...]
_WRAPPERS = ("value", "raw_value")


def _path(keypath: Any) -> Path:
    """A JAX key path as strs, without a trailing ``value`` wrapper."""
    path = tuple(str(path_entry(k)) for k in keypath)
    while len(path) > 1 and path[-1] in _WRAPPERS:
        path = path[:-1]
    return path


def plain_paths(tree: Any) -> dict[Path, Any]:
    """``{path: array}`` of any tree of arrays: nested dicts, an ``nnx.State``,
    ``nnx.Variable`` leaves or ``{'value': x}`` wrappers; path entries as strs."""
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=compat.is_state_variable)
    out: dict[Path, Any] = {}
    for keypath, leaf in flat[0]:
        if compat.is_state_variable(leaf):
            leaf = compat.variable_array(leaf)
        out[_path(keypath)] = leaf
    return out


def _nest(flat: Mapping[Path, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


@dataclasses.dataclass(frozen=True)
class ModelTerms:
    """How a ``from_linen``/``from_nnx`` case's params read in the model's terms.

    Attributes:
      kind: ``"Linen"`` (terms: the variables dict) or ``"NNX"`` (the state's pure
        dict).
      layout: the case's layout of the model's variables.
      params_prefix: the path prefix of the trainable params in the terms
        (``('params',)`` for Linen, ``()`` for NNX).
      template: ``template()``: the case's params from ``init(PRNGKey(0))``, for
        the leaves a converter does not give (RNG state, counters without
        counterpart).
    """

    kind: str
    layout: Layout
    params_prefix: Path
    template: Callable[[], dict[str, Any]]

    def _slots(self) -> list[tuple[Path, Any]]:
        return [
            (tuple(path.split("/")), slot)
            for slot, path in zip(self.layout.slots, self.layout.paths, strict=True)
            if slot.half is not None
        ]

    def read(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The model's variables (Linen) or state as a pure dict (NNX)."""
        flat = {}
        for path, slot in self._slots():
            value: Any = params[slot.half]
            for part in slot.key:
                value = value[part]
            flat[path] = value
        return _nest(flat)

    def param_paths(self) -> set[Path]:
        """The paths of the trainable params, under :attr:`params_prefix`."""
        n = len(self.params_prefix)
        return {
            path[n:]
            for path, slot in self._slots()
            if slot.half in self.layout.trainable and path[:n] == self.params_prefix
        }

    def converter_to(
        self, other: ModelTerms, fn: Callable[[Any], Any], *, what: str
    ) -> Callable[[Any], Any]:
        """A case-layout converter from this model to ``other`` of ``fn``, written
        in the models' terms (see :func:`terms_converter`)."""
        return terms_converter(fn, self, other, what=what)

    def write(self, terms: Any, *, what: str) -> dict[str, Any]:
        """The model's halves from ``terms``; RNG state from :attr:`template`."""
        given = plain_paths(terms)
        template = self.template()
        out: dict[str, Any] = {label: {} for label in self.layout.labels}
        missing: list[str] = []
        used: set[Path] = set()
        for path, slot in self._slots():
            assert slot.half is not None
            if path in given:
                value, used = given[path], used | {path}
                old = _at(template[slot.half], slot.key)
                value = _cast(value, old)
            elif slot.half == RNG:
                value = _at(template[slot.half], slot.key)
            else:
                missing.append("/".join(path))
                continue
            node = out[slot.half]
            for part in slot.key[:-1]:
                node = node.setdefault(part, {})
            node[slot.key[-1]] = value
        extra = sorted("/".join(p) for p in set(given) - used)
        if missing or extra:
            raise ValueError(
                f"{what} returned a tree laid out unlike the {self.kind} model's "
                f"{'variables' if self.kind == 'Linen' else 'state'}: missing "
                f"{missing[:6]}{' ...' if len(missing) > 6 else ''}, unexpected "
                f"{extra[:6]}{' ...' if len(extra) > 6 else ''}"
            )
        return out


def _at(tree: Any, key: Path) -> Any:
    for part in key:
        tree = tree[part]
    return tree


def _cast(value: Any, like: Any) -> Any:
    """``value`` in ``like``'s dtype where they are both integers (counters:
    ``int32`` vs ``uint32``); floating leaves keep the converter's dtype."""
    dtype = jnp.asarray(like).dtype
    value = jnp.asarray(value)
    if jnp.issubdtype(dtype, jnp.integer) and value.dtype != dtype:
        return value.astype(dtype)
    return value


def _param_like(flat: Mapping[Path, Any], params: set[Path]) -> dict[Path, set[Path]]:
    """The nodes of an optimizer state whose leaves all sit at param paths below
    them (a moment: ``mu``, ``nu``, ``trace``): ``{node: its leaves' sub-paths}``,
    the largest such nodes only."""
    nodes: dict[Path, set[Path]] = {}
    for path in flat:
        for cut in range(len(path)):
            rest = path[cut:]
            if rest in params:
                nodes.setdefault(path[:cut], set()).add(rest)
                break
    # a node counts when every leaf below it is a param path below it
    return {
        node: subs
        for node, subs in nodes.items()
        if all(p[: len(node)] != node or p[len(node) :] in subs for p in flat)
    }


def _pair_moments(
    src: dict[Path, set[Path]], dst: dict[Path, set[Path]]
) -> list[tuple[Path, Path]]:
    """(source node, destination node) for each destination moment: the node at the
    same path (``opt_state/0/mu`` on both sides), else the next unpaired one in
    order (one optimizer, two ways of nesting its state)."""
    free = [node for node in src if node not in dst]
    pairs = []
    for node in dst:
        if node in src:
            pairs.append((node, node))
        elif free:
            pairs.append((free.pop(0), node))
    return pairs


def _convert_opt(
    fn: Callable[[Any], Any],
    src: ModelTerms,
    dst: ModelTerms,
    src_terms: dict[str, Any],
    src_opt: Any,
) -> Any:
    """The optimizer's state through the user's converter (see module doc)."""
    flat = plain_paths(src_opt)
    template = dst.template()[OPT]
    dst_flat = plain_paths(template)
    src_moments = _param_like(flat, src.param_paths())
    dst_moments = _param_like(dst_flat, dst.param_paths())
    base = plain_paths(src_terms)
    out: dict[Path, Any] = {}
    for src_node, dst_node in _pair_moments(src_moments, dst_moments):
        moment = {
            src.params_prefix + sub: flat[src_node + sub]
            for sub in src_moments[src_node]
        }
        converted = plain_paths(fn(_nest({**base, **moment})))
        for sub in dst_moments[dst_node]:
            value = converted.get(dst.params_prefix + sub)
            if value is not None:
                out[dst_node + sub] = value
    leaves = []
    for keypath, old in jax.tree_util.tree_flatten_with_path(template)[0]:
        path = _path(keypath)
        # a moment converted; else a counter by path; no counterpart: fresh
        value = out[path] if path in out else _cast(flat.get(path, old), old)
        leaves.append(value)
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def terms_converter(
    fn: Callable[[Any], Any], src: ModelTerms, dst: ModelTerms, *, what: str
) -> Callable[[Any], Any]:
    """A case-layout converter from ``fn``, a converter in the models' own terms."""

    @functools.wraps(fn)
    def convert(params: Any) -> Any:
        terms = src.read(params)
        out = dst.write(fn(terms), what=what)
        if OPT in dst.layout.labels or OPT in dst.template():
            src_opt = params.get(OPT, {}) if isinstance(params, Mapping) else {}
            out[OPT] = _convert_opt(fn, src, dst, terms, src_opt)
        return out

    convert.__hybridcheck_terms__ = (src.kind, dst.kind)  # type: ignore[attr-defined]
    return convert
