"""The system under test of a scenario: its safety spec and its policy, built from the file's words.

Named policies are built here; 'adapter:<dir>' loads the vision-language agent through
`agents.vlm.loading` (the same function eval and the demo use) and 'python:<module>:<name>'
imports any `Policy` (or a callable returning one).
"""

from __future__ import annotations

import functools

from safety.car.spec import CarSafetySpec
from safety.factory.spec import FactorySafetySpec
from scenarios.spec import SystemSpec
from twin.core.contracts import Policy


def safety_spec(kind: str, system: SystemSpec) -> CarSafetySpec | FactorySafetySpec:
    """The world's safety spec with the scenario's overrides (strict: unknown fields raise ConfigError)."""
    overrides = dict(system.safety)
    if kind == "car":
        return CarSafetySpec.from_dict(overrides) if overrides else CarSafetySpec()
    return FactorySafetySpec.from_dict(overrides) if overrides else FactorySafetySpec()


@functools.lru_cache(maxsize=4)
def adapter_policy(adapter_dir: str, task: str) -> Policy:
    """The agent of a saved adapter, built once per process (loading the model takes seconds).

    float32 even where bfloat16 is native: in float32 an answer does not depend on the episodes a
    worker decided before (its drafts and cached head change the passes, not the answer), so a
    campaign's rows are the same on every backend and a replay repeats its episode."""
    from agents.vlm.loading import agent_from_adapter
    from agents.vlm.model import GenerationConfig

    return agent_from_adapter(adapter_dir, task, GenerationConfig(precision="float32"), merge=True)
