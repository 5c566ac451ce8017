"""pytest integration for hybridcheck (see README: gating a migration PR)."""
