"""The numerics corpus is written against the newest Flax API (``nnx.Optimizer(...,
wrt=...)``, layer ``dtype=`` as Flax's examples write them today), as the code it
imitates is: older releases the compat matrix installs skip collecting it."""

from __future__ import annotations

from hybridcheck import compat

collect_ignore_glob = [] if compat.FLAX_VERSION >= (0, 12, 0) else ["*.py"]
