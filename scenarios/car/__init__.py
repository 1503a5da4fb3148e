"""Car scenarios."""
