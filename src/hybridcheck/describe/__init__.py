"""How a user describes what is verified, and the runnable form of that description.

``hybrid_case`` (:class:`HybridCase`, ``sgd_step``) and ``migration_case``
(:class:`MigrationCase`) are the cases; ``subject`` makes a case runnable (its
compiled loss, gradient and step, memoized per example); ``strategies`` draws its
inputs; ``usercode`` calls the user's functions and names them when they fail;
``validate`` checks arguments; ``trees`` splits a params tree into halves and holds
the verdict types (``fail``, ``InvariantNotApplicable``); ``specs`` resolves a
case's partitioning; ``tracing`` counts traces and compiles.

Imports only :mod:`hybridcheck.compat`.
"""
