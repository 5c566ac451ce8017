"""Built-in hybrid models (cases) that hybridcheck verifies out of the box."""
