"""Which form a migration's converter is written in, and the case-layout one.

``MigrationCase.convert`` (and ``invert``) may map the case layout (the halves each
side's ``init`` returns) or, where both sides are real models (``from_linen`` /
``from_nnx``), the models' own terms: Linen variables in, the NNX state (or its
pure dict) out. The form is found by calling the converter on the params it must
convert: the case layout first, then the models' terms
(``HybridCase.model_terms``), and the first whose output is laid out as the other
side's params is kept. Nothing is assumed from the converter's signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybridcheck.describe.trees import leaves

__all__ = ["case_layout_converter"]


def _paths(tree: Any) -> set[str]:
    return {path for path, _ in leaves(tree)}


def _layout_problem(got: Any, want: set[str]) -> str | None:
    paths = _paths(got)
    if paths == want:
        return None
    missing, extra = sorted(want - paths), sorted(paths - want)
    return (
        f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, unexpected "
        f"{extra[:6]}{' ...' if len(extra) > 6 else ''}"
    )


def case_layout_converter(
    fn: Callable[[Any], Any],
    src_case: Any,
    dst_case: Any,
    params: Any,
    want: set[str],
    *,
    what: str,
) -> tuple[Callable[[Any], Any], Any]:
    """``fn`` as a case-layout converter, and its output on ``params``.

    Args:
      fn: the user's converter (``MigrationCase.convert`` or ``invert``).
      src_case, dst_case: the HybridCases it converts from and to.
      params: params of ``src_case`` (its case layout).
      want: the leaf paths of ``dst_case``'s params.
      what: ``"MigrationCase('name').convert"``, for messages.

    Raises:
      ValueError: ``fn`` raised, or its output fits neither form; the message says
        what each form gave and how to write either.
    """
    src_side, dst_side = (
        ("after", "before")
        if what.endswith("invert")
        else (
            "before",
            "after",
        )
    )
    tried = []
    try:
        out = fn(params)
    except Exception as exc:  # noqa: BLE001 - the other form is tried next
        tried.append(
            f"raised on the {src_side} model's params: {type(exc).__name__}: {exc}"
        )
    else:
        problem = _layout_problem(out, want)
        if problem is None:
            return fn, out
        tried.append(
            f"returned params laid out unlike the {dst_side} case "
            f"{dst_case.name!r}'s: {problem}"
        )
    src, dst = src_case.model_terms, dst_case.model_terms
    fix = (
        "Write it on the case layout (every half, the optimizer state ('opt') and "
        "other state halves included: print jax.tree.map(jnp.shape, "
        "case.init(key)) to see each side's)"
    )
    if src is not None and dst is not None:
        wrapped = src.converter_to(dst, fn, what=what)
        try:
            out = wrapped(params)
        except Exception as exc:  # noqa: BLE001 - reported with the first form's
            tried.append(
                f"in the models' own terms ({_terms(src)} in) it raised "
                f"{type(exc).__name__}: {exc}"
            )
        else:
            problem = _layout_problem(out, want)
            if problem is None:
                return wrapped, out
            tried.append(f"in the models' own terms it gave params {problem}")
        fix += (
            f", or in the models' own terms: {_terms(src)} in, {_terms(dst)} out "
            "(hybridcheck lays out the halves and converts the optimizer state "
            "with it)"
        )
    raise ValueError(f"{what} {'; '.join(tried)}. {fix}.")


def _terms(terms: Any) -> str:
    if terms.kind == "Linen":
        return "the Linen model's variables dict"
    return "the NNX model's state (nnx.State or its pure dict)"
