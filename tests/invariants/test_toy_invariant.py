"""Adding an invariant touches one family module: a toy family registers one row,
and the row reaches ``verify``, the CLI's ``--invariant``, the pytest plugin and the
README table check with nothing else changed."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import hybridcheck as hc
from hybridcheck.cases.seed import SEED_CASE
from hybridcheck.entrypoints.cli import verify_in_process
from hybridcheck.entrypoints.pytest_plugin import invariant_tests
from hybridcheck.invariants import registry
from hybridcheck.report.results import HELD
from tests.invariants.test_registry import readme_table_problems

TOY = "loss_is_a_finite_scalar"

# A family module as a contributor writes one: the assertion, how it is checked on
# one example, and its registry row, registered where they are defined.
FAMILY = textwrap.dedent(
    f'''
    """A toy family: the loss is one finite number."""

    import math

    import numpy as np

    from hybridcheck.describe.trees import fail
    from hybridcheck.invariants.registry import Invariant, register


    def assert_{TOY}(loss):
        value = np.asarray(loss)
        if value.shape != () or not math.isfinite(float(value)):
            fail("{TOY}", [f"loss = {{value!r}}"], "Return one finite number.")


    def check_{TOY}(s, e):
        assert_{TOY}(s.loss_fn(e.params, e.batch))


    register(
        Invariant(
            "{TOY}",
            "a loss that is not one finite number",
            check_{TOY},
            cost=("step",),
        )
    )
    '''
)


@pytest.fixture
def toy_family(tmp_path: pathlib.Path) -> Iterator[Any]:
    path = tmp_path / "toy_family.py"
    path.write_text(FAMILY)
    spec = importlib.util.spec_from_file_location("toy_family", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        registry.unregister(TOY)
        sys.modules.pop("toy_family", None)


def test_the_toy_row_is_in_the_one_registry(toy_family: Any) -> None:
    assert list(hc.REGISTRY)[-1] == TOY
    assert hc.REGISTRY[TOY].check is toy_family.check_loss_is_a_finite_scalar


def test_verify_runs_the_toy(toy_family: Any) -> None:
    report = hc.verify(SEED_CASE, profile="dev", invariants=[TOY])
    (result,) = report.cases[0].results
    assert (result.invariant, result.status) == (TOY, HELD), report.table()
    assert result.examples > 0


def test_the_cli_selects_the_toy(
    toy_family: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = verify_in_process(
        [
            "verify",
            "hybridcheck.cases.seed:SEED_CASE",
            "--profile",
            "dev",
            "--invariant",
            TOY,
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert TOY in out


def test_the_plugin_generates_the_toy(toy_family: Any) -> None:
    test = invariant_tests(SEED_CASE)
    marks = getattr(test, "pytestmark")  # noqa: B009 - set by pytest.mark
    (mark,) = [m for m in marks if m.name == "parametrize"]
    ids = [p.id for p in mark.args[1]]
    assert f"seed-{TOY}" in ids


def test_the_readme_table_check_asks_for_the_toy_row(toy_family: Any) -> None:
    assert f"{TOY}: not in the README's table" in readme_table_problems()


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(hc.REGISTRY["all_finite"])
    with pytest.raises(TypeError, match="takes Invariant rows"):
        registry.register("all_finite")  # type: ignore[arg-type]
