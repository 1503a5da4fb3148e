"""Parsing a model's answer: a chain of thought, then an action. Strict but total.

Every text maps to a valid action and a parse status, and never raises:
- 'ok': a JSON action was found and used as it is;
- 'repaired': found, but entries had to be clamped, dropped (unknown names) or defaulted;
- 'fallback: <why>': nothing usable (empty, truncated, no JSON, wrong types): the task's
  safe default action is used. Callers log it and penalise it; it is never a random action
  (one of RL4VLM's bugs).

Accepted shapes: `<think>...</think>` then a JSON object; RL4VLM's
`{"thoughts": ..., "action": ...}`; RobotxR1's `new_mpc_params = {...}` (Python dict
syntax too). The action's character span in the text is returned, so a trainer can split
the chain-of-thought tokens from the action tokens by text offsets, not by token ids.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

from agents.control.mpc_params import DEFAULT, clamp_dict

FACTORY_DECISIONS = ("accept", "reject", "hold")
FACTORY_FALLBACK = "hold"
"""A part nobody could judge goes to a person, never through unchecked."""


@dataclasses.dataclass(frozen=True)
class Parsed:
    """The outcome of parsing one answer."""

    action: dict[str, Any]
    """Always a valid action for the task."""
    thought: str
    """The chain of thought (text before the action, think tags removed)."""
    status: str
    """'ok', 'repaired' or 'fallback: <why>'."""
    notes: dict[str, str]
    """What was changed, per field."""
    action_span: tuple[int, int] | None
    """[start, end) character offsets of the action's JSON in the text; None on fallback."""

    @property
    def failed(self) -> bool:
        return self.status.startswith("fallback")


def _balanced_objects(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every top-level balanced {...} in text, skipping braces inside strings."""
    depth, start, quote, escaped = 0, -1, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'" and depth > 0:
            quote = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                yield start, i + 1


def _load(fragment: str) -> Any:
    try:
        return json.loads(fragment)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(fragment)  # RobotxR1-style Python dicts; literals only, nothing runs
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _strip_tags(text: str) -> str:
    return re.sub(r"</?think>", "", text).strip()


def _find_action(text: str) -> tuple[Any, str, tuple[int, int]] | None:
    """The last parsable object in the text: (action, thought, span)."""
    found = None
    for start, end in _balanced_objects(text):
        obj = _load(text[start:end])
        if isinstance(obj, dict):
            found = (start, end, obj)
    if found is None:
        return None
    start, end, obj = found
    if "action" in obj:  # RL4VLM's shape: the thoughts live inside the object
        thought = str(obj.get("thoughts", obj.get("thought", "")))
        m = re.search(r"[\"']action[\"']\s*:\s*", text[start:end])
        span = (start, end)
        if m:
            value_start = start + m.end()
            try:
                _, length = json.JSONDecoder().raw_decode(text[value_start:end])
                span = (value_start, value_start + length)
            except ValueError:
                pass
        return obj["action"], thought, span
    thought = _strip_tags(re.sub(r"new_mpc_params\s*=\s*$", "", text[:start].rstrip()))
    return obj, thought, (start, end)


def parse_car(text: Any) -> Parsed:
    """An MPC parameter set from any answer (fallback: the default parameters)."""
    text = text if isinstance(text, str) else ""
    found = _find_action(text)
    if found is None:
        why = "empty answer" if not text.strip() else "no JSON object in the answer"
        return Parsed(DEFAULT.as_dict(), _strip_tags(text), f"fallback: {why}", {}, None)
    action, thought, span = found
    if not isinstance(action, dict):
        return Parsed(DEFAULT.as_dict(), thought, "fallback: the action is not an object of parameters", {}, None)
    params, notes = clamp_dict(action)
    if not action:
        notes = {"*": "no parameters given: defaults kept"}
    return Parsed(params.as_dict(), thought, "repaired" if notes else "ok", notes, span)


def parse_factory(text: Any) -> Parsed:
    """A part decision from any answer (fallback: hold the part for a person)."""
    text = text if isinstance(text, str) else ""
    found = _find_action(text)
    if found is None:
        why = "empty answer" if not text.strip() else "no JSON object in the answer"
        return Parsed({"decision": FACTORY_FALLBACK}, _strip_tags(text), f"fallback: {why}", {}, None)
    action, thought, span = found
    value = action.get("decision") if isinstance(action, dict) else action
    notes = {}
    if isinstance(action, dict):
        extra = sorted(set(action) - {"decision"})
        if extra:
            notes["*"] = f"ignored keys {extra}"
    decision = str(value).strip().lower() if isinstance(value, str) else None
    if decision not in FACTORY_DECISIONS:
        return Parsed({"decision": FACTORY_FALLBACK}, thought,
                      f"fallback: decision {value!r} is not one of {list(FACTORY_DECISIONS)}", notes, None)
    return Parsed({"decision": decision}, thought, "repaired" if notes else "ok", notes, span)


PARSERS = {"car": parse_car, "factory": parse_factory}
