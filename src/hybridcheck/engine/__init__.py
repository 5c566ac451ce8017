"""The engine: runs the registry's invariants over cases under Hypothesis.

``verify`` is the entry (:func:`hybridcheck.verify`); ``case_run`` runs one case;
``search`` draws, runs and shrinks examples; ``budget`` enforces time limits;
``profiles`` holds the example counts (dev, ci, thorough).

Imports :mod:`hybridcheck.invariants`, :mod:`hybridcheck.report` and below.
"""
