"""Policies side by side on held-out worlds: rows per decision and a summary table; the
report is built by the caller (shakedown eval)."""
