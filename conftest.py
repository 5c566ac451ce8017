"""Root pytest config: JAX settings, Hypothesis profiles and markers only.

Fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import os
import pathlib

# Sharding invariants need several devices; forced host CPU devices are enough. This
# must happen before JAX initialises its backends (nothing above imports jax).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from hybridcheck.engine.profiles import PROFILES  # noqa: E402

# Broadcasting a (N, k) array against (k,) must be explicit in our code, so a silent
# rank promotion in a step shows up as an error here.
jax.config.update("jax_numpy_rank_promotion", "raise")

# Profiles (see README "Hypothesis profiles"), with the example counts of
# hybridcheck.PROFILES. `ci` is what `nox -s tests` selects.
# JAX compiles once per shape bucket, so the first example of a bucket is slow:
# deadlines would measure XLA, not our code.
_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
settings.register_profile("dev", max_examples=PROFILES["dev"].examples, **_COMMON)
settings.register_profile(
    "ci",
    max_examples=PROFILES["ci"].examples,
    derandomize=True,
    database=None,
    print_blob=True,
    **_COMMON,
)
settings.register_profile(
    "thorough",
    max_examples=PROFILES["thorough"].examples,
    derandomize=False,
    print_blob=True,
    **_COMMON,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="run tests marked slow"
    )


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (`nox -s tests`), the workers share one persistent JAX
    # compilation cache for this run, so a program (the seed step at one shape, say)
    # is compiled by one worker instead of each. It only saves time: JAX keys the
    # cache on the compiled module and options. A cache the user set is left alone.
    # It lives in the run's base temp dir (xdist gives each worker a subfolder of
    # it), which pytest deletes after a few runs.
    worker_basetemp = getattr(config, "workerinput", None) and config.option.basetemp
    if not worker_basetemp or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    cache = pathlib.Path(worker_basetemp).parent / "jax-compilation-cache"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # The property tests are the longest file by far: run them first, so xdist's
    # file-by-file scheduling spreads the rest over the other workers meanwhile.
    items.sort(key=lambda item: item.path.name != "test_properties.py")
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    run_slow = config.getoption("--run-slow")
    skip_gpu = pytest.mark.skip(
        reason=f"needs a GPU; JAX backend here is {jax.default_backend()!r}"
    )
    skip_slow = pytest.mark.skip(reason="slow: pass --run-slow to run it")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
