"""The (flax, jax) release pairs and behaviour axes that every matrix runs over.

One table for this project's ``noxfile.py`` (which loads this file with
``runpy.run_path``, before hybridcheck is installed: hence no imports at all) and for
``hybridcheck matrix`` in the users' repositories, so the two cannot drift. Measured
facts behind each row: ``shared/COMPAT-FACTS.md``.

jax, jaxlib and flax are always pinned together (:func:`pins`): no Flax wheel declares
its JAX ceiling, so pinning Flax alone installs the newest JAX and an old Flax then
fails at import.
"""

__all__ = [
    "NEWEST",
    "OLDEST",
    "COMPAT_PAIRS",
    "BROKEN_PAIRS",
    "AXES",
    "pins",
    "pair_id",
]

# The newest pair available; this project's `nox -s tests` runs on it.
NEWEST: tuple[str, str] = ("0.12.8", "0.10.2")  # (flax, jax)

# Pairs verified to work, oldest first, one per Flax line that changed the API
# (nnx in flax.nnx, the bridge, State.to_pure_dict, Optimizer(wrt=), get_value).
COMPAT_PAIRS: list[tuple[str, str]] = [
    ("0.8.5", "0.4.30"),
    ("0.9.0", "0.4.31"),
    ("0.10.2", "0.4.35"),
    ("0.10.4", "0.4.38"),
    ("0.10.7", "0.6.2"),
    ("0.11.2", "0.7.2"),
    ("0.12.0", "0.8.3"),
    ("0.12.6", "0.9.2"),
    NEWEST,
]
OLDEST: tuple[str, str] = COMPAT_PAIRS[0]

# Pairs known NOT to import (the first JAX past each Flax line's ceiling): a matrix
# shows their upstream error as a row.
BROKEN_PAIRS: list[tuple[str, str]] = [("0.9.0", "0.4.36"), ("0.10.7", "0.8.0")]

# Behaviour axes: environment variables that change what the same code computes,
# run on the newest pair. x64 and threefry are JAX flags (jax 0.5.0 flipped the
# threefry default); Flax 0.12.x reads NNX_GRAPH_MODE / NNX_GRAPH_UPDATES and plans
# to make both false by default (tree mode), so each runs set to false today.
AXES: dict[str, dict[str, str]] = {
    "x64": {"JAX_ENABLE_X64": "1"},
    "threefry0": {"JAX_THREEFRY_PARTITIONABLE": "0"},
    "threefry1": {"JAX_THREEFRY_PARTITIONABLE": "1"},
    "graph_mode_off": {"NNX_GRAPH_MODE": "false"},
    "graph_updates_off": {"NNX_GRAPH_UPDATES": "false"},
}


def pins(flax: str, jax: str) -> list[str]:
    """The requirements of one pair: flax, jax and jaxlib, pinned together."""
    return [f"flax=={flax}", f"jax=={jax}", f"jaxlib=={jax}"]


def pair_id(flax: str, jax: str) -> str:
    """A file-name-safe id: ``flax-0.12.8_jax-0.10.2``."""
    return f"flax-{flax}_jax-{jax}"
