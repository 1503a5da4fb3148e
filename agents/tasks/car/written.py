"""Wordings written by larger language models: train sentences, and a blind test split.

    python -m agents.tasks.car.written --raw wordings.json                 # -> agents/tasks/car/written.json
    python -m agents.tasks.car.written --raw blind.json --split blind      # -> agents/tasks/car/blind.json

SmolLM2-135M paraphrases too narrowly to teach how people write (agents.tasks.car.paraphrase keeps 22
of 60, most of them "Keep ..."). So a larger model, in a session shown the train wordings and the
four categories and nothing of the held-out split, wrote 30 sentences per category as race engineers,
hobbyists and passengers say them (`raw`: {"writer": ..., category: [sentences]}; velocity sentences
hold a '{speed}' slot). Such a writer says some held-out wordings unprompted ("aim for the dead
centre"), because they are how people talk; those are dropped, so the held-out split stays unseen.

Our held-out grammar was written by the people who wrote the train grammar and the reader's words.
The blind split is a test none of us chose: another session, shown no wording at all, wrote 30
sentences per category; those that say a train sentence or share a phrase with the train split are
dropped, so it tests wordings the agent never saw, as people write them.

A sentence is kept if (paraphrase.verdict) `parse_instruction` reads its category and, for velocity,
the speed put in its slot (train only: a test sentence need not be in the reader's words, and its
category is the writer's), it says no sentence of the other split and shares no phrase (two adjacent
content words) with it, and it is new. The file records the writer, how many were written and kept,
and each dropped sentence under the reason it was dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

from agents.tasks.car.instructions import (
    BLIND_PATH,
    CATEGORIES,
    REVERSE_SPEED,
    TRAIN_GRAMMAR,
    WRITTEN_PATH,
    Instruction,
    frame,
    grammar_texts,
)
from agents.tasks.car.paraphrase import verdict
from twin.core.config import ConfigError, parse_config

CHECK_SPEED = ("2.5 m/s", 2.5)
"""The speed put in a velocity sentence's slot to check it (written, in m/s)."""
KEPT_APART = {"train": "heldout", "blind": "train"}
"""The split each written split must share no sentence and no phrase with."""


@dataclasses.dataclass(frozen=True)
class WrittenArgs:
    """Filter a writer's sentences into the train split's written wordings or the blind test split."""

    raw: Path
    """The writer's JSON: {"writer": "...", "centerline": [...], "velocity": [... '{speed}' ...], ...}."""
    split: str = "train"
    """'train' (kept apart from the held-out split) or 'blind' (a test split kept apart from train)."""
    out: Path | None = None
    """JSON file to write; default: the file the split reads (agents/tasks/car/written.json or blind.json)."""

    def __post_init__(self) -> None:
        if self.split not in KEPT_APART:
            raise ConfigError(f"WrittenArgs.split {self.split!r} must be one of {list(KEPT_APART)}")


def judge(sentence: str, category: str, taken: set[str], split: str = "train") -> str:
    """'kept', or why a written sentence of `category` is dropped from `split` (`taken`: frames already kept)."""
    if category == "velocity" and sentence.count("{speed}") != 1:
        return "no single speed slot"
    text = sentence.replace("{speed}", CHECK_SPEED[0])
    speed = {"velocity": CHECK_SPEED[1], "reverse": REVERSE_SPEED}.get(category)
    # No source sentence to differ from: the writer wrote each one fresh.
    return verdict(text, Instruction(category, "", speed), taken, KEPT_APART[split], must_read=split == "train")


def written(args: WrittenArgs) -> dict:
    """Judge every sentence of args.raw, write the kept ones; returns what was written."""
    try:
        raw = json.loads(args.raw.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the writer's file {args.raw}: {e}; give a JSON object of category -> "
                          "list of sentences") from None
    if missing := [c for c in CATEGORIES if not isinstance(raw.get(c), list)]:
        raise ConfigError(f"{args.raw} has no list of sentences for {missing}; give one per category {list(CATEGORIES)}")
    # A train sentence must be new to the train templates; a blind one is kept apart from all of train already.
    taken = {frame(t) for t in grammar_texts(TRAIN_GRAMMAR)} if args.split == "train" else set()
    wordings: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    dropped: dict[str, list[str]] = collections.defaultdict(list)
    for cat in CATEGORIES:
        for sentence in raw[cat]:
            sentence = " ".join(str(sentence).split())
            why = judge(sentence, cat, taken, args.split)
            if why == "kept":
                wordings[cat].append(sentence)
                taken.add(frame(sentence.replace("{speed}", CHECK_SPEED[0])))
            else:
                dropped[why].append(sentence)
    data = {"writer": raw.get("writer", "not said"), "split": args.split,
            "written": sum(len(raw[c]) for c in CATEGORIES), "kept": sum(map(len, wordings.values())),
            "dropped": dict(sorted(dropped.items())), "wordings": wordings}
    out = args.out or (WRITTEN_PATH if args.split == "train" else BLIND_PATH)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    data = written(parse_config(WrittenArgs, argv, __doc__, prog))
    counts = {cat: len(ws) for cat, ws in data["wordings"].items()}
    print(f"written {data['written']}, kept {data['kept']} {counts}; dropped: "
          f"{ {why: len(s) for why, s in data['dropped'].items()} }")


if __name__ == "__main__":
    main()
