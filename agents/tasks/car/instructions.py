"""Driving instructions: four categories, paraphrases split into train and held-out sets.

Categories and evaluation speeds follow RobotxR1's evaluation: centerline, reference
velocity, reverse (tracked as -1 m/s), smooth. Held-out paraphrases and held-out speeds
are never used by training; `parse_instruction` maps any known wording back to its
category and target, and rejects unknown text with the list of categories.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from twin.core.config import ConfigError

CATEGORIES: tuple[str, ...] = ("centerline", "velocity", "reverse", "smooth")
REVERSE_SPEED = -1.0
"""Target speed of the 'reverse' category (m/s), as in RobotxR1's evaluation."""


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One instruction as given to the agent, with its ground truth."""

    category: str
    """One of CATEGORIES."""
    text: str
    """The words the agent reads."""
    target_speed: float | None = None
    """Speed to hold (m/s) for 'velocity' (and -1 for 'reverse'); None otherwise."""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ConfigError(f"unknown instruction category {self.category!r}; choose from {list(CATEGORIES)}")
        if self.category == "velocity" and (self.target_speed is None or not 0.2 <= self.target_speed <= 8.0):
            raise ConfigError(f"velocity instruction needs a target speed in [0.2, 8.0] m/s, got {self.target_speed}")


TRAIN_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "centerline": ("Drive on the centerline.", "Stay in the middle of the track.",
                   "Keep the car centred between the walls."),
    "velocity": ("Drive at {v} m/s.", "Hold a speed of {v} m/s.", "Keep your speed at {v} meters per second."),
    "reverse": ("Reverse the car.", "Drive backwards.", "Back up along the track."),
    "smooth": ("Drive smoothly.", "Drive gently, no harsh acceleration.", "Make the ride comfortable."),
}
HELD_OUT_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "centerline": ("Follow the middle line of the track as closely as you can.",
                   "Stay equally far from both walls."),
    "velocity": ("Cruise at exactly {v} m/s.", "I want you going {v} m/s, steady."),
    "reverse": ("Go in reverse, slowly.", "Put it in reverse and roll back."),
    "smooth": ("Be gentle: passengers are sleeping.", "Avoid jerky steering and braking."),
}
HELD_OUT_SPEEDS: tuple[float, ...] = (3.5, 2.2, 1.25, 2.9, 4.5)
"""RobotxR1's evaluation speeds; training draws speeds away from them."""


def _draw_train_speed(rng: np.random.Generator) -> float:
    while True:
        v = round(float(rng.uniform(0.8, 4.8)), 2)
        if min(abs(v - h) for h in HELD_OUT_SPEEDS) >= 0.1:
            return v


def sample_instruction(rng: np.random.Generator, split: str = "train", category: str | None = None) -> Instruction:
    """A random instruction from the 'train' or 'heldout' paraphrases (optionally of one category)."""
    if split not in ("train", "heldout"):
        raise ConfigError(f"split {split!r} must be 'train' or 'heldout'")
    table = TRAIN_PARAPHRASES if split == "train" else HELD_OUT_PARAPHRASES
    cat = category or CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    if cat not in CATEGORIES:
        raise ConfigError(f"unknown instruction category {cat!r}; choose from {list(CATEGORIES)}")
    template = table[cat][int(rng.integers(len(table[cat])))]
    if cat == "velocity":
        v = _draw_train_speed(rng) if split == "train" else HELD_OUT_SPEEDS[int(rng.integers(len(HELD_OUT_SPEEDS)))]
        return Instruction(cat, template.format(v=f"{v:g}"), v)
    return Instruction(cat, template, REVERSE_SPEED if cat == "reverse" else None)


def _pattern(template: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in template.split("{v}")]
    return re.compile(r"(-?\d+(?:\.\d+)?)".join(parts) + "$", re.IGNORECASE)


_PATTERNS = [
    (cat, _pattern(t)) for table in (TRAIN_PARAPHRASES, HELD_OUT_PARAPHRASES) for cat, ts in table.items() for t in ts
]


def parse_instruction(text: str) -> Instruction:
    """The Instruction for a known wording (any split); ConfigError for anything else."""
    clean = " ".join(str(text).split())
    for cat, pat in _PATTERNS:
        m = pat.match(clean)
        if m:
            speed = float(m.group(1)) if cat == "velocity" else (REVERSE_SPEED if cat == "reverse" else None)
            return Instruction(cat, clean, speed)
    raise ConfigError(
        f"unknown instruction {text!r}: it matches no known paraphrase of {list(CATEGORIES)}; "
        "use one from agents.tasks.car.instructions or build an Instruction(category, text, target_speed)"
    )
