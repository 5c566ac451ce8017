"""The converter as Python source (``jax.numpy`` only, no hybridcheck import): the
file a user commits, and, executed, the ``convert`` / ``invert`` the proposal hands
to ``MigrationCase``, so the two cannot differ.

Each after leaf is written where the after case's layout has it, as an expression
of the before params: a path, a layer slice (``[i]``), a transpose and a reshape, a
``jnp.stack`` of layers, a cast of a counter. A leaf with no source (RNG state, an
unmatched leaf) is read from ``fresh``: the side's own ``init(key)``.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from hybridcheck.engine.propose.assign import Pair
from hybridcheck.engine.propose.leaves import Leaf, Unit
from hybridcheck.engine.propose.transforms import backward_source, forward_source

__all__ = ["write_source", "load"]


def _access(keys: tuple[Any, ...]) -> str:
    out = []
    for k in keys:
        if isinstance(k, jax.tree_util.GetAttrKey):
            out.append(f".{k.name}")
        elif isinstance(k, jax.tree_util.DictKey):
            out.append(f"[{k.key!r}]")
        elif isinstance(k, jax.tree_util.SequenceKey):
            out.append(f"[{k.idx}]")
        else:
            raise TypeError(
                f"propose_convert: a params path holds a {type(k).__name__} key "
                f"({k}); the generated converter reads dicts, lists, tuples and "
                "NamedTuples"
            )
    return "".join(out)


def _dtype(leaf: Leaf) -> str:
    return np.dtype(leaf.dtype).name


def _cast(expr: str, src: Leaf, dst: Leaf) -> str:
    if dst.kind == "counter":
        return f"jnp.asarray({expr}, dtype=jnp.{_dtype(dst)})"
    if src.dtype != dst.dtype:
        return f'_float({expr}, "{_dtype(dst)}")'
    return expr


def _unit_source(pair: Pair | None, dst: Unit, forward: bool) -> tuple[str, str]:
    """One unit's expression and a comment saying where it comes from."""
    layer = "" if dst.layer is None else f"[{dst.layer}]"
    if pair is None:
        return f"fresh{_access(dst.leaf.keys)}{layer}", "not converted: fresh init"
    src, tgt = (pair.before, pair.after) if forward else (pair.after, pair.before)
    expr = f"p{_access(src.leaf.keys)}" + (
        "" if src.layer is None else f"[{src.layer}]"
    )
    if forward:
        expr = forward_source(expr, pair.perm, pair.before.shape, pair.after.shape)
    else:
        expr = backward_source(expr, pair.perm, pair.before.shape, pair.after.shape)
    return _cast(expr, src.leaf, tgt.leaf), pair.how


def _leaf_sources(
    leaves: list[Leaf], pairs: list[Pair], forward: bool
) -> dict[str, tuple[str, str]]:
    """``where -> (expression, comment)`` for every leaf of the side written."""
    by_unit: dict[tuple[int, int | None], Pair] = {}
    for pair in pairs:
        dst = pair.after if forward else pair.before
        by_unit[(dst.leaf.index, dst.layer)] = pair
    out = {}
    for leaf in leaves:
        layered = [k for k in by_unit if k[0] == leaf.index and k[1] is not None]
        if not layered:
            out[leaf.where] = _unit_source(
                by_unit.get((leaf.index, None)), Unit(leaf), forward
            )
            continue
        parts = [
            _unit_source(by_unit.get((leaf.index, i)), Unit(leaf, i), forward)
            for i in range(leaf.shape[0])
        ]
        exprs = ",\n".join(e for e, _ in parts)
        froms = sorted({c for _, c in parts})
        out[leaf.where] = (f"jnp.stack([\n{exprs},\n])", f"layers: {', '.join(froms)}")
    return out


def _literal(
    node: Any, path: tuple[Any, ...], exprs: dict[str, tuple[str, str]], types: dict
) -> str:
    tu = jax.tree_util
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        types[type(node).__name__] = tuple(node._fields)
        items = [
            (
                f"{f}=",
                _literal(getattr(node, f), (*path, tu.GetAttrKey(f)), exprs, types),
            )
            for f in node._fields
        ]
        return _block(f"{type(node).__name__}(", items, ")")
    if isinstance(node, dict):
        items = [
            (f"{k!r}: ", _literal(v, (*path, tu.DictKey(k)), exprs, types))
            for k, v in node.items()
        ]
        return _block("{", items, "}")
    if isinstance(node, list | tuple):
        items = [
            ("", _literal(v, (*path, tu.SequenceKey(i)), exprs, types))
            for i, v in enumerate(node)
        ]
        close = "]" if isinstance(node, list) else ("," if len(node) == 1 else "") + ")"
        return _block("[" if isinstance(node, list) else "(", items, close)
    where = tu.keystr(path)
    if where not in exprs:
        raise TypeError(
            f"propose_convert: params node {type(node).__name__} at {where} is not a "
            "dict, list, tuple or NamedTuple; the generated converter writes those"
        )
    expr, comment = exprs[where]
    return f"{expr}  # {comment}"


def _block(open_: str, items: list[tuple[str, str]], close: str) -> str:
    lines = [open_]
    for prefix, body in items:
        body_lines = body.split("\n")
        first = body_lines[0]
        if "  # " in first and len(body_lines) == 1:
            code, comment = first.split("  # ", 1)
            lines.append(f"    {prefix}{code},  # {comment}")
            continue
        lines.append(f"    {prefix}{first}")
        lines += [f"    {x}" for x in body_lines[1:]]
        code, sep, comment = lines[-1].partition("  # ")
        lines[-1] = f"{code},{sep}{comment}"
    lines.append(close)
    return "\n".join(lines)


HEADER = '''"""Checkpoint converter {before} -> {after}
(proposed by hybridcheck.propose_convert).

{verdict}
RNG state is not converted: ``fresh`` is the receiving side's own init(key).
"""

{imports}import jax.numpy as jnp
'''

FLOAT = '''

def _float(x, dtype):
    """A float leaf in the receiving model's dtype; float64 (exact checks) kept."""
    return x if x.dtype == jnp.float64 else jnp.asarray(x, dtype=dtype)
'''

NEED = """

def _need(fresh, side):
    if fresh is None:
        raise ValueError(
            f"this converter fills leaves it does not convert (RNG state) from the "
            f"{side} model's own init: pass fresh={side}_init(key)"
        )
"""


def _function(name: str, doc: str, body: str, needs_fresh: bool, side: str) -> str:
    check = f'    _need(fresh, "{side}")\n' if needs_fresh else ""
    indented = "\n".join("    " + x if x else x for x in f"return {body}".split("\n"))
    return f'\n\ndef {name}(p, fresh=None):\n    """{doc}"""\n{check}{indented}\n'


def write_source(
    names: tuple[str, str],
    sides: tuple[tuple[list[Leaf], Any], tuple[list[Leaf], Any]],
    pairs: list[Pair],
    verdict: str,
) -> str:
    """The converter module: ``convert(p, fresh=None)`` and ``invert``."""
    (before, before_like), (after, after_like) = sides
    types: dict[str, tuple[str, ...]] = {}
    bodies = []
    for leaves, like, forward in (
        (after, after_like, True),
        (before, before_like, False),
    ):
        exprs = _leaf_sources(leaves, pairs, forward)
        fresh = any(e.startswith("fresh") or "[fresh" in e for e, _ in exprs.values())
        bodies.append((_literal(like, (), exprs, types), fresh))
    tuples = {
        name: fields
        for name, fields in types.items()
        if name.isidentifier() and not keyword.iskeyword(name)
    }
    text = HEADER.format(
        before=names[0],
        after=names[1],
        verdict=verdict,
        imports="import collections\n\n" if tuples else "",
    )
    if tuples:
        text += "\n"
    for name, fields in sorted(tuples.items()):
        text += (
            f"{name} = collections.namedtuple({name!r}, {list(fields)!r})"
            "  # or import your own class\n"
        )
    code = "".join(b for b, _ in bodies)
    text += (FLOAT if "_float(" in code else "") + (
        NEED if any(f for _, f in bodies) else ""
    )
    text += _function(
        "convert", f"{names[0]} params -> {names[1]} params.", *bodies[0], "after"
    )
    text += _function(
        "invert", f"{names[1]} params -> {names[0]} params.", *bodies[1], "before"
    )
    return text


def load(source: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``convert`` and ``invert`` of the generated source, executed."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<hybridcheck proposal>", "exec"), namespace)  # noqa: S102
    return namespace["convert"], namespace["invert"]
