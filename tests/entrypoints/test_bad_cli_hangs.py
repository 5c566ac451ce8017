"""Bad-input corpus, CLI rows: hang (see
tests/entrypoints/badinputs/cli_rows.py)."""

from __future__ import annotations

import pathlib

import pytest

from tests.entrypoints.badinputs import cli_rows

pytestmark = pytest.mark.corpus

ROWS = [*cli_rows._hang_rows()]


@pytest.mark.parametrize("row", ROWS)
def test_cli_row(row: cli_rows.CliRow, tmp_path: pathlib.Path) -> None:
    cli_rows.check_cli_row(row, tmp_path)
