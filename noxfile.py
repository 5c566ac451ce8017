"""Nox sessions for hybridcheck: tests, the JAX x Flax matrix, lint, bench, verify.

`nox -l` lists them. `nox -s tests` is the README's test command.
"""

from __future__ import annotations

import pathlib

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = pathlib.Path(__file__).parent
PYTHON = "3.11"

# The newest pair available; `tests` runs on it. Keep in step with COMPAT_PAIRS[-1].
NEWEST = {"jax": "0.10.2", "flax": "0.12.8"}

# (flax, jax) pairs that the compat matrix installs. jax, jaxlib and flax are always
# pinned together: no Flax wheel declares its JAX ceiling (see README
# "Compatibility"). The first is the first release with flax.nnx that our API uses.
COMPAT_PAIRS: list[tuple[str, str]] = [
    ("0.8.5", "0.4.30"),
    ("0.9.0", "0.4.31"),
    ("0.10.2", "0.4.35"),
    ("0.10.4", "0.4.38"),
    ("0.10.7", "0.6.2"),
    ("0.11.2", "0.7.2"),
    ("0.12.0", "0.8.3"),
    ("0.12.6", "0.9.2"),
    (NEWEST["flax"], NEWEST["jax"]),
]

TEST_DEPS = ["pytest>=8", "optax"]


def _pins(flax: str, jax: str) -> list[str]:
    return [f"flax=={flax}", f"jax=={jax}", f"jaxlib=={jax}"]


def _install(session: nox.Session, flax: str, jax: str, *extra: str) -> None:
    session.install("-e", ".", *TEST_DEPS, *_pins(flax, jax), *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite on the newest JAX/Flax, CPU, Hypothesis `ci` profile."""
    _install(session, NEWEST["flax"], NEWEST["jax"])
    session.run(
        "pytest",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "ci", "JAX_PLATFORMS": "cpu"},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check on src, tests and the top-level files."""
    session.install("ruff")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy on src and tests."""
    _install(session, NEWEST["flax"], NEWEST["jax"], "mypy")
    session.run("mypy", *session.posargs)
