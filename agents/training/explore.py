"""Exploration answers for GRPO: the policy's own answer with some of its numbers moved at random.

Why: after SFT the policy writes each category's template almost deterministically. In the last 30 steps
of the shipped car run (runs/grpo-car-v4, temperature 1.2), none of the ~220 sampled centerline answers
wrote a heading weight or a racing-line weight other than the template's, although on the training
tracks raising either one alone scores 1-2 points more, and both with a wider margin ~15 points more
(docs/agent.md, "How much room the expert leaves"). A higher temperature flattens every token, the
thought's with the numbers'. This moves only the action's numbers, each by Gaussian noise scaled to its
parameter's range (as evolution strategies perturb parameters), and lets the group's rewards say which
moves helped.

Such answers are off-policy. GRPO's -A log p on them is the guidance term of LUFFY (Yan et al. 2025,
off-policy traces mixed into GRPO groups), not an unbiased policy gradient of the sampler. The gradient
of a token's log-probability is bounded whatever its probability, so an unlikely answer cannot blow an
update up. The thought keeps its words; a number it states for a moved parameter is rewritten to the
new value, so the faithfulness term judges the answer as it judges a sampled one.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import numpy as np

from agents.control.mpc_params import SPECS
from agents.training.sft_data import answer, compact
from agents.vlm.grammar import ORDERED, SUBTRACTION, subtracted_margin
from agents.vlm.parsing import parse_car

MARGIN = "track_safety_margin"


def _restate(thought: str, moves: list[tuple[float | int, float | int]]) -> str:
    """The thought with each number it states once, written as a moved parameter's old value, rewritten as the
    new value, all at once on the original text (so one rewrite is never read as another's old value). A value
    stated twice, or moved from by two parameters, stays: which mention was whose is unknown."""
    olds = [json.dumps(old) for old, _ in moves]
    edits = []
    for (_, new), text in zip(moves, olds):
        found = list(re.finditer(rf"(?<![\d.]){re.escape(text)}(?![\d])(?!\.\d)", thought))
        if len(found) == 1 and olds.count(text) == 1:
            edits.append((found[0].start(), found[0].end(), json.dumps(new)))
    for begin, stop, text in sorted(edits, reverse=True):
        thought = thought[:begin] + text + thought[stop:]
    return thought


def perturb_answer(raw: str, rng: np.random.Generator, scale: float, share: float = 0.5) -> str | None:
    """`raw` with each number of its action moved, with probability `share` (at least one moves), by
    N(0, (scale x its parameter's range)^2), clipped into the range and rounded (whole numbers for the 0-100
    weights, two decimals otherwise: short, as the SFT answers are); the same keys in the same order. None for
    an answer that did not parse or writes no number."""
    parsed = parse_car(raw)
    if parsed.failed or parsed.action_span is None:
        return None
    try:
        written = json.loads(raw[slice(*parsed.action_span)])
    except ValueError:
        return None
    keys = [k for k in written if k in SPECS and isinstance(written[k], (int, float))]
    if not keys:
        return None
    move = rng.random(len(keys)) < share
    move[rng.integers(len(keys))] = True
    new = dict(written)
    for key, moved in zip(keys, move):
        if moved:
            spec = SPECS[key]
            value = float(np.clip(written[key] + rng.normal(0.0, scale * (spec.high - spec.low)), spec.low, spec.high))
            new[key] = compact(value, 0 if spec.high - spec.low >= 50 else 2)  # weights 0-100 as whole numbers
    # Pairs the MPC needs in order: a crossing move is swapped back; a high moved under an unwritten low's default
    # stops at that default.
    for low, high in ORDERED:
        if high in new and new[high] < new.get(low, SPECS[low].default):
            if low in new:
                new[low], new[high] = new[high], new[low]
            else:
                new[high] = compact(SPECS[low].default, 2)
    inset = SUBTRACTION.search(parsed.thought) is not None  # the margin is restated through its inset, below
    thought = _restate(parsed.thought, [(written[k], new[k]) for k in keys
                                        if new[k] != written[k] and not (k == MARGIN and inset)])
    if inset and new.get(MARGIN) != written.get(MARGIN) and (m := SUBTRACTION.search(thought)):
        thought = _restate_inset(thought, m, new)
    return answer(thought, new)


def _restate_inset(thought: str, found: re.Match, new: dict) -> str:
    """A centerline thought that has the calculator subtract its margin ("half width 0.95 less 0.18 is 0.77 ...
    margin 0.77 m") restated for a moved margin: the inset becomes the half width less the new margin (never below
    zero: the calculator cannot add), the margin the calculator's result, in the thought and in `new`, so the
    answer still decodes under the calculator."""
    half_width = found.group(1)
    inset = compact(max(0.0, float(Decimal(half_width) - Decimal(repr(new[MARGIN])))), 2)
    stated = f"half width {half_width} less {inset:g} is"
    margin = float(subtracted_margin("car", stated))
    rest = thought[found.end():]
    old = re.match(r" (\d+(?:\.\d+)?)", rest)
    if old:
        rest = rest[old.end():].replace(f"margin {old.group(1)} m", f"margin {margin:g} m", 1)
    new[MARGIN] = compact(margin, 2)
    return f"{thought[:found.start()]}{stated} {margin:g}{rest}"
