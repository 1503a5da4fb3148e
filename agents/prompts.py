"""Versioned prompts. A prompt's version is recorded in adapter manifests and audit entries,
so a model is always evaluated with the prompt format it was trained on (RobotxR1's
training and evaluation prompts differ; ours cannot)."""

from __future__ import annotations

from agents.interface import Observation
from agents.mpc_params import table_text

CAR_PROMPT_VERSION = "car-v1"
FACTORY_PROMPT_VERSION = "factory-v1"
VERSIONS = {"car": CAR_PROMPT_VERSION, "factory": FACTORY_PROMPT_VERSION}


def car_prompt(obs: Observation) -> str:
    s = obs.state
    return (
        "You tune the model predictive controller of a 1:10 race car.\n"
        f"Instruction: {obs.instruction}\n"
        f"Car: speed {s.get('speed', 0.0):.2f} m/s, lateral offset {s.get('lateral_offset', 0.0):+.2f} m, "
        f"heading error {s.get('heading_error', 0.0):+.2f} rad, track half width {s.get('half_width', 0.0):.2f} m.\n"
        f"MPC parameters:\n{table_text()}\n"
        "Think step by step inside <think></think>, then give a JSON object with the parameters to change, "
        'for example {"v_max": 2.0, "qv": 30}.'
    )


def factory_prompt(obs: Observation) -> str:
    kind = next((k.removeprefix("kind_") for k, v in obs.state.items() if k.startswith("kind_") and v), "part")
    return (
        f"{obs.instruction}\n"
        f"The image shows a {kind} from above on the conveyor.\n"
        "Think step by step inside <think></think>, then answer with JSON: "
        '{"decision": "accept"} or {"decision": "reject"} or {"decision": "hold"}.'
    )


PROMPTS = {"car": car_prompt, "factory": factory_prompt}
