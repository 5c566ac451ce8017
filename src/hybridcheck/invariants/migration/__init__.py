"""Invariants comparing a migrated model with the model before the migration.

Deviations are measured in float64, where the same math in another order agrees to
~1e-12, and expressed in units of the *before* model's own float32 rounding noise on
the same example (before in float32 vs before in float64). An exact migration whose
new layers refuse float64 internally (the fused attention softmax runs in float32
even under x64) deviates by about that noise, with a sign that varies from example
to example; a semantic change (an epsilon, an activation, a transposed kernel)
deviates systematically. So the verdict is taken across examples, not per threshold.

``deviation`` holds the measure and the verdict; ``converter`` the converter's own
invariants; ``equivalence`` loss, gradient, step and trajectory (``_update``: an
update leaf by leaf, integer leaves exactly or not at all); ``distribution`` the
training losses of stochastic models over keys; ``sharding`` the partitioning;
``localisation`` where a failed comparison parts from the original (``_calls``:
every module call of one side observed, ``_align``: the two sides' calls paired).
Imported in report order.
"""

from hybridcheck.invariants.migration.deviation import EXACT_RTOL
from hybridcheck.invariants.migration.deviation import HARD_UNITS
from hybridcheck.invariants.migration.deviation import INTEGER_HINT
from hybridcheck.invariants.migration.deviation import MIN_EXAMPLES
from hybridcheck.invariants.migration.deviation import SIGN_RUN
from hybridcheck.invariants.migration.deviation import SYSTEMATIC_SHARE
from hybridcheck.invariants.migration.deviation import Deviation
from hybridcheck.invariants.migration.deviation import assert_matches_before
from hybridcheck.invariants.migration.deviation import deviation
from hybridcheck.invariants.migration.deviation import tree_norm
from hybridcheck.invariants.migration.deviation import units_summary
from hybridcheck.invariants.migration.converter import assert_convert_covers_every_param
from hybridcheck.invariants.migration.converter import assert_roundtrip
from hybridcheck.invariants.migration.equivalence import HINTS
from hybridcheck.invariants.migration.equivalence import assert_grads_match_before
from hybridcheck.invariants.migration.equivalence import assert_loss_matches_before
from hybridcheck.invariants.migration.equivalence import assert_step_matches_before
from hybridcheck.invariants.migration.equivalence import (
    assert_trajectory_matches_before,
)
from hybridcheck.invariants.migration.distribution import ALPHA
from hybridcheck.invariants.migration.distribution import KEYS
from hybridcheck.invariants.migration.distribution import LossSample
from hybridcheck.invariants.migration.distribution import (
    assert_loss_distribution_matches_before,
)
from hybridcheck.invariants.migration.distribution import ks_pvalue
from hybridcheck.invariants.migration.distribution import ks_statistic
from hybridcheck.invariants.migration.distribution import loss_sample
from hybridcheck.invariants.migration.sharding import MESH_RTOL
from hybridcheck.invariants.migration.sharding import Placement
from hybridcheck.invariants.migration.sharding import assert_sharding_matches_before
from hybridcheck.invariants.migration.localisation import Localisation
from hybridcheck.invariants.migration.localisation import localise

__all__ = [
    "ALPHA",
    "EXACT_RTOL",
    "HARD_UNITS",
    "HINTS",
    "INTEGER_HINT",
    "KEYS",
    "MESH_RTOL",
    "MIN_EXAMPLES",
    "SIGN_RUN",
    "SYSTEMATIC_SHARE",
    "Deviation",
    "Localisation",
    "LossSample",
    "Placement",
    "assert_convert_covers_every_param",
    "assert_grads_match_before",
    "assert_loss_distribution_matches_before",
    "assert_loss_matches_before",
    "assert_matches_before",
    "assert_roundtrip",
    "assert_sharding_matches_before",
    "assert_step_matches_before",
    "assert_trajectory_matches_before",
    "deviation",
    "ks_pvalue",
    "ks_statistic",
    "localise",
    "loss_sample",
    "tree_norm",
    "units_summary",
]
