"""Supervised warm-up data: the scripted experts' answers, written as chain of thought + JSON.

Each example is an Observation (what the agent will see) and the target answer text in
the exact format the parser reads: `<think>...</think>` then a JSON action. Car examples
come from reset-only episodes of the instruction task (no driving needed); factory
examples from labelled frames of single parts. Train and held-out paraphrases never mix.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from agents.car_task import CarInstructionEnv, CarTaskConfig
from agents.expert import ScriptedCarExpert
from agents.interface import Observation
from agents.mpc_params import DEFAULT
from twin.factory_env import INSTRUCTION, KIND_ORDER
from twin.factory_samples import part_frames
from twin.tracks import TRAIN_TRACKS


@dataclasses.dataclass(frozen=True)
class Example:
    observation: Observation
    target: str
    """The answer to learn: chain of thought, then the JSON action."""


def car_thought(category: str, target_speed: float | None, action: dict[str, float]) -> str:
    if category == "centerline":
        return (f"Stay on the centerline. The default follows a racing line that cuts corners, so I stop tracking "
                f"it (qn {action.get('qn', DEFAULT.qn):g}) and raise the safety margin to "
                f"{action.get('track_safety_margin', DEFAULT.track_safety_margin):.2f} m, which narrows the allowed "
                f"band around the centre. A lower top speed keeps it there.")
    if category == "velocity":
        return (f"Hold {target_speed:g} m/s. I set v_max to {action.get('v_max', DEFAULT.v_max):g} and raise qv so "
                f"speed tracking dominates; v_min {action.get('v_min', DEFAULT.v_min):g} lets the car slow down "
                "only where a corner needs it.")
    if category == "reverse":
        return ("Drive backwards. A negative speed band around -1 m/s makes the car reverse; a high qv holds the "
                "speed.")
    if category == "smooth":
        return ("Drive smoothly. I lower the lateral acceleration limit, soften acceleration and braking, weight "
                "the control effort and cap the speed.")
    raise ValueError(f"no thought template for {category!r}")


def answer(thought: str, action: dict) -> str:
    return f"<think>{thought}</think>\n{json.dumps(action)}"


def car_examples(n: int, seed: int, split: str = "train", tracks: tuple[str, ...] = TRAIN_TRACKS) -> list[Example]:
    env = CarInstructionEnv(CarTaskConfig(tracks=tracks, split=split, duration_s=1.0))
    expert = ScriptedCarExpert()
    rng = np.random.default_rng(seed)
    out = []
    try:
        for _ in range(n):
            _, info = env.reset(seed=int(rng.integers(2**31)))
            obs = info["observation"]
            params = expert.decide(obs).action
            changed = {k: round(v, 3) for k, v in params.items() if abs(v - getattr(DEFAULT, k)) > 1e-9}
            thought = car_thought(info["category"], info["target_speed"], changed)
            out.append(Example(obs, answer(thought, changed)))
    finally:
        env.close()
    return out


DEFECT_WORDS = {
    "scratch": "a thin dark line across the top: a scratch",
    "dent": "a dark patch on the top face: a dent",
    "spot": "a coloured spot on the top face",
    "missing_hole": "no hole in the middle: the hole is missing",
}


def factory_examples(n: int, seed: int) -> list[Example]:
    frames, specs = part_frames(n, seed)
    out = []
    for frame, spec in zip(frames, specs):
        state = {"belt_speed": 0.2, **{f"kind_{k}": float(k == spec.kind) for k in KIND_ORDER}}
        obs = Observation(0.0, state, image=frame, instruction=INSTRUCTION,
                          privileged={"defect": spec.defect, "defective": spec.defective, "kind": spec.kind})
        if spec.defective:
            thought, decision = f"I see {DEFECT_WORDS[spec.defect]}. Reject.", "reject"
        else:
            thought, decision = "The top is clean and the hole is in place. Accept.", "accept"
        out.append(Example(obs, answer(thought, {"decision": decision})))
    return out
