"""The grammar of an answer, built from the MPC parameter table and the factory's decision set.

An answer is `<think>` + a thought + `</think>` + a newline + a JSON action (the SFT answers' layout).
The JSON part is a JSON schema, which llguidance compiles together with the Lark rules around it
(agents.vlm.constrained decodes under it):
- car: an object of 1..11 MPC parameter names in PARAM_TABLE's order (llguidance emits properties in
  schema order, which makes the keys distinct by construction; the SFT answers use that order too),
  each a number within its [low, high] with at most DECIMALS decimals;
- the MPC refuses v_min > v_max (the parser swaps them and calls the answer repaired), so v_max's
  lower bound is the v_min the answer wrote, or v_min's default when it wrote none: the grammar is
  specialised once v_min's value is complete (`written_bounds`);
- factory: {"decision": one of FACTORY_DECISIONS}.
The thought has at most THOUGHT_CHARS characters and none of `<`, `{`, `}`: the parser takes the
action as the last balanced {...}, and a brace in the thought would hide it.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from agents.control.mpc_params import PARAM_TABLE, SPECS
from agents.tasks.car.instructions import ending_speed
from agents.vlm.parsing import FACTORY_DECISIONS, FACTORY_FALLBACK

TASKS = ("car", "factory")
THOUGHT_CHARS = 200
"""Longest thought (the SFT thoughts run to ~80 characters; every thought token costs decision time)."""
DECIMALS = 3
"""Decimals a number may have (the SFT answers round to 3): bounds every number's length."""
JSON_LAYOUT = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
"""json.dumps' layout, as in the SFT answers: one way to write an object, so `": ` and `, "` are forced."""
ORDERED = (("v_min", "v_max"),)
"""(low, high) parameter pairs the MPC needs in order (MPCParams refuses low > high). A pair's low
comes first in PARAM_TABLE, so once its value is written the high one's lower bound is known."""


def _check_ordered() -> None:
    order = [p.name for p in PARAM_TABLE]
    for low, high in ORDERED:
        if order.index(low) > order.index(high) or SPECS[low].high > SPECS[high].default:
            raise RuntimeError(f"grammar: the pair ({low}, {high}) needs {low} before {high} in PARAM_TABLE and "
                               f"{low}'s high <= {high}'s default (an answer without {high} keeps its default)")


_check_ordered()


def _number(low: float, high: float) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high, "multipleOf": 10.0 ** -DECIMALS}


def car_schema(written: dict[str, float] | None = None) -> dict[str, Any]:
    """JSON schema of the MPC parameters; `written`: the values of ORDERED's low keys the answer wrote."""
    written = written or {}
    props = {p.name: _number(p.low, p.high) for p in PARAM_TABLE}
    for low, high in ORDERED:
        props[high]["minimum"] = max(SPECS[high].low, written.get(low, SPECS[low].default))
    return {"type": "object", "properties": props, "additionalProperties": False, "minProperties": 1,
            "x-guidance": JSON_LAYOUT}


def factory_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"decision": {"enum": list(FACTORY_DECISIONS)}}, "required": ["decision"],
            "additionalProperties": False, "x-guidance": JSON_LAYOUT}


def answer_lark(task: str, written: dict[str, float] | None = None) -> str:
    """The whole answer's grammar in llguidance's Lark dialect."""
    if task not in TASKS:
        raise ValueError(f"no grammar for task {task!r}; tasks: {TASKS}")
    schema = car_schema(written) if task == "car" else factory_schema()
    return (f"start: \"<think>\" THOUGHT {json.dumps('</think>' + chr(10))} action\n"
            f"THOUGHT: /[^<{{}}]{{0,{THOUGHT_CHARS}}}/\n"
            f"action: %json {json.dumps(schema)}\n")


_NUMBER_END = r"(-?\d+(?:\.\d+)?)[,}]"


def written_bounds(task: str, text: str) -> dict[str, float]:
    """The complete values of ORDERED's low keys in the action so far (what later bounds depend on);
    the thought may quote a key too, so only the text after `</think>` counts."""
    _, closed, action = text.partition("</think>")
    if task != "car" or not closed:
        return {}
    found = {}
    for low, _ in ORDERED:
        m = re.search(rf'"{low}": {_NUMBER_END}', action)
        if m:
            found[low] = float(m.group(1))
    return found


CONVERSION_CUE = " is"
"""What a car thought writes before the decoder's calculator completes it: after a speed it read in other units
("nine km/h is 2.5 m/s.") and after a subtraction ("half width 0.95 less 0.18 is 0.77"), the SFT templates."""
SUBTRACTION = re.compile(r"half width (\d+(?:\.\d+)?) less (\d+(?:\.\d+)?) is")
"""The centerline thought's subtraction as far as the calculator's cue: its groups are the half width and the inset."""


def calculated(task: str, text: str) -> str | None:
    """The decoder's calculator: the text that completes a car thought ending in CONVERSION_CUE, appended as forced
    tokens (a converted speed, or a centerline margin subtracted from the half width); None otherwise."""
    return converted_speed(task, text) or subtracted_margin(task, text)


def subtracted_margin(task: str, text: str) -> str | None:
    """The centerline margin a car thought asks for: ' 0.77' after '...half width 0.95 less 0.18 is'. The model
    copies the half width from the prompt and chooses how far inside it the margin goes (the expert: 0.18, what
    SFT teaches; GRPO may move it); the subtraction, which a 135M model gets wrong by a few centimetres from one
    wording to the next (0.72, 0.78 or 1.0 on the same 0.95 m half width after GRPO), is done here, exactly in
    decimal, rounded half up to 0.01 m and clipped into the margin's range, as the SFT answers write it."""
    m = SUBTRACTION.search(text)
    if task != "car" or "</think>" in text or m is None or m.end() != len(text):
        return None
    spec = SPECS["track_safety_margin"]
    value = (Decimal(m.group(1)) - Decimal(m.group(2))).quantize(Decimal("0.01"), ROUND_HALF_UP)
    value = min(max(value, Decimal(repr(spec.low))), Decimal(repr(spec.high)))
    return f" {float(value):g}"


def converted_speed(task: str, text: str) -> str | None:
    """The decoder's calculator: when a car thought has just written a speed and CONVERSION_CUE, the text that
    follows, that speed in m/s (' 2.5 m/s' after '<think>nine km/h is'), appended as forced tokens; None otherwise.
    The model reads the number and the unit from the instruction (a copy); the multiplication, which a 135M model
    gets wrong on speeds it has not seen ("ten point zero seven mph is 0.95 m/s"), is done here, from what the
    thought wrote, not from the instruction: a misread speed stays misread."""
    if task != "car" or not text.endswith(CONVERSION_CUE) or "</think>" in text:
        return None
    value = ending_speed(text.removeprefix("<think>")[: -len(CONVERSION_CUE)])
    return None if value is None else f" {value:g} m/s"


def neutral_endings(task: str) -> tuple[str, ...]:
    """Texts that end an answer without choosing anything: a key at its default, the factory's hold.
    When the token budget runs out, the decoder completes the answer with the one that best continues
    the text so far (agents.vlm.constrained)."""
    if task == "car":
        entries = [f'"{p.name}": {p.default:g}}}' for p in PARAM_TABLE]
        shortest = min(entries, key=len)
        return ("}", "</think>\n{" + shortest, *entries)
    return ("}", f'</think>\n{{"decision": "{FACTORY_FALLBACK}"}}', f'"{FACTORY_FALLBACK}"}}')


def probe_texts(task: str) -> tuple[str, ...]:
    """Answer prefixes from which one more token starts the longest closing (a thought, a first key,
    a comma after each key): the decoder measures its overrun past the budget from them."""
    start = "<think>x</think>\n{"
    if task == "car":
        return ("<think>x", start + '"', *(start + f'"{p.name}": {p.default:g}' for p in PARAM_TABLE))
    return ("<think>x", start + '"decision": "')
