"""``propose_convert``: the checkpoint converter of a migration, proposed from the
two models alone and proven by the migration invariants.

``leaves`` reads each side's leaves (kinds, normalised names); ``order`` reads the
order a forward pass consumes them from its jaxpr; ``assign`` pairs them by name,
shape and order; ``follow`` carries the optimizer state and counters along;
``transforms`` are the layouts a pair may differ by; ``oracle`` and ``search``
settle what is left by the float64 loss comparison; ``program`` writes the
converter's source; ``verdict`` runs the migration invariants on it; ``proposal``
is what comes back.
"""

from hybridcheck.engine.propose.proposal import MappingEntry, Proposal
from hybridcheck.engine.propose.propose import propose_convert

__all__ = ["MappingEntry", "Proposal", "propose_convert"]
