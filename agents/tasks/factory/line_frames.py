"""Labelled frames of parts as the running line shows them to the inspecting policy.

`twin.factory.samples.part_frames` places one part under the camera in an otherwise empty
cell: fast, balanced, but not what a policy meets. Here the inspection env runs the line
(belt, arm, feeder, randomized cell) and each frame is the one `FactoryInspectionEnv`
observes when a part awaits its decision, labelled with that part's spec. Every part is
accepted (the decision changes where the part goes, not how the next one looks).
Episode seeds are drawn from 10_000 up, so they never meet the evaluation's (1000 + episode).
"""

from __future__ import annotations

import numpy as np

from agents.tasks.factory.envs import FactoryInspectionEnv, inspection_task
from twin.core.config import ConfigError
from twin.factory.parts import PartSpec
from twin.factory.samples import part_frames
from twin.factory.twin import DECISIONS

SOURCES = ("placed", "line")
"""Where factory training frames come from: 'placed' (twin.factory.samples.part_frames: one part set under the
camera in an empty cell, half of them defective) or 'line' (line_frames: what the inspecting policy meets)."""
PARTS_PER_EPISODE = 32
"""Parts decided per line episode: long enough that a reset's cost is small, short enough that the
randomized cell (lighting, colours, camera) is redrawn often."""
FIRST_SEED = 10_000
"""Line episodes start from seeds at or above this (evaluation episodes use 1000 + episode)."""


def line_frames(n: int, seed: int, parts_per_episode: int = PARTS_PER_EPISODE,
                trigger_jitter_s: float = 0.0) -> tuple[np.ndarray, list[PartSpec]]:
    """n inspection frames (n, H, W, 3) uint8 from the running line (its camera trigger late by up to
    trigger_jitter_s) and the spec of the part in each."""
    env = FactoryInspectionEnv(inspection_task(parts_per_episode, trigger_jitter_s))
    rng = np.random.default_rng([seed, 7])
    frames: list[np.ndarray] = []
    specs: list[PartSpec] = []
    accept = DECISIONS.index("accept")
    try:
        while len(frames) < n:
            env.reset(seed=int(rng.integers(FIRST_SEED, 2**31)))
            while env.part is not None and len(frames) < n:
                frames.append(np.array(env.frame, np.uint8))
                specs.append(env.part.spec)
                _, _, terminated, truncated, _ = env.step(accept)
                if terminated or truncated:
                    break
    finally:
        env.close()
    return np.stack(frames), specs


def check_source(owner: str, source: str, task: str, trigger_jitter_s: float = 0.0) -> None:
    """Refuse a frame source that is unknown, 'line' for a task other than the factory, or a camera trigger's
    latency on frames that are not the line's (`owner` names the config in the message)."""
    if source not in SOURCES:
        raise ConfigError(f"{owner}.source {source!r} must be one of {SOURCES}")
    if source == "line" and task != "factory":
        raise ConfigError(f"{owner}.source 'line' is for the factory; the car's frames come from its own episodes")
    if trigger_jitter_s and source != "line":
        raise ConfigError(f"{owner}.trigger_jitter_s is the running line's camera latency; give --source line with it")


def factory_frames(n: int, seed: int, source: str, trigger_jitter_s: float = 0.0) -> tuple[np.ndarray, list[PartSpec]]:
    """n labelled factory frames from `source` (see SOURCES); trigger_jitter_s applies to the line's camera."""
    check_source("factory_frames", source, "factory", trigger_jitter_s)
    return line_frames(n, seed, trigger_jitter_s=trigger_jitter_s) if source == "line" else part_frames(n, seed)
