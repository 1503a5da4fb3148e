"""Policies named in files (scenarios, rollout plans): 'python:<module>:<name>' imports any `Policy`.

One loader for every file format that names a policy, so a scenario and a rollout plan that
name the same policy get the same object.
"""

from __future__ import annotations

import importlib
from typing import Any

from twin.core.config import ConfigError
from twin.core.contracts import Policy


def python_policy(ref: str) -> Policy:
    """'python:<module>:<name>' -> the Policy it names (a callable without `decide` is called with no arguments)."""
    parts = ref.split(":")
    if len(parts) != 3 or parts[0] != "python" or not all(parts[1:]):
        raise ConfigError(f"policy {ref!r} must read python:<module>:<name>")
    _, module, name = parts
    try:
        obj: Any = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"policy {ref!r}: cannot import {name!r} from {module!r} ({exc})") from None
    policy = obj() if callable(obj) and not hasattr(obj, "decide") else obj
    if not hasattr(policy, "decide"):
        raise ConfigError(f"policy {ref!r} has no decide(observation) method; it is not a Policy")
    return policy
