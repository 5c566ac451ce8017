"""Bad-input corpus, CLI rows: exit, import (see
tests/entrypoints/badinputs/cli_rows.py)."""

from __future__ import annotations

import pathlib

import pytest

from tests.entrypoints.badinputs import cli_rows

pytestmark = pytest.mark.corpus

ROWS = [cli_rows.CLI_ROWS[0], *cli_rows._exit_rows(), *cli_rows._import_rows()]


@pytest.mark.parametrize("row", ROWS)
def test_cli_row(row: cli_rows.CliRow, tmp_path: pathlib.Path) -> None:
    cli_rows.check_cli_row(row, tmp_path)
