"""The tamper-evident audit log of decisions, and the tools to verify, search and report on it."""
