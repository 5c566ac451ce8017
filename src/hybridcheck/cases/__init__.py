"""Built-in hybrid models (cases) that hybridcheck verifies out of the box."""

from __future__ import annotations

from typing import Any

from hybridcheck.describe.hybrid_case import HybridCase

__all__ = ["builtin_cases", "migration_cases", "mutant_cases"]


def builtin_cases() -> list[Any]:
    """Every built-in correct case (hybrid models, then migrations) for this release."""
    from hybridcheck.cases import bridge, guide, mlp, seed, stateful, transformer

    return [
        seed.SEED_CASE,
        mlp.CASE,
        transformer.CASE,
        stateful.CASE,
        *bridge.cases(),
        *guide.cases(),
        *migration_cases(),
    ]


def migration_cases() -> list[Any]:
    """The built-in migrations: Linen original -> migrated model, with converters."""
    from hybridcheck.cases import migrations

    return list(migrations.cases())


def mutant_cases() -> list[HybridCase]:
    """The seed case with each deliberately broken step (the gate's self-test)."""
    import dataclasses

    from hybridcheck.cases import seed
    from hybridcheck.cases.mutants import MUTANTS

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
