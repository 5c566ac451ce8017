"""Reading real Flax models: ``from_nnx`` / ``from_linen`` turn a model and the
user's train step into a :class:`~hybridcheck.HybridCase`.

``graph`` walks an NNX graph (bridge wrappers included); ``halves`` decides which
variables form which half (how the halves of a ``ToNNX`` model are found);
``plan`` lays the halves out; ``opt_half`` carries the optimizer state as a half;
``specs`` reads partitioning metadata; ``functional`` is the pure-function form
both constructors build; ``from_nnx`` / ``from_linen`` are the constructors.

Imports :mod:`hybridcheck.describe` and :mod:`hybridcheck.compat`.
"""
