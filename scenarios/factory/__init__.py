"""Factory scenarios."""
