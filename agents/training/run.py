"""What every trainer of the VLM agent does the same way: seeding, the policy to train
(a fresh LoRA, a starting adapter, or the run's own checkpoint), sampling answers,
atomic checkpoints and the final adapter. The trainers keep only their algorithm."""

from __future__ import annotations

import dataclasses
import json
import random
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.training.vision import load_tower
from agents.vlm.constrained import generate_groups
from agents.vlm.loading import agent_from_adapter
from agents.vlm.lora import (
    LoraSettings,
    add_lora,
    git_commit,
    latest_complete,
    read_manifest,
    save_adapter,
)
from agents.vlm.model import VisionConfig, VLMAgent, build_vlm
from agents.vlm.model_store import DEFAULT_MODEL
from agents.vlm.speculative import read_drafts, save_drafts
from twin.core.config import bounded, check_bounds


@dataclasses.dataclass(frozen=True)
class RLRunArgs:
    """What every closed-loop RL stage (GRPO, PPO) is told besides its algorithm's own settings."""

    adapter: str = ""
    """Adapter to start from (an SFT run's adapter/); empty: a fresh LoRA."""
    base: str = DEFAULT_MODEL
    """Base language model: the default, or a local Hugging Face directory."""
    lr: float = bounded(1e-5, 1e-8, 1.0)
    """AdamW learning rate of the trained weights."""
    max_new_tokens: int = bounded(96, 1, 4096)
    """Longest answer sampled (tokens)."""
    temperature: float = bounded(1.0, 0.05, 5.0)
    """Sampling temperature of the answers."""
    cost_limit: float = bounded(0.0, 0.0, 1e9)
    """Constraint violations per episode the Lagrangian tolerates."""
    seed: int = 0
    """Seeds the model, the episodes drawn and the sampling."""
    checkpoint_every: int = bounded(1, 1, 1_000_000)
    """Updates between checkpoints; 1: a run killed with -9 loses at most the update in flight."""
    out: Path = Path("runs/rl")
    """Run folder: checkpoint/, adapter/, curve.json (and audit.log with --audit)."""
    resume: bool = False
    """Continue from out/checkpoint if it exists."""
    audit: bool = False
    """Write every sampled decision (thought, action, reward terms, costs) to out/audit.log."""
    train_vision: bool = False
    """Also update the vision tower and projector (off: they keep their pre-trained and SFT weights)."""
    max_minutes: float = bounded(0.0, 0.0, 1e6)
    """Stop (with a checkpoint and the final adapter) after this much wall time; 0: no limit."""
    bf16: bool = True
    """bfloat16 autocast in the training passes where the device computes it natively (CUDA, AVX512-BF16
    or AMX CPUs); float32 elsewhere, where emulated bfloat16 is ~30x slower. Weights stay float32."""

    def __post_init__(self) -> None:
        check_bounds(self)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclasses.dataclass
class Run:
    """The policy being trained and where its run lives."""

    agent: VLMAgent
    out: Path
    resuming: bool
    """Continuing from out/checkpoint."""
    manifest: dict[str, Any]
    drafts: list[str] = dataclasses.field(default_factory=list)
    """Answer texts saved with every adapter the run writes, to seed its agents' drafters
    (agents.vlm.speculative): the starting adapter's, or what a trainer sets (SFT: its targets)."""

    @property
    def model(self) -> Any:
        return self.agent.model

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint"

    def trainer_state(self) -> dict[str, Any] | None:
        if not self.resuming:
            return None
        return torch.load(latest_complete(self.checkpoint, "trainer.pt") / "trainer.pt", weights_only=False)


def start_run(task: str, stage: str, args: Any, out: Path, base: str, seed: int, adapter: str = "",
              resume: bool = False, lora: LoraSettings | None = None, vision_init: str = "") -> Run:
    """Seed, build the VLM, and attach the adapter to train: the checkpoint when resuming, else the
    starting adapter (checked against the base model and the task; its vision config and prompt
    version carry over), else a fresh LoRA on the base model, with a pre-trained vision tower
    from `vision_init` if given."""
    seed_everything(seed)
    checkpoint = latest_complete(out / "checkpoint", "trainer.pt") if resume else None
    resuming = checkpoint is not None
    start = checkpoint if resuming else (Path(adapter) if adapter else None)
    if start is not None:
        agent = agent_from_adapter(start, task, trainable=True, seed=seed)
    else:
        vision = VisionConfig()
        model, tokenizer, base_hash = build_vlm(base, vision, seed=seed)
        if vision_init:
            load_tower(model, Path(vision_init), vision)
        agent = VLMAgent(add_lora(model, lora or LoraSettings()), tokenizer, task, base_hash, vision=vision, seed=seed)
    parent = read_manifest(Path(adapter)) if adapter else {}
    manifest = {"base_hash": agent.base_hash, "base": parent.get("base", base), "vision": dataclasses.asdict(agent.vision),
                "prompt_version": agent.prompt_version, "task": task,
                "recipe": {"stage": stage, "command": shlex.join(["shakedown" if "shakedown" in sys.argv[0] else
                                                                  sys.argv[0], *sys.argv[1:]]),
                           "args": {k: str(v) for k, v in dataclasses.asdict(args).items()},
                           "commit": git_commit(), "parent": parent.get("recipe")}}
    return Run(agent, out, resuming, manifest, read_drafts(start) if start is not None else [])


GROUP_WIDTH = 1
"""Tokens each row of a batch feeds per pass when sampling groups (generate_groups's max_width): a row's
forced tokens go in one at a time rather than padding all 32 rows to the longest run of them. Measured
on the SFT car adapter, 4 prompts x 8 at temperature 1 on 2 cores: 31 s (78 passes) at width 1, 43 s
(53) at 2, 45 s (48) at 4, 55 s (56) unlimited. A single row has no padding to save: it feeds all its
forced tokens with its sampled one (jump-forward)."""


def sample_answers(agent: VLMAgent, prompts: list[dict[str, torch.Tensor]], n: int, temperature: float,
                   max_new_tokens: int) -> list[list[torch.Tensor]]:
    """n sampled answers to each prompt under the task's grammar (agents.vlm.constrained), each ending
    with its end token; score them with agents.vlm.logprobs.score_constrained and the same max_new_tokens.

    Every prompt runs once and its key/value cache is copied to its n rows, and all the prompts' groups
    decode in one batch (agents.vlm.constrained.generate_groups): on a CPU a pass over 32 rows costs far
    less than four passes over 8. With the agent's generation config speculative (the default), each
    prompt's head comes from its cache (recomputed after each update). Drafts are not used for groups: on
    two CPU cores, verifying 8 rows' drafts in one pass cost more than the passes it saved (SFT car adapter
    at step 50, groups of 8 at temperature 1, 3 prompts: 19.7 s a group without drafts; 19.9, 29.5 and
    40.9 s with drafts of 4, 8 and 24 tokens). On a GPU, where a wide pass costs what a narrow one does,
    pass agent.drafter to generate_groups.
    """
    prefix = {"prefix": agent.prefix} if agent.generation.speculative else {}
    return [list(d.answers) for d in generate_groups(agent.model, agent.tokenizer, prompts, agent.task, n=n,
                                                     temperature=temperature, max_new_tokens=max_new_tokens,
                                                     max_width=GROUP_WIDTH if n * len(prompts) > 1 else None,
                                                     calculator=agent.generation.calculator, **prefix)]


VISION_PARTS = ("vision_tower", "multi_modal_projector")
"""The vision side of the VLM, by parameter-name fragment: what RL freezes unless told otherwise."""


def trainable_parameters(model: torch.nn.Module, frozen: Sequence[str] = ()) -> list[torch.nn.Parameter]:
    """The parameters an optimizer updates, after freezing those whose names contain a fragment of
    `frozen`. RL passes VISION_PARTS (as RL4VLM freezes its vision encoder in RL: small, noisy RL
    batches wear away features that pre-training and SFT built); SFT may freeze the tower alone."""
    for name, p in model.named_parameters():
        if any(part in name for part in frozen):
            p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def resume_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], lr: float) -> None:
    """Load a checkpoint's optimizer state (its Adam moments) but keep the learning rate this run was
    given: torch's load_state_dict brings back the saved one, which would silently ignore a changed --lr
    on --resume. The manifest's recipe records each resumed command with its arguments."""
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:
        group["lr"] = lr


def out_of_time(started: float, max_minutes: float) -> bool:
    """Whether a run with a wall-time budget (0: none) has used it up."""
    return max_minutes > 0 and time.perf_counter() - started >= 60.0 * max_minutes


def save_checkpoint(run: Run, progress: dict[str, Any], state: dict[str, Any]) -> None:
    """Adapter and trainer state together, written whole or not at all."""
    save_adapter(run.model, run.checkpoint, {**run.manifest, **progress},
                 write_extra=lambda folder: (torch.save({**state, **progress}, folder / "trainer.pt"),
                                             save_drafts(folder, run.drafts)))


def save_policy(run: Run, folder: Path, progress: dict[str, Any]) -> None:
    """The policy as it is now, as an adapter in `folder` with its drafts (run.drafts); `progress` joins the manifest."""
    save_adapter(run.model, folder, {**run.manifest, **progress},
                 write_extra=lambda out: save_drafts(out, run.drafts))


def finish_run(run: Run, progress: dict[str, Any], curve: list[dict[str, Any]]) -> Path:
    """The final adapter with its drafts (run.drafts), and the curve."""
    adapter_dir = run.out / "adapter"
    save_policy(run, adapter_dir, progress)
    (run.out / "curve.json").write_text(json.dumps(curve))
    return adapter_dir
