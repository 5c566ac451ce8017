"""The corpus is written against the newest Flax API (``optimizer.update(model,
grads)``, ``nnx.DiffState``, ``Variable[...]``), as the code it imitates is: older
releases the matrix installs skip collecting it."""

from __future__ import annotations

from hybridcheck import compat

collect_ignore_glob = [] if compat.FLAX_VERSION >= (0, 12, 0) else ["*.py"]
