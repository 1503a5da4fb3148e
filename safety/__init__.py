"""Shields, constraint costs and the tamper-evident audit log (not built yet: see the safety issue)."""
