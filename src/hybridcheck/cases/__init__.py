"""Built-in hybrid models (cases) that hybridcheck verifies out of the box."""

from __future__ import annotations

from hybridcheck.case import HybridCase

__all__ = ["builtin_cases", "mutant_cases"]


def builtin_cases() -> list[HybridCase]:
    """Every built-in correct case, for this Flax release."""
    from hybridcheck.cases import bridge, mlp, seed, stateful, transformer

    return [seed.SEED_CASE, mlp.CASE, transformer.CASE, stateful.CASE, *bridge.cases()]


def mutant_cases() -> list[HybridCase]:
    """The seed case with each deliberately broken step (the gate's self-test)."""
    import dataclasses

    from hybridcheck.cases import seed
    from hybridcheck.mutants import MUTANTS

    return [
        dataclasses.replace(
            seed.SEED_CASE,
            name=f"mutant-{m.name}",
            step=m.step,
            extra_checks={},
            description=f"BROKEN on purpose: {m.bug} (caught by {m.caught_by})",
        )
        for m in MUTANTS
    ]
