"""``hybridcheck propose-convert BEFORE AFTER [--write converter.py]``: the mapping,
the unmatched leaves and the verdict printed; exit 0 only when the proposal passes."""

from __future__ import annotations

import pathlib
import textwrap
from typing import Any

import jax
import numpy as np
import pytest

from hybridcheck.describe.trees import leaves
from hybridcheck.entrypoints.cli import main

CASES = textwrap.dedent(
    """
    from hybridcheck.cases.migrations.block import BlockVariant, block_after
    from hybridcheck.cases.migrations.embed import LINEN_EMBED, NNX_EMBED
    from hybridcheck.cases.migrations import cases

    BEFORE, AFTER = LINEN_EMBED, NNX_EMBED
    (BLOCK,) = [c for c in cases() if c.name == "migrate-block"]
    EPS = block_after(BlockVariant(eps=1e-5))  # LayerNorm epsilon changed
    MIGRATION = BLOCK
    BLOCK_BEFORE = BLOCK.before
    """
)


@pytest.fixture
def models(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "models.py"
    path.write_text(CASES)
    return path


def test_a_passing_proposal_exits_0_and_writes_the_converter(models, tmp_path, capsys):
    out = tmp_path / "converter.py"
    code = main(
        ["propose-convert", f"{models}:BEFORE", f"{models}:AFTER", "--write", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "mapping:" in printed
    assert "verdict: PASSED" in printed
    assert "['linen']['params']['embed']['embedding']" in printed
    namespace: dict[str, Any] = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)  # noqa: S102
    from hybridcheck.cases.migrations.embed import LINEN_EMBED, embed_to_nnx

    params = LINEN_EMBED.init(jax.random.PRNGKey(1))
    got, want = (
        dict(leaves(namespace["convert"](params))),
        dict(leaves(embed_to_nnx(params))),
    )
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_semantic_bug_exits_1_with_the_closest_mapping(models, capsys):
    code = main(
        [
            "propose-convert",
            f"{models}:BLOCK_BEFORE",
            f"{models}:EPS",
            "--cap",
            "4",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "verdict: FAILED" in printed
    assert "['linen']['params']['norm']['scale']" in printed  # the closest mapping


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["{m}:BEFORE"], "the following arguments are required: AFTER"),
        (["{m}:BEFORE", "{m}:NOPE"], "has no attribute 'NOPE'"),
        (
            ["{m}:BEFORE", "{m}:MIGRATION"],
            "AFTER {m}:MIGRATION must name one HybridCase",
        ),
        (["{m}:BEFORE", "{m}:AFTER", "--cap", "0"], "--cap must be at least 1"),
        (["nowhere.py:X", "{m}:AFTER"], "no such file: nowhere.py"),
    ],
)
def test_usage_errors_exit_2_and_say_why(models, capsys, words, message):
    code = main(["propose-convert", *(w.format(m=models) for w in words)])
    err = capsys.readouterr().err
    assert code == 2
    assert message.format(m=models) in err
