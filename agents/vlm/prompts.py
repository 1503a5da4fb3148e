"""Versioned prompts. A prompt's version is recorded in adapter manifests and audit entries,
so a model is always evaluated with the prompt format it was trained on (RobotxR1's
training and evaluation prompts differ; ours cannot).

`PROMPTS` maps every version ever shipped to its builder, so an old adapter keeps its own
prompt; `VERSIONS` names the current version per task (what new training uses). car-v2
is car-v1 made short for latency (a one-line parameter table, ~190 instead of ~450
prompt tokens) and ordered constant-text first, so the shared prefix can be cached.
"""

from __future__ import annotations

from collections.abc import Callable

from agents.control.mpc_params import PARAM_TABLE, table_text
from twin.core.config import ConfigError
from twin.core.contracts import Observation


def car_prompt_v1(obs: Observation, image: str) -> str:
    s = obs.state
    return (
        f"{image}\n"
        "You tune the model predictive controller of a 1:10 race car.\n"
        f"Instruction: {obs.instruction}\n"
        f"Car: speed {s.get('speed', 0.0):.2f} m/s, lateral offset {s.get('lateral_offset', 0.0):+.2f} m, "
        f"heading error {s.get('heading_error', 0.0):+.2f} rad, track half width {s.get('half_width', 0.0):.2f} m.\n"
        f"MPC parameters:\n{table_text()}\n"
        "Think step by step inside <think></think>, then give a JSON object with the parameters to change, "
        'for example {"v_max": 2.0, "qv": 30}.'
    )


COMPACT_TABLE = ", ".join(f"{p.name} {p.low:g}..{p.high:g} ({p.default:g})" for p in PARAM_TABLE)


def car_prompt_v2(obs: Observation, image: str) -> str:
    s = obs.state
    return (
        "Tune the MPC of a 1:10 race car. Parameters, range (default): " + COMPACT_TABLE + ".\n"
        "Answer with a short <think></think>, then JSON of the parameters to change.\n"
        f"Car: speed {s.get('speed', 0.0):.1f} m/s, offset {s.get('lateral_offset', 0.0):+.2f} m, "
        f"heading {s.get('heading_error', 0.0):+.2f} rad, half width {s.get('half_width', 0.0):.2f} m. "
        f"Camera: {image}\n"
        f"Instruction: {obs.instruction}"
    )


def factory_prompt_v1(obs: Observation, image: str) -> str:
    kind = next((k.removeprefix("kind_") for k, v in obs.state.items() if k.startswith("kind_") and v), "part")
    return (
        f"{image}\n{obs.instruction}\n"
        f"The image shows a {kind} from above on the conveyor.\n"
        "Think step by step inside <think></think>, then answer with JSON: "
        '{"decision": "accept"} or {"decision": "reject"} or {"decision": "hold"}.'
    )


PROMPTS: dict[str, Callable[[Observation, str], str]] = {
    "car-v1": car_prompt_v1,
    "car-v2": car_prompt_v2,
    "factory-v1": factory_prompt_v1,
}
"""Every prompt version, by name: builder(observation, image placeholder text) -> user turn."""
VERSIONS = {"car": "car-v2", "factory": "factory-v1"}
"""The current prompt version of each task."""


def prompt_for(task: str, version: str | None = None) -> tuple[str, Callable[[Observation, str], str]]:
    """(version, builder) for a task: the named version, or the current one."""
    if task not in VERSIONS:
        raise ConfigError(f"unknown task {task!r}; choose from {sorted(VERSIONS)}")
    version = version or VERSIONS[task]
    if version not in PROMPTS or not version.startswith(task + "-"):
        raise ConfigError(f"prompt version {version!r} is not a {task} prompt; known: {sorted(PROMPTS)}")
    return version, PROMPTS[version]
