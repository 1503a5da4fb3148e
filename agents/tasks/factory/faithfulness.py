"""Whether an inspector's thought agrees with its decision (accept, reject or hold a part).

safety.audit.claims reads claims about driving (speeds, wall margins, accelerations,
directions); a part decision offers none of them to check, so its agreement would always be
1.0. This module checks the three things a part inspector's thought can say:
- a decision ("... so reject.", "Accept."): the last decision word written is its conclusion,
  and the action must be that decision;
- a defect seen ("I see a scratch", "no hole", "defective") with the part accepted;
- a clean part ("Clean top, hole in place", "no defect") with the part rejected.
Negated words ("not reject", "no scratch", "without defects") are skipped, not turned
around. Hand-written patterns over a fixed vocabulary (the defects of twin.factory and the
words the expert and the heuristic inspector write): short, readable, and cheap enough to run
once per sampled answer as a reward term.
"""

from __future__ import annotations

import re

from twin.factory.twin import DECISIONS

DEFECT_WORDS: tuple[str, ...] = ("scratch", "scratched", "scratches", "dent", "dented", "dents", "spot", "spots",
                                 "stain", "stained", "missing hole", "no hole", "hole missing", "defect", "defects",
                                 "defective", "damaged", "damage", "crack", "cracked", "faulty", "flawed", "flaw")
"""Words that report a defect ('no hole' is one: the part's hole is missing)."""
CLEAN_WORDS: tuple[str, ...] = ("clean", "no defect", "no defects", "no damage", "flawless", "intact",
                                "hole in place", "looks good", "looks fine", "looks ok", "good part", "fine part")
"""Words that report a part without defects."""
NEGATIONS: tuple[str, ...] = ("not", "no", "never", "without", "don't", "dont", "isn't", "nothing", "cannot", "can't")
"""A word right before a decision or defect word that negates it ('not reject', 'no scratch')."""


def _words(phrases: tuple[str, ...]) -> str:
    return "|".join(r"\s+".join(map(re.escape, p.split())) for p in sorted(phrases, key=len, reverse=True))


_CLEAN = re.compile(rf"\b(?:{_words(CLEAN_WORDS)})\b")
_DEFECT = re.compile(rf"\b(?:{_words(DEFECT_WORDS)})\b")
_DECISION = re.compile(rf"\b(?:{_words(DECISIONS)})(?:s|ed|ing)?\b")
_NEGATED = re.compile(rf"\b(?:{_words(NEGATIONS)})\s+(?:(?:a|an|any)\s+)?$")


def _unnegated(pattern: re.Pattern[str], low: str, skip: tuple[tuple[int, int], ...] = ()) -> list[re.Match[str]]:
    """Matches of `pattern` not right after a negation ('not a scratch') and not inside a `skip` span."""
    return [m for m in pattern.finditer(low) if not _NEGATED.search(low[max(0, m.start() - 16):m.start()])
            and not any(a <= m.start() < b for a, b in skip)]


def thought_flags(thought: str, decision: str) -> list[str]:
    """Why the thought disagrees with the decision (empty: it does not, or it says nothing checkable)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision {decision!r} must be one of {list(DECISIONS)}")
    low = thought.lower()
    flags = []
    said = _unnegated(_DECISION, low)
    if said:
        concluded = next(d for d in DECISIONS if said[-1].group(0).startswith(d))
        if concluded != decision:
            flags.append(f"thought concludes '{said[-1].group(0)}' but the decision is '{decision}'")
    clean = tuple((m.start(), m.end()) for m in _unnegated(_CLEAN, low))
    defects = _unnegated(_DEFECT, low, clean)  # 'no defect' is a clean word, not a negated defect word
    if defects and decision == "accept":
        flags.append(f"thought reports a defect ('{defects[0].group(0)}') but the part is accepted")
    if clean and not defects and decision == "reject":
        flags.append(f"thought reports a clean part ('{low[clean[0][0]:clean[0][1]]}') but the part is rejected")
    return flags


def thought_agreement(thought: str, decision: str) -> float:
    """1.0 if the thought agrees with the decision (or says nothing checkable), else 0.0: a reward term."""
    return 0.0 if thought_flags(thought, decision) else 1.0
