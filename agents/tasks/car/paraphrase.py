"""The language model's own paraphrases of train instructions, for the train split only.

    python -m agents.tasks.car.paraphrase --n 60 --out agents/tasks/car/paraphrases.json

The local base model (SmolLM2-135M-Instruct by default; nothing is downloaded) rewrites
sentences drawn from TRAIN_GRAMMAR. A paraphrase is kept only if `parse_instruction` reads
the same category and target speed from it as from its source, it says no held-out core and
shares no phrase with the held-out split (so that split stays unseen), and it is new (not its source, not a paraphrase kept
before). The file records how many were generated, how many kept, and why the rest were dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np

from agents.tasks.car.instructions import (
    CATEGORIES,
    PARAPHRASES_PATH,
    Instruction,
    frame,
    in_family,
    parse_instruction,
    shared_phrase,
    template_instruction,
)
from agents.vlm.model_store import DEFAULT_MODEL, model_hash, resolve_model
from twin.core.config import ConfigError, bounded, check_bounds, parse_config

ASK = ("Rewrite this driving instruction in different words. Keep the meaning, and keep any speed exactly as "
       "written. Reply with the new instruction only.\n\n")
"""What the model is asked, before the sentence to rewrite."""
SHOTS = (("Keep to the middle of the road.", "Stay in the centre of the road."),
         ("Please hold 3 m/s.", "Keep the car going at 3 m/s."))
"""Worked examples shown first (train wordings: a 135M model answers in the examples' form far more often)."""


@dataclasses.dataclass(frozen=True)
class ParaphraseArgs:
    """Ask the local language model to paraphrase train instructions; keep those that still mean the same."""

    n: int = bounded(60, 1, 100_000)
    """Paraphrases to generate (fewer are kept)."""
    out: Path = PARAPHRASES_PATH
    """JSON file to write (the train split reads agents/tasks/car/paraphrases.json)."""
    base: str = DEFAULT_MODEL
    """Language model: the default, or a local Hugging Face directory."""
    per_sentence: int = bounded(3, 1, 64)
    """Paraphrases sampled per source sentence (one generate call)."""
    max_new_tokens: int = bounded(32, 4, 256)
    """Longest paraphrase, in tokens."""
    temperature: float = bounded(0.9, 0.05, 2.0)
    """Sampling temperature (top-p 0.95)."""
    threads: int = bounded(1, 1, 256)
    """Torch CPU threads (the machine is shared)."""
    seed: int = 0
    """Seeds the source sentences and the sampling."""

    def __post_init__(self) -> None:
        check_bounds(self)


def clean(answer: str) -> str:
    """The paraphrase in a model's answer: its first line, without quotes or a leading label."""
    line = next((s for s in answer.strip().splitlines() if s.strip()), "").strip()
    for label in ("new instruction:", "instruction:", "rewrite:", "paraphrase:", "answer:", "- "):
        if line.lower().startswith(label):
            line = line[len(label):].strip()
    return " ".join(line.strip("\"'`*").split())


def verdict(text: str, source: Instruction, kept: set[str], against: str = "heldout", must_read: bool = True) -> str:
    """'kept', or why a candidate sentence meaning `source` is dropped: too long, unreadable (unless not
    `must_read`: a test sentence need not be in the reader's words), read as something else, saying a sentence or
    sharing a phrase of split `against` (kept unseen), or not new (`kept`: frames already taken, or the source's)."""
    if not text or len(text) > 200:
        return "empty or too long"
    try:
        read = parse_instruction(text)
        if (read.category, read.target_speed) != (source.category, source.target_speed):
            return "changed meaning"
    except ConfigError:
        if must_read:
            return "unreadable"
    name = "held-out" if against == "heldout" else against
    if in_family(text, against):
        return f"says a {name} wording"
    if shared_phrase(text, against):
        return f"shares a {name} phrase"
    if frame(text) in kept or frame(text) == frame(source.text):
        return "not new"
    return "kept"


def paraphrase(args: ParaphraseArgs) -> dict:
    """Generate args.n paraphrases, keep the good ones, write args.out; returns what was written."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model_dir = resolve_model(args.base)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    shots = [m for a, b in SHOTS for m in ({"role": "user", "content": ASK + a}, {"role": "assistant", "content": b})]
    rng = np.random.default_rng(args.seed)
    kept: dict[str, dict] = {}
    reasons: collections.Counter[str] = collections.Counter()
    generated = 0
    while generated < args.n:
        source = template_instruction(rng, "train", CATEGORIES[(generated // args.per_sentence) % len(CATEGORIES)])
        k = min(args.per_sentence, args.n - generated)
        enc = tokenizer.apply_chat_template(shots + [{"role": "user", "content": ASK + source.text}],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=True, top_p=0.95,
                                 temperature=args.temperature, num_return_sequences=k,
                                 pad_token_id=tokenizer.pad_token_id)
        generated += k
        for row in out:
            text = clean(tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True))
            reasons[why := verdict(text, source, set(kept))] += 1
            if why == "kept":
                kept[frame(text)] = {"text": text, "category": source.category,
                                     "target_speed": source.target_speed, "source": source.text}
    data = {"model": args.base, "model_hash": model_hash(model_dir), "seed": args.seed, "generated": generated,
            "kept": len(kept), "dropped": {r: c for r, c in sorted(reasons.items()) if r != "kept"},
            "paraphrases": list(kept.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    data = paraphrase(parse_config(ParaphraseArgs, argv, __doc__, prog))
    print(f"generated {data['generated']}, kept {data['kept']}; dropped: {data['dropped']}")


if __name__ == "__main__":
    main()
