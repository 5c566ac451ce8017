"""How many lines of user code each guide family takes (:func:`user_code_lines`)."""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from typing import Any

from hybridcheck.cases.guide.common import nnx_train_step, xy_loss
from hybridcheck.cases.guide.linen_families import (
    BNState,
    CountsState,
    LinenDropoutBN,
    MultiModel,
    ToLinenDot,
    bn_loss,
    bn_train_step,
    dot_loss,
    dot_train_step,
    linen_dropout_bn,
    multi_loss,
    multi_train_step,
    to_linen_dot,
    to_linen_multi,
)
from hybridcheck.cases.guide.nnx_families import (
    CounterModel,
    LinenBlock,
    LoraModel,
    NNXDropoutBN,
    ToNNXDot,
    counter,
    lora,
    nnx_dropout_bn,
    to_nnx_dot,
)

_SOURCES: dict[Any, tuple[Any, ...]] = {
    # family factory (named as the family): the rest of its user code
    to_nnx_dot: (ToNNXDot, xy_loss, nnx_train_step),
    to_linen_dot: (ToLinenDot, dot_loss, dot_train_step),
    nnx_dropout_bn: (LinenBlock, NNXDropoutBN, xy_loss, nnx_train_step),
    linen_dropout_bn: (LinenDropoutBN, bn_loss, BNState, bn_train_step),
    lora: (LoraModel, xy_loss, nnx_train_step),
    counter: (CounterModel, xy_loss, nnx_train_step),
    to_linen_multi: (MultiModel, multi_loss, CountsState, multi_train_step),
}


def _code_lines(obj: Any) -> int:
    """Lines of ``obj``'s source holding code: no blank, comment or docstring lines."""
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                end = body[0].end_lineno or body[0].lineno
                docstrings.update(range(body[0].lineno, end + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT}
    skip |= {tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def user_code_lines() -> dict[str, int]:
    """Per family, the lines of user code: model, loss, train step, from_* call."""
    return {
        factory.__name__: sum(_code_lines(obj) for obj in (*parts, factory))
        for factory, parts in _SOURCES.items()
    }
