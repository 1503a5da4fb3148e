"""Inspection policies without a model: the scripted expert and a colour-statistics heuristic.

Both are Policies: they read an Observation (the inspection frame, the part's kind) and
answer a Decision whose action is {"decision": "accept" | "reject" | "hold"}.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from twin.core.contracts import Decision, Observation


class ScriptedInspector:
    """Reads the ground truth (privileged): the ceiling of any inspector."""

    policy_id = "scripted-inspector-v1"
    label = "expert (privileged)"

    def decide(self, observation: Observation) -> Decision:
        defect = observation.privileged.get("defect")
        decision = "reject" if observation.privileged.get("defective") else "accept"
        thought = f"Ground truth says '{defect}', so I {decision} the part."
        return Decision(action={"decision": decision}, policy_id=self.policy_id, thought=thought)


class HeuristicInspector:
    """Colour statistics of the part's pixels: the classical-vision baseline.

    The part is what is much brighter than the belt. Inside it, a good part shows exactly
    one small dark blob near its centre (the hole); a defect shows as dark pixels away from
    the centre (scratch, dent), saturated colour (spot), or no dark centre (missing hole).
    """

    policy_id = "heuristic-inspector-v1"
    label = "heuristic (colour statistics)"

    def __init__(self, reject_score: float = 1.0, hold_score: float = 0.6) -> None:
        self.reject_score = reject_score
        self.hold_score = hold_score

    def score(self, image: np.ndarray) -> tuple[float, dict[str, float]]:
        img = image.astype(np.float32)
        gray = img.mean(axis=2)
        belt = np.median(gray[:, :4])  # the frame's edges show the belt
        part = gray > belt + 40
        if part.sum() < 20:
            return 0.0, {"part_pixels": float(part.sum())}
        ys, xs = np.nonzero(part)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        box = ndimage.binary_fill_holes(part)  # the part's outline, marks inside it included
        level = np.median(gray[part])
        dark = box & (gray < level - 50)  # dark pixels inside the part's outline
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
        near_centre = np.hypot(yy - cy, xx - cx) < 0.12 * max(y1 - y0, x1 - x0) + 2
        hole = float((dark & near_centre).sum())
        stray_dark = float((dark & ~near_centre).sum())
        sat = img.max(axis=2) - img.min(axis=2)
        colour = float((box & (sat > 60)).sum())
        feats = {"hole": hole, "stray_dark": stray_dark, "colour": colour}
        score = (hole < 3) * 1.5 + stray_dark / 6.0 + colour / 6.0
        return float(score), feats

    def decide(self, observation: Observation) -> Decision:
        if observation.image is None:
            return Decision(action={"decision": "hold"}, policy_id=self.policy_id, thought="No image: hold.",
                            parse_status="no image")
        score, feats = self.score(observation.image)
        decision = "reject" if score >= self.reject_score else ("hold" if score >= self.hold_score else "accept")
        thought = (f"hole pixels {feats.get('hole', 0):.0f}, stray dark {feats.get('stray_dark', 0):.0f}, "
                   f"coloured {feats.get('colour', 0):.0f}: score {score:.2f}, so {decision}.")
        return Decision(action={"decision": decision}, policy_id=self.policy_id, thought=thought)
