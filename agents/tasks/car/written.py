"""Train wordings written by a second, larger language model that was shown only the train wordings.

    python -m agents.tasks.car.written --raw wordings.json --out agents/tasks/car/written.json

SmolLM2-135M paraphrases too narrowly to teach how people write (agents.tasks.car.paraphrase keeps 22
of 60, most of them "Keep ..."). So a larger model, in a session that was shown the train wordings and
the four categories and nothing of the held-out split, wrote 30 sentences per category as race
engineers, hobbyists and passengers say them (`raw`: {"writer": ..., category: [sentences]}; velocity
sentences hold a '{speed}' slot). Such a writer says some held-out wordings unprompted ("aim for the
dead centre"), because they are how people talk; those are dropped here, so the held-out split stays
unseen. A sentence is kept only if `parse_instruction` reads its category (and, for velocity, the
speed put in its slot), it says no held-out core, it shares no phrase (two adjacent content words)
with the held-out split, and it is new (not a train core, not a sentence kept before). The file
records the writer, how many were written and kept, and why each dropped sentence was dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

from agents.tasks.car.instructions import (
    CATEGORIES,
    REVERSE_SPEED,
    TRAIN_GRAMMAR,
    WRITTEN_PATH,
    Instruction,
    expand,
    frame,
    held_out_phrase,
)
from agents.tasks.car.paraphrase import verdict
from twin.core.config import ConfigError, parse_config

CHECK_SPEED = ("2.5 m/s", 2.5)
"""The speed put in a velocity sentence's slot to check that it reads back (written, in m/s)."""


@dataclasses.dataclass(frozen=True)
class WrittenArgs:
    """Filter a writer's sentences into the train split's written wordings."""

    raw: Path
    """The writer's JSON: {"writer": "...", "centerline": [...], "velocity": [... '{speed}' ...], ...}."""
    out: Path = WRITTEN_PATH
    """JSON file to write (the train split reads agents/tasks/car/written.json)."""


def judge(sentence: str, category: str, kept: set[str]) -> str:
    """'kept', or why a written sentence of `category` is dropped (`kept`: frames already taken)."""
    if category == "velocity" and sentence.count("{speed}") != 1:
        return "no single speed slot"
    text = sentence.replace("{speed}", CHECK_SPEED[0])
    speed = {"velocity": CHECK_SPEED[1], "reverse": REVERSE_SPEED}.get(category)
    why = verdict(text, Instruction(category, "", speed), kept)  # no source sentence to differ from
    if why == "kept" and held_out_phrase(text):  # e.g. 'tail first'
        return "shares a held-out phrase"
    return why


def train_frames() -> set[str]:
    """The frames of every train core with each word choice (a written sentence must be new to these)."""
    return {frame(c.lstrip("=~").replace("{speed}", CHECK_SPEED[0]))
            for cores in TRAIN_GRAMMAR.cores.values() for core in cores for c in expand(core)}


def written(args: WrittenArgs) -> dict:
    """Judge every sentence of args.raw, write the kept ones to args.out; returns what was written."""
    try:
        raw = json.loads(args.raw.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the writer's file {args.raw}: {e}; give a JSON object of category -> "
                          "list of sentences") from None
    if missing := [c for c in CATEGORIES if not isinstance(raw.get(c), list)]:
        raise ConfigError(f"{args.raw} has no list of sentences for {missing}; give one per category {list(CATEGORIES)}")
    taken = train_frames()
    wordings: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    dropped: dict[str, list[str]] = collections.defaultdict(list)
    for cat in CATEGORIES:
        for sentence in raw[cat]:
            sentence = " ".join(str(sentence).split())
            why = judge(sentence, cat, taken)
            if why == "kept":
                wordings[cat].append(sentence)
                taken.add(frame(sentence.replace("{speed}", CHECK_SPEED[0])))
            else:
                dropped[why].append(sentence)
    data = {"writer": raw.get("writer", "not said"), "written": sum(len(raw[c]) for c in CATEGORIES),
            "kept": sum(map(len, wordings.values())), "dropped": dict(sorted(dropped.items())), "wordings": wordings}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    data = written(parse_config(WrittenArgs, argv, __doc__, prog))
    counts = {cat: len(ws) for cat, ws in data["wordings"].items()}
    print(f"written {data['written']}, kept {data['kept']} {counts}; dropped: "
          f"{ {why: len(s) for why, s in data['dropped'].items()} }")


if __name__ == "__main__":
    main()
