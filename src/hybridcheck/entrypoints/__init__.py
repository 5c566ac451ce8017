"""The front doors: the ``hybridcheck`` command line (``cli``), the JAX x Flax
compatibility matrix (``matrix``, over the pairs of ``pairs``) and the pytest
plugin (``pytest_plugin``).

Imports :mod:`hybridcheck.engine`, :mod:`hybridcheck.cases` and below.
"""
