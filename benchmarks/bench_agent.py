"""Speed benchmark of the VLM agent: decision latency and the GRPO step, against raw baselines.

1. Decision latency. The car agent built from an adapter (default: the shipped one) decides
   on N held-out observations (greedy, its prompt version and vision config), LoRA merged
   (as `shakedown eval` and the demo run it) and unmerged. Baseline in the same run: the bare
   language model (AutoModelForCausalLM, no vision, no adapter, no parsing) generating the
   same number of new tokens after a prompt of the same length, with the same `generate`
   call. Reported: median and p90 seconds per decision, prompt and answer tokens, and the
   ratio agent/bare of medians.
2. The GRPO step at the issue's size: 4 prompts x a group of 8, <= 96 new tokens, from the
   adapter, on the training tracks. The trainer's own per-phase timings are reported
   (sampling, driving the answers in the twin, log-probs + backward); the first step is a
   warm-up and is not counted.

Threads: torch uses every core (the default), as training and evaluation do. Results are
printed with PASS/MISS against the issue's targets (never asserted) and written as JSON
(default benchmarks/results/agent.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.training.grpo import GRPOArgs, train_grpo
from agents.vlm.loading import agent_from_adapter
from agents.vlm.lora import read_manifest
from agents.vlm.model import GenerationConfig
from agents.vlm.model_store import resolve_model
from twin.car.tracks import HELD_OUT

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "agents" / "adapters" / "car"
TARGET_DECISION_S = 1.5
TARGET_GRPO_STEP_S = 30.0


def observations(n: int, seed: int) -> list:
    env = CarInstructionEnv(CarTaskConfig(tracks=HELD_OUT, split="heldout", duration_s=1.0))
    out = []
    for i in range(n):
        _, info = env.reset(seed=seed + i)
        out.append(info["observation"])
    env.close()
    return out


def time_agent(agent, obs: list) -> dict:
    times, prompt_tokens, answer_tokens = [], [], []
    agent.decide(obs[0])  # warm-up
    for o in obs:
        t = time.perf_counter()
        d = agent.decide(o)
        times.append(time.perf_counter() - t)
        prompt_tokens.append(int(agent.encode(o)["input_ids"].shape[1]))
        answer_tokens.append(len(agent.tokenizer(d.raw_output, add_special_tokens=False)["input_ids"]) + 1)
    return {"median_s": float(np.median(times)), "p90_s": float(np.percentile(times, 90)), "times_s": times,
            "prompt_tokens": int(np.median(prompt_tokens)), "answer_tokens": int(np.median(answer_tokens))}


@torch.no_grad()
def time_bare(base: str, prompt_tokens: int, new_tokens: int, repeats: int) -> dict:
    model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch.float32).eval()
    ids = torch.randint(100, 1000, (1, prompt_tokens))
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        if i:  # the first call is a warm-up
            times.append(time.perf_counter() - t)
    return {"median_s": float(np.median(times)), "times_s": times}


def grpo_step(adapter: Path, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        train_grpo(GRPOArgs(adapter=str(adapter), steps=steps + 1, prompts_per_step=4, group=8, max_new_tokens=96,
                            out=Path(tmp)))
        log = json.loads((Path(tmp) / "curve.json").read_text())[1:]
    keys = ("seconds", "seconds_sample", "seconds_drive", "seconds_update")
    return {k: float(np.median([e[k] for e in log])) for k in keys} | {"steps": log}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default=str(SHIPPED))
    ap.add_argument("--decisions", type=int, default=12)
    ap.add_argument("--grpo-steps", type=int, default=2, help="timed GRPO steps (after one warm-up step)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "agent.json"))
    args = ap.parse_args()
    console = Console()
    adapter = Path(args.adapter)
    manifest = read_manifest(adapter)
    obs = observations(args.decisions, seed=5000)
    gen = GenerationConfig()
    merged = time_agent(agent_from_adapter(adapter, "car", gen, merge=True), obs)
    unmerged = time_agent(agent_from_adapter(adapter, "car", gen, merge=False), obs)
    bare = time_bare(manifest.get("base", "smollm2-135m"), merged["prompt_tokens"], merged["answer_tokens"],
                     repeats=max(3, args.decisions // 2))
    grpo = grpo_step(adapter, args.grpo_steps) if args.grpo_steps > 0 else None

    table = Table(title=f"VLM agent speed ({adapter.name}, torch threads {torch.get_num_threads()})")
    for col in ("what", "median", "baseline", "ratio", "target"):
        table.add_column(col, justify="right")
    verdict = "PASS" if merged["median_s"] <= TARGET_DECISION_S else "MISS"
    table.add_row("decision, LoRA merged", f"{merged['median_s']:.2f} s", f"bare LM {bare['median_s']:.2f} s",
                  f"{merged['median_s'] / bare['median_s']:.2f}x", f"<= {TARGET_DECISION_S} s {verdict}")
    table.add_row("decision, LoRA unmerged", f"{unmerged['median_s']:.2f} s", "",
                  f"{unmerged['median_s'] / bare['median_s']:.2f}x", "")
    table.add_row("tokens (prompt / answer)", f"{merged['prompt_tokens']} / {merged['answer_tokens']}", "", "", "")
    if grpo:
        verdict = "PASS" if grpo["seconds"] <= TARGET_GRPO_STEP_S else "MISS"
        table.add_row("GRPO step 4x8, <=96 tokens", f"{grpo['seconds']:.1f} s",
                      f"sample {grpo['seconds_sample']:.1f} / drive {grpo['seconds_drive']:.1f} / "
                      f"update {grpo['seconds_update']:.1f} s", "", f"<= {TARGET_GRPO_STEP_S:.0f} s {verdict}")
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "adapter": str(adapter.relative_to(ROOT) if adapter.is_relative_to(ROOT)
                                                      else adapter),
        "decision_merged": merged, "decision_unmerged": unmerged, "bare_lm": bare, "grpo_step": grpo,
        "targets": {"decision_s": TARGET_DECISION_S, "grpo_step_s": TARGET_GRPO_STEP_S},
        "generation": dataclasses.asdict(gen)}, indent=1))
    console.print(f"results: {out}")


if __name__ == "__main__":
    main()
