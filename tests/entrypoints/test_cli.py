"""The hybridcheck command line: exit codes 0 / 1 / 2, targets, JSON.

``main`` supervises a worker process (one jax import more per call), so tests of
the report's content call ``verify_in_process``, the command the worker runs; the
first test goes through ``main`` end to end. Supervision itself:
test_supervise.py; the bad-input corpus: test_bad_inputs.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hybridcheck.entrypoints.cli import main, verify_in_process

USER_FILE = textwrap.dedent(
    """
    import dataclasses
    from hybridcheck.cases.seed import SEED_CASE
    from hybridcheck.cases.mutants import linen_not_updated

    GOOD = dataclasses.replace(SEED_CASE, name="user-good", extra_checks={})
    BROKEN = dataclasses.replace(GOOD, name="user-broken", step=linen_not_updated)

    def both():
        return [GOOD, BROKEN]
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_hybrid.py"
    path.write_text(USER_FILE)
    return path


def test_good_file_target_exits_0_and_writes_json(user_file, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(
        [
            "verify",
            f"{user_file}:GOOD",
            "--profile",
            "dev",
            "--quiet",
            "--invariant",
            "update_is_descent",
            "--json",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr()
    data = json.loads(out.read_text())
    assert data["ok"]
    assert data["cases"][0]["case"] == "user-good"
    assert "update_is_descent" in capsys.readouterr().out


def test_broken_step_exits_1_naming_the_invariant(user_file, capsys):
    code = verify_in_process(
        [
            "verify",
            f"{user_file}:BROKEN",
            "--profile",
            "dev",
            "--quiet",
            "--invariant",
            "update_changes_exactly_graded_leaves",
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "user-broken / update_changes_exactly_graded_leaves FAILED" in out
    assert "half 'linen'" in out


def test_callable_target_returning_a_list(user_file, capsys):
    code = verify_in_process(
        [
            "verify",
            f"{user_file}:both",
            "--profile",
            "dev",
            "--quiet",
            "--invariant",
            "all_finite",
        ]
    )
    assert code == 0
    assert "user-broken" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("nonsense", "TARGET must be"),
        ("no/such/file.py:CASE", "no such file"),
        ("hybridcheck.nope:CASE", "importing hybridcheck.nope failed"),
        ("hybridcheck.cases.seed:MISSING", "has no attribute 'MISSING'"),
        ("hybridcheck.cases.seed:IN", "must be a HybridCase"),
    ],
)
def test_bad_target_exits_2_with_one_line(target, reason, capsys):
    assert main(["verify", target]) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err
    assert len(err.splitlines()) == 1


def test_bad_arguments_exit_2(capsys):
    assert main(["verify", "--profile", "fastest"]) == 2
    assert main(["frobnicate"]) == 2


def test_list_builtin_cases(capsys):
    assert main(["verify", "--list"]) == 0
    out = capsys.readouterr().out
    assert "seed" in out
    assert "batchnorm+dropout" in out


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        # --help: the module entry point's wiring, without loading every case
        # (test_list_builtin_cases runs --list in process).
        [sys.executable, "-m", "hybridcheck", "verify", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--profile" in proc.stdout
    assert "usage: hybridcheck verify" in proc.stdout


def test_junit_and_markdown_reports_are_written(user_file, tmp_path):
    junit, markdown = tmp_path / "r.xml", tmp_path / "r.md"
    code = verify_in_process(
        [
            "verify",
            f"{user_file}:both",
            "--profile",
            "dev",
            "--quiet",
            "--invariant",
            "update_changes_exactly_graded_leaves",
            "--junit",
            str(junit),
            "--markdown",
            str(markdown),
            "--timeout",
            "600",
        ]
    )
    assert code == 1
    assert 'failures="1"' in junit.read_text()
    assert "❌ **failed**" in markdown.read_text()


def test_progress_lines_only_when_asked_or_at_a_terminal(user_file, capsys):
    argv = [
        "verify",
        f"{user_file}:GOOD",
        "--profile",
        "dev",
        "--invariant",
        "all_finite",
    ]
    assert verify_in_process(argv) == 0
    assert "searched in" not in capsys.readouterr().err  # not a terminal: quiet
    assert verify_in_process([*argv, "--progress"]) == 0
    assert "user-good: searched in" in capsys.readouterr().err
