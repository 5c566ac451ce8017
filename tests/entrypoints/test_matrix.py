"""``hybridcheck matrix`` and the pairs table: selection, results, table, exit codes.

Everything but the ``slow`` test runs without building an environment; the slow one
(``--run-slow``) installs jax into a temp directory and runs a user's case there.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pathlib
import runpy
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import hybridcheck
from hybridcheck.entrypoints import matrix, pairs
from hybridcheck.entrypoints.cli import main
from hybridcheck.entrypoints.matrix import MatrixError, Row

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAIRS_FILE = ROOT / "src" / "hybridcheck" / "entrypoints" / "pairs.py"


# --- the one table ----------------------------------------------------------------


def test_pairs_file_has_no_imports_and_loads_by_path():
    tree = ast.parse(PAIRS_FILE.read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports == [], "noxfile.py loads pairs.py before hybridcheck is installed"
    loaded = runpy.run_path(str(PAIRS_FILE))
    assert loaded["COMPAT_PAIRS"] == pairs.COMPAT_PAIRS
    assert loaded["AXES"] == pairs.AXES


def test_pairs_are_oldest_first_and_end_with_newest():
    def key(pair: tuple[str, str]) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(x) for x in v.split(".")) for v in pair)

    assert pairs.COMPAT_PAIRS == sorted(pairs.COMPAT_PAIRS, key=key)
    assert pairs.COMPAT_PAIRS[-1] == pairs.NEWEST
    assert pairs.OLDEST == pairs.COMPAT_PAIRS[0]
    assert not set(pairs.BROKEN_PAIRS) & set(pairs.COMPAT_PAIRS)


def test_pins_keep_jax_jaxlib_and_flax_together():
    assert pairs.pins("0.8.5", "0.4.30") == [
        "flax==0.8.5",
        "jax==0.4.30",
        "jaxlib==0.4.30",
    ]


def test_graph_mode_axes_set_the_variables_flax_reads():
    assert pairs.AXES["graph_mode_off"] == {"NNX_GRAPH_MODE": "false"}
    assert pairs.AXES["graph_updates_off"] == {"NNX_GRAPH_UPDATES": "false"}
    assert {"x64", "threefry0", "threefry1"} <= set(pairs.AXES)


def test_noxfile_reads_the_table_instead_of_copying_it():
    noxfile = (ROOT / "noxfile.py").read_text()
    assert "pairs.py" in noxfile
    for flax, jax in pairs.COMPAT_PAIRS + pairs.BROKEN_PAIRS:
        assert f'("{flax}", "{jax}")' not in noxfile


# --- selecting rows ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], [pairs.NEWEST]),
        (["newest"], [pairs.NEWEST]),
        (["oldest", "newest"], [pairs.OLDEST, pairs.NEWEST]),
        (["all"], pairs.COMPAT_PAIRS),
        (["broken"], pairs.BROKEN_PAIRS),
        (["flax=0.11.2,jax=0.7.2"], [("0.11.2", "0.7.2")]),
        (["newest", "all", "newest"], [pairs.NEWEST, *pairs.COMPAT_PAIRS[:-1]]),
    ],
    ids=["default", "newest", "oldest+newest", "all", "broken", "explicit", "dedup"],
)
def test_select_rows(words, expected):
    assert [(r.flax, r.jax) for r in matrix.select_rows(words)] == expected


def test_each_axis_adds_a_row_per_pair():
    rows = matrix.select_rows(["oldest", "newest"], ["graph_mode_off"])
    assert [r.axis for r in rows] == ["default", "graph_mode_off"] * 2
    assert rows[1].label == "flax 0.8.5 / jax 0.4.30 [graph_mode_off]"


@pytest.mark.parametrize(
    "word", ["latest", "flax=0.12.8", "jax=0.10.2,flax=0.12.8", "flax=x,jax=0.1"]
)
def test_unknown_selection_is_refused_with_the_choices(word):
    with pytest.raises(MatrixError, match="newest, oldest, all, broken"):
        matrix.select_rows([word])


def test_unknown_axis_is_refused():
    with pytest.raises(MatrixError, match="graph_mode_off"):
        matrix.select_rows([], ["x32"])


def test_nox_parametrize_gives_ids_like_the_projects_noxfile():
    pytest.importorskip("nox")

    @matrix.nox_parametrize("oldest", "newest")
    def session(session, flax, jax):  # pragma: no cover - never called
        pass

    params = session.parametrize  # type: ignore[attr-defined]
    assert [p.call_spec for p in params] == [
        {"flax": pairs.OLDEST[0], "jax": pairs.OLDEST[1]},
        {"flax": pairs.NEWEST[0], "jax": pairs.NEWEST[1]},
    ]
    assert str(params[0]) == f"flax='{pairs.OLDEST[0]}', jax='{pairs.OLDEST[1]}'"


# --- reading verify's results -----------------------------------------------------


def _case(name, *statuses, error=""):
    results = [{"invariant": f"inv{i}", "status": s} for i, s in enumerate(statuses)]
    return {"case": name, "error": error, "results": results}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (_case("c", "held", "n/a"), "pass"),
        (_case("c", "n/a", "n/a"), "n/a"),
        (_case("c", "held", "failed", "failed"), "fails inv1, inv2"),
        (_case("c", error="TypeError: bad init\n  more"), "error: TypeError: bad init"),
    ],
    ids=["pass", "all-na", "fails", "error"],
)
def test_cell(case, expected):
    assert matrix.cell(case) == expected


TRACEBACK = """\
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/e/site-packages/flax/core/tracers.py", line 17, in <module>
    from jax.core import MainTrace
ImportError: cannot import name 'MainTrace' from 'jax.core' (/e/jax/core.py)
"""


def test_last_error_line_is_the_upstream_error_without_the_machines_path():
    assert matrix.last_error_line(TRACEBACK) == (
        "ImportError: cannot import name 'MainTrace' from 'jax.core'"
    )
    target_error = (
        "hybridcheck: error: importing /p/case.py failed: ModuleNotFoundError: "
        "No module named 'optax'\n"
    )
    assert matrix.last_error_line(target_error) == (
        "ModuleNotFoundError: No module named 'optax'"
    )
    assert matrix.last_error_line("just this\n") == "just this"


def test_outcome_pass_fail_and_rows_that_did_not_run():
    ok = {"cases": [_case("a", "held"), _case("b", "n/a")]}
    assert matrix.outcome(0, ok, "")["status"] == "pass"
    bad = {"cases": [_case("a", "held"), _case("b", "failed")]}
    res = matrix.outcome(1, bad, "")
    assert res["status"] == "fail"
    assert res["cells"] == {"a": "pass", "b": "fails inv0"}
    # hybridcheck itself cannot import on this pair: a traceback, exit 1, no JSON
    res = matrix.outcome(1, None, TRACEBACK)
    assert res["error"].startswith("cannot import: ImportError: cannot import name")
    assert matrix.outcome(2, None, "x: error: no attr")["error"].startswith(
        "cannot import:"
    )
    watchdog = "hybridcheck: error: still running 1320 s after start, past"
    assert matrix.outcome(1, None, watchdog)["error"].startswith("stopped (exit 1)")


def _results():
    return [
        (Row("0.12.8", "0.10.2"), {"cells": {"a": "pass", "b": "fails x|y"}}),
        (Row("0.12.8", "0.10.2", "x64"), {"cells": {"a": "pass"}, "seconds": 3.4}),
        (Row("0.9.0", "0.4.36"), {"error": "cannot import: ImportError: boom"}),
    ]


def test_table_rows_are_pairs_and_columns_are_cases():
    lines = matrix.table(_results()).splitlines()
    assert lines[0].split() == ["pair", "a", "b", "seconds"]
    assert set(lines[1]) <= {"-", " "}
    assert "fails x|y" in lines[2]
    assert lines[3].split()[-2:] == ["n/a", "3"]  # case b not in that report
    assert "cannot import: ImportError: boom" in lines[4]
    assert lines[4].split()[-2:] == ["-", "0"]


def test_markdown_table_escapes_pipes():
    md = matrix.table(_results(), markdown=True).splitlines()
    assert md[0] == "| pair | a | b | seconds |"
    assert md[1] == "|---|---|---|---|"
    assert "fails x\\|y" in md[2]


# --- the command line, environments faked -----------------------------------------


@pytest.fixture
def case_file(tmp_path):
    path = tmp_path / "case.py"
    path.write_text("CASE = None\n")
    return path


def _fake_rows(monkeypatch, outcomes):
    calls = []

    def fake_run_row(row, envs, args, say):
        calls.append((row, envs, args.targets))
        say(f"faked {row.label}")
        return dict(outcomes[len(calls) - 1])

    monkeypatch.setattr(matrix, "_run_row", fake_run_row)
    monkeypatch.setattr(matrix, "_uv", lambda: ["uv"])
    return calls


def test_matrix_prints_the_table_writes_reports_and_exits_1_on_a_failure(
    monkeypatch, case_file, tmp_path, capsys
):
    calls = _fake_rows(
        monkeypatch,
        [
            {"status": "pass", "cells": {"c": "pass"}},
            {"status": "error", "error": "cannot import: ImportError: x"},
        ],
    )
    out_json, out_md = tmp_path / "m.json", tmp_path / "m.md"
    argv = ["matrix", f"{case_file}:CASE", "--project", str(tmp_path)]
    argv += ["--pairs", "newest", "flax=0.9.0,jax=0.4.36", "--progress"]
    argv += ["--json", str(out_json), "--markdown", str(out_md)]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "cannot import: ImportError: x" in out
    assert "flax 0.12.8 / jax 0.10.2" in out
    assert "row 2/2: flax 0.9.0 / jax 0.4.36" in err
    assert "s] faked" in err
    assert calls[0][1] == tmp_path / ".hybridcheck-envs"
    assert calls[0][2] == [f"{case_file}:CASE"]
    data = json.loads(out_json.read_text())
    assert not data["ok"]
    assert [r["status"] for r in data["rows"]] == ["pass", "error"]
    assert out_md.read_text().startswith("### hybridcheck matrix: FAILED")
    assert (tmp_path / ".hybridcheck-envs" / ".gitignore").read_text() == "*\n"


def test_matrix_exits_0_when_every_row_passes_and_is_quiet_off_a_tty(
    monkeypatch, case_file, tmp_path, capsys
):
    _fake_rows(monkeypatch, [{"status": "pass", "cells": {"c": "pass"}}] * 2)
    monkeypatch.chdir(tmp_path)
    # a TARGET after --pairs is still a TARGET
    argv = ["matrix", "--pairs", "newest", "case.py:CASE", "--axis", "x64"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "[x64]" in out
    assert err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["matrix"], "needs a TARGET"),
        (["matrix", "missing.py:CASE"], "no such file"),
        (["matrix", "{case}:CASE", "--pairs", "latest"], "--pairs takes"),
        (["matrix", "{case}:CASE", "--project", "/nonexistent"], "--project"),
    ],
    ids=["no-target", "no-file", "bad-pair", "bad-project"],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, case_file, capsys):
    assert main([a.format(case=case_file) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_without_uv_it_says_how_to_get_it(monkeypatch, case_file, capsys):
    monkeypatch.setattr(matrix.shutil, "which", lambda name: None)
    monkeypatch.setattr(matrix.importlib.util, "find_spec", lambda name: None)
    assert main(["matrix", f"{case_file}:CASE"]) == 2
    assert "pip install uv" in capsys.readouterr().err


def test_environment_is_reused_while_what_it_holds_is_unchanged(monkeypatch, tmp_path):
    commands = []

    def fake_run(cmd, log, say, **kw):
        commands.append(cmd[1:3])
        python.parent.mkdir(parents=True, exist_ok=True)
        python.touch()
        return 0

    monkeypatch.setattr(matrix, "_run_logged", fake_run)
    monkeypatch.setattr(matrix, "_uv", lambda: ["uv"])
    env, row = tmp_path / "env", Row(*pairs.NEWEST)
    python = env / "venv" / "bin" / "python"
    assert matrix._build(row, env, tmp_path, print) == python
    assert commands == [["venv", "--python"], ["pip", "install"]]
    assert matrix._build(row, env, tmp_path, print) == python
    assert len(commands) == 2  # reused: nothing ran
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    assert matrix._build(row, env, tmp_path, print) == python
    assert commands[2:] == [["pip", "install"]]  # the project changed: reinstall
    stamp = json.loads((env / "installed.json").read_text())
    assert stamp["project"] == ["-e", str(tmp_path)]
    assert stamp["pins"] == pairs.pins(*pairs.NEWEST)


def test_a_failed_install_is_a_row_with_uvs_reason(monkeypatch, tmp_path):
    def fake_run(cmd, log, say, **kw):
        log.write_text("  ╰─▶ Because jaxlib==9.9 has no wheels, it is unsatisfiable.")
        return 1

    monkeypatch.setattr(matrix, "_run_logged", fake_run)
    monkeypatch.setattr(matrix, "_uv", lambda: ["uv"])
    got = matrix._build(Row("0.12.8", "9.9"), tmp_path / "env", tmp_path, print)
    assert got.startswith("cannot install: ")
    assert "unsatisfiable" in got


def test_this_hybridcheck_is_installed_from_its_source_checkout():
    assert matrix._self_requirement() == ["-e", str(ROOT)]  # as `pip install -e .`


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        (None, f"hybridcheck=={hybridcheck.__version__}"),
        (
            {
                "url": "https://g.example/hc",
                "vcs_info": {"vcs": "git", "commit_id": "ab"},
            },
            "hybridcheck @ git+https://g.example/hc@ab",
        ),
        (
            {"url": "file:///w/hc-0.1-py3-none-any.whl"},
            "hybridcheck @ file:///w/hc-0.1-py3-none-any.whl",
        ),
    ],
    ids=["index", "git", "wheel"],
)
def test_this_hybridcheck_is_installed_as_it_was_installed_here(
    monkeypatch, direct_url, expected
):
    class Dist:  # importlib.metadata.Distribution, as installed from the index
        version = hybridcheck.__version__

        def read_text(self, name):
            assert name == "direct_url.json"
            return json.dumps(direct_url) if direct_url else None

    monkeypatch.setattr(matrix.importlib.metadata, "distribution", lambda n: Dist())
    assert matrix._self_requirement() == [expected]


# --- end to end: a user's case outside this repository, jax installed ---------------

USER_CASE = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    from flax import nnx

    import hybridcheck as hc

    HEAD = nn.Dense(2)


    def init(key):
        k1, k2 = jax.random.split(key)
        encoder = nnx.Linear(3, 4, rngs=nnx.Rngs(k1))
        return {
            "nnx": hc.compat.params_as_dict(encoder),
            "linen": HEAD.init(k2, jnp.zeros((1, 4))),
        }


    def loss(params, batch):
        x, y = batch
        p = params["nnx"]
        h = jnp.tanh(x @ p["kernel"] + p["bias"])
        return jnp.mean((HEAD.apply(params["linen"], h) - y) ** 2)


    def batches(key):
        kx, ky = jax.random.split(key)
        return jax.random.normal(kx, (4, 3)), jax.random.normal(ky, (4, 2))


    def step(params, batch, lr):
        grads = jax.grad(loss)(params, batch)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads)


    def linen_only_step(params, batch, lr):  # the bug: the nnx half never moves
        grads = jax.grad(loss)(params, batch)
        linen = jax.tree.map(lambda p, g: p - lr * g, params["linen"], grads["linen"])
        return {"nnx": params["nnx"], "linen": linen}


    GOOD = hc.HybridCase(name="mine", init=init, loss=loss, batches=batches,
                         step=step, sgd=True)
    BROKEN = hc.HybridCase(name="mine-broken", init=init, loss=loss,
                           batches=batches, step=linen_only_step, sgd=True)
    CASES = [GOOD, BROKEN]
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["newest", "oldest"])
def test_matrix_on_a_users_case_outside_the_repository(pair, tmp_path):
    if shutil.which("uv") is None and importlib.util.find_spec("uv") is None:
        pytest.skip("needs uv (pip install uv)")
    project = tmp_path / "user-project"
    project.mkdir()
    (project / "hybrid_case.py").write_text(USER_CASE)
    cmd = [sys.executable, "-m", "hybridcheck", "matrix", "hybrid_case.py:CASES"]
    cmd += ["--pairs", pair, "--profile", "dev", "--json", "m.json"]
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=project, capture_output=True, text=True, check=False, timeout=1200
    )
    seconds = time.perf_counter() - start
    print(f"\n{pair}: {seconds:.0f} s\n{done.stdout}")  # the table, with -s
    assert done.returncode == 1, done.stdout + done.stderr  # BROKEN fails
    [row] = json.loads((project / "m.json").read_text())["rows"]
    flax, jax = pairs.NEWEST if pair == "newest" else pairs.OLDEST
    assert (row["flax"], row["jax"], row["status"]) == (flax, jax, "fail")
    assert row["cells"]["mine"] == "pass"
    assert "update_changes_exactly_graded_leaves" in row["cells"]["mine-broken"]
    env = project / ".hybridcheck-envs" / pairs.pair_id(flax, jax)
    assert (env / "install.log").exists()
    assert (env / "verify-default.log").exists()
    assert row["report"]["versions"]["flax"] == flax
