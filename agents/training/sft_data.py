"""Supervised warm-up data: the scripted experts' answers, written as chain of thought + JSON.

Each example is an Observation (what the agent will see) and the target answer text in
the exact format the parser reads: `<think>...</think>` then a JSON action. Car examples
come from reset-only episodes of the instruction task (no driving needed); factory
examples from labelled frames of single parts. Train and held-out wordings never mix: car examples
draw from the split's template grammar (and, for train, the model's own paraphrases).
"""

from __future__ import annotations

import dataclasses
import json
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from agents.control.mpc_params import DEFAULT
from agents.policies.car_expert import ScriptedCarExpert, centerline_margin
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import written_speed
from agents.tasks.factory.envs import INSTRUCTION, KIND_ORDER
from agents.tasks.factory.line_frames import factory_frames
from twin.car.tracks import TRAIN_TRACKS
from twin.core.contracts import Observation


@dataclasses.dataclass(frozen=True)
class Example:
    observation: Observation
    target: str
    """The answer to learn: chain of thought, then the JSON action."""


def car_thought(category: str, target_speed: float | None, action: dict[str, float], written: str | None = None,
                half_width: float | None = None, inset: float | None = None) -> str:
    """A short reason that states the intent and, for speeds, the target (every sampled thought token costs a
    model pass of ~80 ms on two CPU cores; agents.vlm.speculative drafts the repeated ones). A velocity thought
    states the target in m/s, and first what it was read from when the instruction wrote it otherwise
    (`written`: the speed as written, e.g. 'nine km/h' -> "nine km/h is 2.5 m/s. Target 2.5 m/s.").
    A centerline thought first copies the track's half width from the prompt (`half_width`), so the margin that
    follows is computed from the number just written rather than remembered from the training tracks; with
    `inset` it states the subtraction too ("half width 0.95 less 0.18 is 0.77"), which the decoder's calculator
    completes (agents.vlm.grammar.subtracted_margin), so the model chooses the inset and the calculator subtracts."""
    if category == "centerline":
        margin = action.get("track_safety_margin", DEFAULT.track_safety_margin)
        on = f" on half width {half_width:.2f}" if half_width is not None else ""
        on += f" less {inset:g} is {margin:g}" if half_width is not None and inset is not None else ""
        return f"Centerline{on}: qn {action.get('qn', DEFAULT.qn):g}, margin {margin:g} m, slower."
    if category == "velocity":
        target = f"{target_speed:g} m/s"
        read = f"{written} is {target}. " if written and written != target else ""
        return f"{read}Target {target}."
    if category == "reverse":
        return "Reverse near -1 m/s."
    if category == "smooth":
        return "Smooth: gentle, capped speed."
    raise ValueError(f"no thought template for {category!r}")


def compact(value: float, decimals: int = 3) -> int | float:
    """A number as short as JSON can write it: 60 rather than 60.0 (two fewer tokens to decode). Halves round
    away from zero as written in decimal: round() would send 0.765 up and 0.735 down (their binary floats fall
    either side), so a margin of half width - 0.185 would be taught as -0.18 on one width and -0.19 on the next."""
    exact = Decimal(repr(round(float(value), 9))).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
    rounded = float(exact)
    return int(rounded) if rounded.is_integer() else rounded


def centerline_inset(observation: Observation) -> float:
    """How far inside the prompt's half width (as it shows it, to 0.01 m) the expert's margin lies once written to
    0.01 m (0.18 on every track: its 0.185 rounded half up), before clipping: the number the SFT thought states
    and the calculator subtracts (the clipped margin on a wide track is the calculator's clip, not another inset)."""
    half_width = round(observation.state["half_width"], 2)
    margin = centerline_margin(observation.state["half_width"], float(observation.privileged.get("car_width", 0.31)))
    return compact(half_width - compact(margin, 2), 2)


def answer(thought: str, action: dict) -> str:
    return f"<think>{thought}</think>\n{json.dumps(action)}"


def car_examples(n: int, seed: int, split: str = "train", tracks: tuple[str, ...] = TRAIN_TRACKS) -> list[Example]:
    # No shield: an example is an episode's start and the expert's answer, nothing is driven.
    env = CarInstructionEnv(CarTaskConfig(tracks=tracks, split=split, duration_s=1.0, safety=None))
    expert = ScriptedCarExpert()
    rng = np.random.default_rng(seed)
    out = []
    try:
        for _ in range(n):
            _, info = env.reset(seed=int(rng.integers(2**31)))
            obs = info["observation"]
            params = expert.decide(obs).action
            # The margin to 2 decimals, as the thought states it (the expert's own differs by < 5 mm).
            changed = {k: compact(v, 2 if k == "track_safety_margin" else 3) for k, v in params.items()
                       if abs(v - getattr(DEFAULT, k)) > 1e-9}
            thought = car_thought(info["category"], info["target_speed"], changed, written_speed(info["instruction"]),
                                  obs.state["half_width"], centerline_inset(obs))
            out.append(Example(obs, answer(thought, changed)))
    finally:
        env.close()
    return out


DEFECT_WORDS = {
    "scratch": "a scratch",
    "dent": "a dent",
    "spot": "a colour spot",
    "missing_hole": "no hole",
}


def factory_examples(n: int, seed: int, source: str = "placed", trigger_jitter_s: float = 0.0) -> list[Example]:
    """n expert answers on factory frames: 'placed' parts (part_frames) or the running line's (line_frames,
    its camera trigger late by up to trigger_jitter_s)."""
    frames, specs = factory_frames(n, seed, source, trigger_jitter_s)
    out = []
    for frame, spec in zip(frames, specs):
        state = {"belt_speed": 0.2, **{f"kind_{k}": float(k == spec.kind) for k in KIND_ORDER}}
        obs = Observation(0.0, state, image=frame, instruction=INSTRUCTION,
                          privileged={"defect": spec.defect, "defective": spec.defective, "kind": spec.kind})
        if spec.defective:
            thought, decision = f"I see {DEFECT_WORDS[spec.defect]}. Reject.", "reject"
        else:
            thought, decision = "Clean top, hole in place. Accept.", "accept"
        out.append(Example(obs, answer(thought, {"decision": decision})))
    return out
