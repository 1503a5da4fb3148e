"""Scenario authoring, failure search and rare-event estimation (not built yet: see the scenarios issue)."""
