"""The system under test of a scenario: its safety spec and its policy, built from the file's words.

Named policies are built here; 'adapter:<dir>' loads the vision-language agent through
`agents.vlm.loading` (the same function eval and the demo use) and 'python:<module>:<name>'
imports any `Policy` (or a callable returning one).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from safety.car.spec import CarSafetySpec
from safety.factory.spec import FactorySafetySpec
from scenarios.spec import SystemSpec
from twin.core.config import ConfigError
from twin.core.contracts import Policy


def safety_spec(kind: str, system: SystemSpec) -> CarSafetySpec | FactorySafetySpec:
    """The world's safety spec with the scenario's overrides (strict: unknown fields raise ConfigError)."""
    overrides = dict(system.safety)
    if kind == "car":
        return CarSafetySpec.from_dict(overrides) if overrides else CarSafetySpec()
    return FactorySafetySpec.from_dict(overrides) if overrides else FactorySafetySpec()


def python_policy(ref: str) -> Policy:
    """'python:<module>:<name>' -> the Policy it names (a callable is called with no arguments)."""
    _, module, name = ref.split(":")
    try:
        obj: Any = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"policy {ref!r}: cannot import {name!r} from {module!r} ({exc})") from None
    policy = obj() if callable(obj) and not hasattr(obj, "decide") else obj
    if not hasattr(policy, "decide"):
        raise ConfigError(f"policy {ref!r} has no decide(observation) method; it is not a Policy")
    return policy


@functools.lru_cache(maxsize=4)
def adapter_policy(adapter_dir: str, task: str) -> Policy:
    """The agent of a saved adapter, built once per process (loading the model takes seconds)."""
    from agents.vlm.loading import agent_from_adapter

    return agent_from_adapter(adapter_dir, task, merge=True)
