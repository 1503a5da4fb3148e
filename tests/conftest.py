"""Hypothesis: random exploration on developer machines; fixed examples in CI (CI=true), so a
CI run is reproducible and lands or fails for a reason anyone can replay. Timeouts: setup.cfg gives
every test 900 s; a test marked slow gets an hour."""

import os

import pytest
from hypothesis import settings

SLOW_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
