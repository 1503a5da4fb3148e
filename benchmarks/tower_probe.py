"""How much of a part's defect the vision tower still carries: a linear probe on its features, per tower.

The factory policy reads its frame through the tower's 16 image tokens; nothing downstream can see a defect
the tower's features have lost. This fits a linear "defective?" classifier on the frozen features of each
tower named (a vision pre-training run, or the tower saved inside an SFT/PPO adapter) over line frames, and
scores it on line frames rendered from another seed: once on the mean of the patch features (what
pre-training's own probe reads) and once on all 16 tokens side by side (what the language model is given).
An adapter whose tower scores below its policy's accuracy target cannot reach it by training the language
model alone.

    python -m benchmarks.tower_probe --towers runs/vision-factory \
        --adapters runs/sft-factory-line-long/adapter runs/ppo-factory-val3/best      # ~3 min, mostly rendering

Prints the table and writes benchmarks/results/tower_probe.json. The probe is a logistic regression fitted
by full-batch L-BFGS with an L2 penalty on standardised features (torch: scikit-learn is not a dependency
and the fit is a dozen lines).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file
from transformers import SiglipVisionModel

from agents.evaluation.intervals import mean_ci
from agents.training.vision import TOWER_FILE, labelled_frames, saved_config, siglip_config, to_pixels
from agents.vlm.loading import agent_from_adapter
from agents.vlm.model import VisionConfig
from benchmarks.expert_headroom import ROOT


def pretrained_tower(run: Path) -> tuple[SiglipVisionModel, VisionConfig]:
    vision = saved_config(run)
    tower = SiglipVisionModel(siglip_config(vision))
    tower.load_state_dict(load_file(run / TOWER_FILE))
    return tower, vision


def adapter_tower(adapter: Path) -> tuple[torch.nn.Module, VisionConfig]:
    """The tower as the adapter's policy runs it (merged: the trained copy, not the one peft keeps aside)."""
    agent = agent_from_adapter(adapter, "factory", merge=True)
    return agent.model.model.vision_tower.float(), agent.vision


@torch.no_grad()
def features(tower: torch.nn.Module, frames: np.ndarray, size: int) -> torch.Tensor:
    """(n, tokens, hidden) patch features, 128 frames at a time."""
    tower.eval()
    return torch.cat([tower(pixel_values=to_pixels(frames[i:i + 128], size)).last_hidden_state
                      for i in range(0, len(frames), 128)])


def probe_correct(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray,
                  l2: float = 1e-3) -> np.ndarray:
    """Per held-out frame, 1.0 if a logistic regression fitted on the training features classifies it right."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    x, xt = (train_x - mu) / sd, (test_x - mu) / sd
    y = torch.from_numpy(train_y).float()
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        return (((xt @ w + b) > 0).numpy() == test_y.astype(bool)).astype(float)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--towers", type=Path, nargs="*", default=[], help="vision pre-training run folders")
    ap.add_argument("--adapters", type=Path, nargs="*", default=[], help="factory adapter folders")
    ap.add_argument("--train-frames", type=int, default=1536, help="line frames the probe is fitted on")
    ap.add_argument("--heldout-frames", type=int, default=512, help="line frames it is scored on (another seed)")
    ap.add_argument("--seed", type=int, default=777, help="seed of the training frames; held-out: seed + 1")
    ap.add_argument("--trigger-jitter-s", type=float, default=0.0,
                    help="the line camera's trigger latency, per part from [0, this] s (FactoryParams.trigger_jitter_s)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tower_probe.json")
    args = ap.parse_args(argv)
    if not args.towers and not args.adapters:
        ap.error("name at least one tower (--towers RUN) or adapter (--adapters DIR) to probe")
    t0 = time.perf_counter()
    train_frames, train_labels = labelled_frames("factory", args.train_frames, args.seed, "line", args.trigger_jitter_s)
    test_frames, test_labels = labelled_frames("factory", args.heldout_frames, args.seed + 1, "line", args.trigger_jitter_s)
    y, yt = train_labels["defective"], test_labels["defective"]
    sources = [(str(p), *pretrained_tower(p)) for p in args.towers] + [(str(p), *adapter_tower(p)) for p in args.adapters]
    late = f", trigger late by up to {args.trigger_jitter_s:g} s" if args.trigger_jitter_s else ""
    table = Table(title=f"Linear probes for 'defective' on tower features: fitted on {len(y)} line frames{late}, scored "
                        f"on {len(yt)} others ({yt.mean():.0%} defective; 95 % BCa over frames)")
    for col in ("tower", "mean of patch features", "all tokens side by side"):
        table.add_column(col)
    results = {}
    for name, tower, vision in sources:
        f, ft = features(tower, train_frames, vision.image_size), features(tower, test_frames, vision.image_size)
        scores = {"mean_pool": probe_correct(f.mean(1), y, ft.mean(1), yt),
                  "all_tokens": probe_correct(f.flatten(1), y, ft.flatten(1), yt)}
        intervals = {k: mean_ci(v) for k, v in scores.items()}
        results[name] = {k: {"accuracy": iv.mean, "ci": [iv.low, iv.high]} for k, iv in intervals.items()}
        table.add_row(name, *(f"{r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" for r in results[name].values()))
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "tower_probe", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "args": {k: [str(p) for p in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v
                 for k, v in vars(args).items()},
        "heldout_defective_share": float(yt.mean()), "seconds": time.perf_counter() - t0, "probes": results}, indent=1))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
