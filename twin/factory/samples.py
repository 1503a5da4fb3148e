"""Labelled frames of single parts under the inspection camera, fast (no line running).

For checking that defects are visible, and as training data with privileged labels for
vision models. Each frame draws its own randomized world (lighting, colours, camera,
defect appearance) from one seeded generator, so a seed gives the same data set.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from twin.factory.params import FACTORY_RANDOMIZATION
from twin.factory.parts import PartSpec, build_part, draw_part
from twin.factory.twin import FactoryTwin, FactoryTwinConfig, Part
from twin.factory.world import BELT_TOP, INSPECT_X


def part_frames(n: int, seed: int, defect_rate: float = 0.5, randomize: bool = True) -> tuple[np.ndarray, list[PartSpec]]:
    """n frames (n, H, W, 3) uint8 and the spec (ground truth) of the part in each."""
    twin = FactoryTwin(FactoryTwinConfig(randomization=FACTORY_RANDOMIZATION if randomize else ()))
    rng = np.random.default_rng(seed)
    frames, specs = [], []
    try:
        for _ in range(n):
            twin.reset(rng)
            parts = dataclasses.replace(twin.params.parts, defect_rate=defect_rate)
            spec = draw_part(rng, parts)
            pos = (INSPECT_X + float(rng.uniform(-0.01, 0.01)), float(rng.uniform(-0.02, 0.02)),
                   BELT_TOP + spec.size()[2] / 2 + 0.001)
            body = build_part(twin.c, spec, parts, pos, float(rng.uniform(-0.3, 0.3)), 1.0)
            twin.parts[-1] = Part(-1, spec, body, 0.0, params=parts)
            frames.append(twin.inspection_image())
            specs.append(spec)
            twin.c.removeBody(body)
            del twin.parts[-1]
    finally:
        twin.close()
    return np.stack(frames), specs
