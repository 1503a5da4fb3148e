"""Hypothesis: random exploration on developer machines; fixed examples in CI (CI=true), so a
CI run is reproducible and lands or fails for a reason anyone can replay."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
