"""Parts on the line: kinds, visible defects, and how a part is built in PyBullet.

A part is a flat box with a drilled hole on top. Defects are marks a camera can see on
the top face: a scratch (a dark line), a dent (a darker patch), a colour spot, or a
missing hole. Each mark is its own coloured visual shape of the part's body, so it moves
with the part; the ground truth (`PartSpec.defect`) is known to the twin.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet as pb

from twin.core.config import ConfigError
from twin.factory.params import PartParams

KINDS: dict[str, tuple[float, float, float]] = {
    "plate": (0.075, 0.075, 0.012),
    "block": (0.07, 0.05, 0.025),
    "bar": (0.095, 0.04, 0.016),
}
"""Part kinds: full length, width, height (m) before size_scale."""
DEFECTS: tuple[str, ...] = ("none", "scratch", "dent", "spot", "missing_hole")
HOLE_RADIUS = 0.009


@dataclasses.dataclass(frozen=True)
class PartSpec:
    """One part, as made: kind, defect and where on the top face the defect sits."""

    kind: str
    """One of KINDS."""
    defect: str = "none"
    """One of DEFECTS."""
    size_scale: float = 1.0
    """Scale of length and width."""
    defect_u: float = 0.0
    """Defect position along the part, as a fraction of its half length, in [-0.8, 0.8]."""
    defect_v: float = 0.0
    """Defect position across the part, as a fraction of its half width, in [-0.8, 0.8]."""
    defect_angle: float = 0.0
    """Orientation of a scratch on the top face (rad)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"PartSpec.kind {self.kind!r} is not a part kind; choose from {sorted(KINDS)}")
        if self.defect not in DEFECTS:
            raise ConfigError(f"PartSpec.defect {self.defect!r} is not a defect; choose from {list(DEFECTS)}")
        if not (isinstance(self.size_scale, (int, float)) and 0.5 <= self.size_scale <= 1.5):
            raise ConfigError(f"PartSpec.size_scale {self.size_scale!r} must be in [0.5, 1.5]")
        for name in ("defect_u", "defect_v"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and -0.8 <= value <= 0.8):
                raise ConfigError(f"PartSpec.{name} {value!r} must be in [-0.8, 0.8]")
        if not math.isfinite(self.defect_angle):
            raise ConfigError("PartSpec.defect_angle must be finite")

    @property
    def defective(self) -> bool:
        return self.defect != "none"

    def size(self) -> tuple[float, float, float]:
        length, width, height = KINDS[self.kind]
        return length * self.size_scale, width * self.size_scale, height


def draw_part(rng: np.random.Generator, params: PartParams) -> PartSpec:
    """A random part: kind uniform, defective with `defect_rate`, defect kind uniform."""
    kind = sorted(KINDS)[int(rng.integers(len(KINDS)))]
    defect = "none"
    if rng.random() < params.defect_rate:
        defect = DEFECTS[1 + int(rng.integers(len(DEFECTS) - 1))]
    u, v = rng.uniform(-0.55, 0.55, 2)
    return PartSpec(kind, defect, params.size_scale, float(u), float(v), float(rng.uniform(0, math.pi)))


def build_part(client: pb, spec: PartSpec, params: PartParams, position: tuple[float, float, float],
               yaw: float, friction: float) -> int:
    """Create the part's body (one box collision shape, several coloured visual shapes)."""
    length, width, height = spec.size()
    top = height / 2 + 0.0006
    base = (*params.base_rgb, 1.0)
    shapes: list[tuple[int, list, float, float, list, list, tuple]] = [
        (pb.GEOM_BOX, [length / 2, width / 2, height / 2], 0.0, 0.0, [0, 0, 0], [0, 0, 0, 1], base),
    ]
    if spec.defect != "missing_hole":
        shapes.append((pb.GEOM_CYLINDER, [0, 0, 0], HOLE_RADIUS * spec.size_scale, 0.001, [0, 0, top],
                       [0, 0, 0, 1], (0.03, 0.03, 0.03, 1.0)))
    du, dv = spec.defect_u * length / 2, spec.defect_v * width / 2
    if spec.defect == "scratch":
        q = pb.getQuaternionFromEuler([0, 0, spec.defect_angle])
        half = 0.3 * min(length, width)
        shapes.append((pb.GEOM_BOX, [half, params.scratch_width / 2, 0.0005], 0.0, 0.0, [du * 0.4, dv * 0.4, top],
                       list(q), (0.22, 0.2, 0.2, 1.0)))
    elif spec.defect == "dent":
        dark = tuple(c * (1 - params.dent_darkness) for c in params.base_rgb)
        shapes.append((pb.GEOM_BOX, [0.011, 0.011, 0.0005], 0.0, 0.0, [du, dv, top], [0, 0, 0, 1], (*dark, 1.0)))
    elif spec.defect == "spot":
        shapes.append((pb.GEOM_CYLINDER, [0, 0, 0], params.spot_radius, 0.001, [du, dv, top], [0, 0, 0, 1],
                       (*params.spot_rgb, 1.0)))
    vis = client.createVisualShapeArray(
        shapeTypes=[s[0] for s in shapes], halfExtents=[s[1] for s in shapes], radii=[s[2] for s in shapes],
        lengths=[s[3] for s in shapes], visualFramePositions=[s[4] for s in shapes],
        visualFrameOrientations=[s[5] for s in shapes])
    col = client.createCollisionShape(pb.GEOM_BOX, halfExtents=[length / 2, width / 2, height / 2])
    body = client.createMultiBody(params.mass, col, vis, basePosition=position,
                                  baseOrientation=pb.getQuaternionFromEuler([0, 0, yaw]))
    for i, s in enumerate(shapes):
        client.changeVisualShape(body, -1, shapeIndex=i, rgbaColor=list(s[6]))
    client.changeDynamics(body, -1, lateralFriction=friction)
    return body
