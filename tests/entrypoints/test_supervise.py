"""The supervised run: every way the worker process can end is a verdict, and none
of them is a pass unless the worker finished and said so.

Each test runs ``hybridcheck verify`` through ``main`` (a real worker process) on a
case whose step ends the process in a way Python cannot catch: a segfault, a kill
(what the out-of-memory killer sends), a loop inside compiled code.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from hybridcheck.entrypoints import supervise
from hybridcheck.entrypoints.cli import main

CASE = textwrap.dedent(
    """
    import ctypes, dataclasses, os, signal

    import jax
    import jax.numpy as jnp
    from jax import lax

    from hybridcheck.cases.seed import SEED_CASE, seed_step

    def segfault(params, batch, lr):
        ctypes.string_at(0)  # reads address 0: SIGSEGV

    def killed(params, batch, lr):
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does

    def spins(params, batch, lr):
        # never returns, inside compiled code: no Python signal handler runs (in
        # float32, c + 1 == c from 2**24 on, so c < inf holds forever)
        c = lax.while_loop(lambda c: c < jnp.inf, lambda c: c + 1.0, 0.0)
        return jax.tree.map(lambda p: p + 0.0 * c, seed_step(params, batch, lr))

    SEGFAULT = dataclasses.replace(SEED_CASE, name="segfault", step=segfault)
    KILLED = dataclasses.replace(SEED_CASE, name="killed", step=killed)
    SPINS = dataclasses.replace(SEED_CASE, name="spins", step=spins, extra_checks={})
    """
)


@pytest.fixture
def case_file(tmp_path):
    path = tmp_path / "user_case.py"
    path.write_text(CASE)
    return path


def _verify(case_file, name, tmp_path, *extra):
    report = tmp_path / "report.json"
    argv = ["verify", f"{case_file}:{name}", "--profile", "dev", "--quiet"]
    argv += ["--invariant", "all_finite", "--json", str(report), *extra]
    return main(argv), report


def test_a_segfault_is_an_abort_naming_the_users_line(case_file, tmp_path, capsys):
    code, report = _verify(case_file, "SEGFAULT", tmp_path)
    out = capsys.readouterr().out
    assert code == 4, out
    (headline,) = [line for line in out.splitlines() if line.startswith("hybridcheck:")]
    assert "crashed (SIGSEGV" in headline
    assert "while the user's step ran (case 'segfault'" in headline
    line = 1 + CASE.splitlines().index(
        "    ctypes.string_at(0)  # reads address 0: SIGSEGV"
    )
    assert f"user_case.py:{line} in segfault" in headline  # from faulthandler's dump
    data = json.loads(report.read_text())  # written although the worker died
    assert (data["verdict"], data["exit_code"]) == ("aborted", 4)


def test_a_killed_worker_is_an_abort_not_a_pass(case_file, tmp_path, capsys):
    code, _ = _verify(case_file, "KILLED", tmp_path)
    out = capsys.readouterr().out
    assert code == 4, out
    assert "was killed (SIGKILL" in out


def test_a_loop_in_compiled_code_is_stopped_and_timed_out(
    case_file, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(supervise, "GRACE", 3.0)
    code, report = _verify(case_file, "SPINS", tmp_path, "--timeout", "15")
    out = capsys.readouterr().out
    assert code == 5, out
    assert "stuck inside compiled code" in out
    assert "case 'spins'" in out
    assert json.loads(report.read_text())["verdict"] == "timed out"
